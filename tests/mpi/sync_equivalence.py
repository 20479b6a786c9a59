"""Rank script: synchronized BN/BRN ops and layers on each rank's part of a batch, and
the same ops and layers run by one process on the whole batch (the oracle).

    mpiexec -n K python sync_equivalence.py OUT [--torch]

Every rank runs every case of rank_common (op_cases, layer_cases; torch_cases on torch
CPU tensors with --torch) on its part of the batch; rank 0 gathers what every rank got,
computes the oracle (normops without comm on the concatenated batch, on the "cpu" and
the "reference" backend) and writes it all to OUT/result.json. Nothing is compared
here: the tests do that."""
import sys

import numpy as np
from mpi4py import MPI

import normops
from rank_common import (CHANNELS, LAYOUTS, batch, channel_moments, encode, layer_cases,
                         op_cases, parts, tolerance_scales, torch_cases, write_json)

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
out = sys.argv[1]
with_torch = "--torch" in sys.argv[2:]


# -- ops --------------------------------------------------------------------------------
def op_inputs(case):
    """The whole batch of a case and its parameters and initial running statistics."""
    x, dy = batch(case["layout"], sum(case["split"]), case["dtype"], case["seed"])
    axis = LAYOUTS[case["layout"]][0]
    rng = np.random.default_rng(case["seed"] + 1)
    dtype = x.dtype
    gamma = rng.uniform(0.5, 2.0, CHANNELS) * rng.choice([-1.0, 1.0], CHANNELS)
    beta = rng.normal(size=CHANNELS)
    options = dict(training=case["mode"] == "train", axis=axis)
    op = case["op"]
    if op.startswith("bn"):
        first = rng.normal(size=CHANNELS)                 # running_mean
        second = rng.uniform(0.5, 2.0, CHANNELS)          # running_var
        options.update(momentum=0.3, convention="keras" if op == "bn-keras" else "pytorch")
    else:
        # running statistics placed relative to the whole batch's, so that r and d clip
        # (brn-clip: channels 0 and 2 clip d, channels 0 and 1 clip r) or do not
        mean, var = channel_moments(x, axis)
        sigma = np.sqrt(var + 1e-5)
        if op == "brn-noclip":
            second = sigma * np.array([1.2, 0.8, 1.05])
            first = mean + sigma * np.array([0.3, -0.5, 0.1])
            options.update(rmax=3.0, dmax=5.0)
        else:   # brn-clip and brn (eval)
            second = sigma * np.array([0.2, 4.0, 1.1])
            first = mean + sigma * np.array([-1.0, 1.0, 2.0])
            options.update(rmax=1.5, dmax=0.5)
        options.update(momentum=0.2)
    cast = lambda a: np.asarray(a, dtype)   # noqa: E731
    return x, dy, cast(gamma), cast(beta), cast(first), cast(second), options


def run_op(case, x, dy, gamma, beta, first, second, options, **where):
    """One forward and backward of the case's op; what they gave, encoded (running
    statistics after the forward, updated in place)."""
    if case["op"].startswith("bn"):
        forward, backward = normops.batch_norm, normops.batch_norm_backward
    else:
        forward, backward = normops.batch_renorm, normops.batch_renorm_backward
    y, saved = forward(x, gamma, beta, first, second, **options, **where)
    where.pop("comm", None)
    dx, dgamma, dbeta = backward(dy, x, saved, gamma, **where)
    return dict(scales=tolerance_scales(x, dy, options["axis"], gamma, saved),
                y=encode(y), dx=encode(dx), dgamma=encode(dgamma), dbeta=encode(dbeta),
                mean=encode(saved.mean), invstd=encode(saved.invstd),
                r=encode(getattr(saved, "r", None)), d=encode(getattr(saved, "d", None)),
                running_first=encode(first), running_second=encode(second),
                count=saved.count, training=saved.training, axis=saved.axis,
                types=[type(a).__module__.partition(".")[0] for a in (y, dx, dgamma)])


def op_case(case):
    """This rank's run of the case."""
    x, dy, gamma, beta, first, second, options = op_inputs(case)
    return run_op(case, parts(x, case["split"])[rank], parts(dy, case["split"])[rank], gamma,
                  beta, first.copy(), second.copy(), options, comm=comm)


def op_oracle(case, ranks):
    """The case run by one process on the whole batch, with every rank's run."""
    x, dy, gamma, beta, first, second, options = op_inputs(case)
    oracle = {backend: run_op(case, x, dy, gamma, beta, first.copy(), second.copy(), options,
                              backend=backend) for backend in ("cpu", "reference")}
    return dict(case=case, ranks=ranks, oracle=oracle, options=options,
                initial=dict(running_first=encode(first), running_second=encode(second)))


def torch_case(case):
    """The case on this rank's part as torch CPU tensors, and as NumPy arrays."""
    import torch
    x, dy, gamma, beta, first, second, options = op_inputs(case)
    xs, dys = parts(x, case["split"])[rank], parts(dy, case["split"])[rank]
    numpy_run = run_op(case, xs, dys, gamma, beta, first.copy(), second.copy(), options, comm=comm)
    t = lambda a: torch.from_numpy(a.copy())   # noqa: E731
    torch_run = run_op(case, t(xs), t(dys), t(gamma), t(beta), t(first), t(second), options,
                       comm=comm)
    return dict(numpy=numpy_run, torch=torch_run)


# -- layers -----------------------------------------------------------------------------
def make_layer(case, comm_):
    axis, dtype = LAYOUTS[case["layout"]][0], np.dtype(case["dtype"])
    if case["kind"] == "BatchRenorm":
        return normops.BatchRenorm(CHANNELS, rmax=1.5, dmax=0.5, momentum=0.3, axis=axis,
                                   dtype=dtype, comm=comm_)
    if case["kind"] == "BatchNorm-keras-cumulative":
        return normops.BatchNorm(CHANNELS, momentum=None, convention="keras", axis=axis,
                                 dtype=dtype, comm=comm_)
    return normops.BatchNorm(CHANNELS, momentum=0.2, axis=axis, dtype=dtype, comm=comm_)


def run_layer(case, layer, part):
    """LAYER_STEPS training steps (forward, backward, an SGD step on gamma and beta),
    then an eval forward and backward; ``part(arr, step)`` is what this process holds of
    a batch."""
    steps = []
    for step, split in enumerate(case["splits"]):
        if step == len(case["splits"]) - 1:
            layer.eval()
        x, dy = batch(case["layout"], sum(split), case["dtype"], case["seed"] + step)
        gamma = layer.gamma.copy()
        y = layer(part(x, step))
        dx = layer.backward(part(dy, step))
        grads = layer.grads()
        steps.append(dict(scales=tolerance_scales(part(x, step), part(dy, step), layer.axis,
                                                  gamma, layer._saved),
                          y=encode(y), dx=encode(dx), dgamma=encode(grads["gamma"]),
                          dbeta=encode(grads["beta"])))
        if layer.training:
            for name, param in layer.params().items():
                param -= np.asarray(0.1, param.dtype) * grads[name]
    return dict(steps=steps, running_mean=encode(layer.running_mean),
                running_spread=encode(getattr(layer, layer._spread)),
                gamma=encode(layer.gamma), beta=encode(layer.beta),
                num_batches_tracked=layer.num_batches_tracked)


def layer_case(case):
    return run_layer(case, make_layer(case, comm),
                     lambda arr, step: parts(arr, case["splits"][step])[rank])


def layer_oracle(case, ranks):
    oracle = run_layer(case, make_layer(case, None), lambda arr, step: arr)
    return dict(case=case, ranks=ranks, oracle=oracle)


# every rank runs every case; then one gather, and rank 0 computes the oracles
mine = dict(ops={case["id"]: op_case(case) for case in op_cases(size)},
            layers={case["id"]: layer_case(case) for case in layer_cases(size)})
if with_torch:
    mine["torch"] = {case["id"]: torch_case(case) for case in torch_cases(size)}
gathered = comm.gather(mine, root=0)
if rank == 0:
    by_rank = lambda kind, name: [g[kind][name] for g in gathered]   # noqa: E731
    result = dict(ranks=size,
                  ops={c["id"]: op_oracle(c, by_rank("ops", c["id"])) for c in op_cases(size)},
                  layers={c["id"]: layer_oracle(c, by_rank("layers", c["id"]))
                          for c in layer_cases(size)})
    if with_torch:
        result["torch"] = {c["id"]: dict(case=c, ranks=by_rank("torch", c["id"]))
                           for c in torch_cases(size)}
    write_json(f"{out}/result.json", result)
