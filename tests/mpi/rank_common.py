"""What the rank scripts of tests/mpi/ share: the data of a case, its split over the
ranks, and arrays written into JSON reports (their values as float64, which holds
float32 values exactly, and their bytes for bitwise comparisons)."""
import json
import os
from pathlib import Path

import numpy as np

CHANNELS = 3
# layout name -> (channel axis passed to the ops, whether x is channels-last, ndim)
LAYOUTS = {
    "NCHW": (1, False, 4),
    "NC": (1, False, 2),
    "NHWC-axis-1": (-1, True, 4),
    "NHWC-axis3": (3, True, 4),
}
DTYPES = {"float64": np.float64, "float32": np.float32}


def encode(arr):
    """An array (NumPy, or anything np.asarray takes: a CPU tensor) for a JSON report;
    None stays None."""
    if arr is None:
        return None
    a = np.asarray(arr)
    return {"values": np.asarray(a, np.float64).ravel().tolist(), "shape": list(a.shape),
            "dtype": str(a.dtype), "hex": np.ascontiguousarray(a).tobytes().hex()}


def batch(layout, n, dtype, seed):
    """(x, dy) of n samples in ``layout``, with channels of different means and spreads."""
    rng = np.random.default_rng(seed)
    _, channels_last, ndim = LAYOUTS[layout]
    shape = (n, CHANNELS) if ndim == 2 else (n, CHANNELS, 2, 3)
    bshape = (1, CHANNELS) + (1,) * (len(shape) - 2)
    offset = rng.normal(0.0, 3.0, CHANNELS).reshape(bshape)
    spread = rng.uniform(0.5, 3.0, CHANNELS).reshape(bshape)
    x = rng.normal(size=shape) * spread + offset
    dy = rng.normal(size=shape)
    if channels_last:
        x, dy = (np.ascontiguousarray(np.moveaxis(a, 1, -1)) for a in (x, dy))
    return x.astype(DTYPES[dtype]), dy.astype(DTYPES[dtype])


def parts(arr, split):
    """arr split along its batch axis (0) into consecutive parts of the sizes in split."""
    assert sum(split) == arr.shape[0]
    return [np.ascontiguousarray(p) for p in np.split(arr, np.cumsum(split)[:-1], axis=0)]


def channel_moments(x, axis):
    """Per-channel mean and biased variance of x in float64 (to place running statistics
    relative to the batch's)."""
    moved = np.moveaxis(np.asarray(x, np.float64), axis, 0).reshape(CHANNELS, -1)
    return moved.mean(axis=1), moved.var(axis=1)


def write_json(path, document):
    """Written to a temporary name first, so a reader never sees half a report."""
    path = Path(path)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(document))
    tmp.replace(path)


# -- the cases of the equivalence tests (the tests parametrize over the same list) ------
SPLITS = {
    1: [[7], [2]],
    2: [[4, 3], [6, 0], [0, 5], [1, 4]],
    3: [[4, 0, 3], [1, 1, 5], [1, 0, 1], [2, 3, 1]],
}
TRAINING_OPS = ["bn-pytorch", "bn-keras", "brn-clip", "brn-noclip"]
EVAL_OPS = ["bn", "brn"]


def _seed(name):
    return sum((i + 1) * ord(ch) for i, ch in enumerate(name))


def op_cases(ranks):
    """Every op case for ``ranks`` ranks: (op, mode) x layout x dtype x split."""
    cases = []
    for op, mode in [(op, "train") for op in TRAINING_OPS] + [(op, "eval") for op in EVAL_OPS]:
        for layout in LAYOUTS:
            for dtype in DTYPES:
                for split in SPLITS[ranks]:
                    name = f"{op}-{mode}-{layout}-{dtype}-split{'.'.join(map(str, split))}"
                    cases.append(dict(id=name, op=op, mode=mode, layout=layout, dtype=dtype,
                                      split=split, seed=_seed(name)))
    return cases


def torch_cases(ranks):
    """The op cases run on torch CPU tensors too: each op and mode on two layouts and
    both dtypes, on the first split with an empty rank (the first split for 1 rank)."""
    split = next((s for s in SPLITS[ranks] if 0 in s), SPLITS[ranks][0])
    return [case for case in op_cases(ranks)
            if case["split"] == split and case["layout"] in ("NCHW", "NHWC-axis-1")]


LAYER_KINDS = ["BatchNorm-pytorch", "BatchNorm-keras-cumulative", "BatchRenorm"]
LAYER_STEPS = 3   # training steps, then one eval step


def layer_cases(ranks):
    cases = []
    for kind in LAYER_KINDS:
        for layout in ("NCHW", "NC", "NHWC-axis-1"):
            for dtype in DTYPES:
                name = f"{kind}-{layout}-{dtype}"
                cases.append(dict(id=name, kind=kind, layout=layout, dtype=dtype, seed=_seed(name),
                                  splits=[SPLITS[ranks][s % len(SPLITS[ranks])]
                                          for s in range(LAYER_STEPS + 1)]))
    return cases


def tolerance_scales(x, dy, axis, gamma, saved):
    """The magnitudes the backward's results are made of (their rounding errors are
    relative to these, not to the results, which may cancel to about 0: dx of a batch of
    2 values per channel is 0 up to rounding), from one process's run on the whole batch:
    dx: max |gamma * r * invstd * dy|; dgamma: max over channels of
    sum |dy * r * (x - mean) * invstd| + |d| sum |dy|; dbeta: max over channels of sum |dy|."""
    move = lambda a: np.moveaxis(np.asarray(a, np.float64), axis, 0).reshape(CHANNELS, -1)  # noqa: E731
    xs, dys = move(x), move(dy)
    column = lambda v: np.broadcast_to(np.asarray(v, np.float64), (CHANNELS,)).reshape(CHANNELS, 1)  # noqa: E731,E501
    r = column(1.0 if getattr(saved, "r", None) is None else saved.r)
    d = column(0.0 if getattr(saved, "d", None) is None else saved.d)
    scale = r * column(saved.invstd)
    g = column(1.0 if gamma is None else gamma)
    xhat = (xs - column(saved.mean)) * scale
    return dict(dx=float(np.max(np.abs(g * scale * dys), initial=0.0)),
                dgamma=float(np.max(np.sum(np.abs(dys * xhat), axis=1) + np.abs(d[:, 0]) * np.sum(np.abs(dys), axis=1))),
                dbeta=float(np.max(np.sum(np.abs(dys), axis=1))))


# -- the cases of recompute_population_stats(comm=) ---------------------------------------
POPULATION_BATCH_SIZES = [6, 4, 5, 2, 7]
# how many of the batches (consecutive, in rank order) each rank holds
POPULATION_SHARES = {1: [[5]], 2: [[3, 2], [5, 0]], 3: [[2, 0, 3], [0, 4, 1]]}
# setup -> (the layers' dtype, whether the layers are made with comm (else comm= is passed))
POPULATION_SETUPS = {
    "BatchNorm-pytorch": ("float64", False),
    "BatchNorm-keras-layer-comm": ("float64", True),
    "BatchNorm-float32": ("float32", False),
    "BatchRenorm": ("float64", False),
    "network-BatchNorm-BatchRenorm-forward": ("float64", True),
}


def population_cases(ranks):
    return [dict(id=f"{setup}-shares{'.'.join(map(str, share))}", setup=setup, share=share)
            for setup in POPULATION_SETUPS for share in POPULATION_SHARES[ranks]]


def population_batches(setup, dtype):
    """The batches of every rank together, in rank order; their means differ, so the
    spread between batches counts in the population's variance."""
    rng = np.random.default_rng(_seed(setup))
    tail = () if setup.startswith("network") else (2, 2)
    return [(rng.normal(0.0, 1.0 + i, (n, CHANNELS) + tail) + rng.normal(0.0, 3.0, (1, CHANNELS) + (1,) * len(tail))).astype(DTYPES[dtype])
            for i, n in enumerate(POPULATION_BATCH_SIZES)]
