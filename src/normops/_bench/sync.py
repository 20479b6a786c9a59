"""The rank program of ``python -m normops bench --ranks N``: what synchronizing batch_norm
over an mpi4py communicator costs, per call, on the cpu backend
(``mpiexec -n N python -m normops._bench.sync``; one thread per rank).

Every rank holds a batch of the shape (its own data) and times, per shape:

* copy: numpy.copyto of x into a buffer of its size (the memory bandwidth baseline);
* forward and backward, three ways: local fused (no comm: the cpu backend's whole-op C
  kernels), local composed (no comm, the four kernels batch_stats, scale_shift /
  grad_stats, grad_input composed as the synchronized path composes them: through the
  public ops with a backend that offers only those kernels) and sync (comm=comm);
* the collective alone: comm.allgather of a record of the size the forward sends
  (None, its metadata dict, (count, mean float64[C], m2 float64[C])).

The variants alternate in rounds (one call of each per round, the order rotated from
round to round), and every call starts after a barrier, so all ranks run the same call
at once. A call's time is the slowest rank's; each variant gets the median over the
rounds and its spread (quartiles, min and max); the ratios to the local variants are
medians of the per-round ratios (each round's two calls ran in the same spell of the
machine), with their quartiles.
"""
import argparse
import gc
import json
import os
import statistics
import sys
import time

import numpy as np

import normops
from normops import _composed, _mpirun
from normops import _distributed as distributed
from normops._text import table

from .backends import load_average
from .columns import GB
from .ranks import RANK_PROGRAM
from .report import environment, format_environment
from .shapes import Shape
from .timing import quartiles

SHAPES = (Shape("NCHW", (32, 64, 56, 56)), Shape("NC", (256, 1024)))
MOMENTUM, EPS = 0.1, 1e-5
SEED = 20240601
COMPOSED = "cpu-composed"   # the backend of the "local composed" variant
KERNELS = ("batch_stats", "scale_shift", "grad_stats", "grad_input")


class Rounds:
    """Rounds per shape: enough to fill ``budget_s`` judged from the warm-up round,
    within [least, most]."""

    def __init__(self, budget_s, least, most):
        self.budget_s, self.least, self.most = budget_s, least, most

    def count(self, warmup_s):
        return max(self.least, min(self.most, round(self.budget_s / max(warmup_s, 1e-9))))


FULL = Rounds(budget_s=10.0, least=20, most=500)
QUICK = Rounds(budget_s=0.0, least=3, most=3)

# (op, variant) in table order
VARIANTS = (
    ("copy", "numpy.copyto"),
    ("forward", "local fused"),
    ("forward", "local composed"),
    ("forward", "sync"),
    ("collective", "allgather"),
    ("backward", "local fused"),
    ("backward", "local composed"),
    ("backward", "sync"),
)


class ComposedOnly:
    """The cpu backend's four kernels and nothing else: the public ops run their
    composition (as they always do with comm), without communication."""

    xp = np
    device = "cpu"

    def __init__(self, backend):
        for name in KERNELS:
            setattr(self, name, getattr(backend, name))


def register_composed():
    if not any(info.name == COMPOSED for info in normops.backends()):
        normops.register_backend(COMPOSED, ComposedOnly(normops.get_backend("cpu")))


def inputs(shape, rank):
    """This rank's x and dy; the parameters and running statistics of the replicas,
    alike on every rank (synchronized calls check that they are)."""
    rng = np.random.default_rng([SEED, rank, len(shape.dims)])
    batch = dict(x=rng.standard_normal(shape.dims, dtype=np.float32),
                 dy=rng.standard_normal(shape.dims, dtype=np.float32))
    rng = np.random.default_rng([SEED, len(shape.dims)])
    c = shape.channels
    return dict(batch, gamma=(1.0 + 0.1 * rng.standard_normal(c)).astype(np.float32),
                beta=(0.1 * rng.standard_normal(c)).astype(np.float32),
                mean=(0.1 * rng.standard_normal(c)).astype(np.float32),
                var=rng.uniform(0.5, 1.5, c).astype(np.float32))


def calls(shape, comm, data):
    """{(op, variant): zero-argument callable} of one shape."""
    x, dy, g, b = data["x"], data["dy"], data["gamma"], data["beta"]

    def running():
        return data["mean"].copy(), data["var"].copy()

    common = dict(momentum=MOMENTUM, eps=EPS, axis=shape.axis)
    forward = {
        "local fused": (dict(backend="cpu"), running()),
        "local composed": (dict(backend=COMPOSED), running()),
        "sync": (dict(comm=comm), running()),
    }
    out = {("copy", "numpy.copyto"): (lambda dst=np.empty_like(x): np.copyto(dst, x))}
    for variant, (how, (rm, rv)) in forward.items():
        out[("forward", variant)] = (lambda how=how, rm=rm, rv=rv:
                                     normops.batch_norm(x, g, b, rm, rv, **common, **how))
    # what the forward's collective sends, made as the op makes it: no error, its
    # metadata, (count, the bytes of mean and m2 as float64)
    c = shape.channels
    meta = _composed._meta(x, shape.axis, True, EPS, running(), None, None, momentum=MOMENTUM,
                           convention="pytorch")   # no residual, no activation
    x3 = _composed.canonical_view(np, x, shape.axis)
    meta = {"op": "batch_norm", **distributed._described(meta, x3)}
    record = (None, meta, (x.size // c, distributed._pack(np.zeros(c), np.ones(c))))
    out[("collective", "allgather")] = lambda: comm.allgather(record)
    for variant, (how, (rm, rv)) in forward.items():
        _, saved = normops.batch_norm(x, g, b, rm.copy(), rv.copy(), **common, **how)
        backend = {k: v for k, v in how.items() if k == "backend"}
        out[("backward", variant)] = (lambda saved=saved, backend=backend:
                                      normops.batch_norm_backward(dy, x, saved, g, **backend))
    return out


def time_rounds(comm, fns, rounds):
    """{key: [seconds of the call in each round]} on this rank: one call of each per
    round, after a barrier, in an order rotated from round to round."""
    keys = list(fns)
    samples = {key: [] for key in keys}
    for k in range(rounds):
        for key in keys[k % len(keys):] + keys[:k % len(keys)]:
            fn = fns[key]
            comm.Barrier()
            start = time.perf_counter()
            fn()
            samples[key].append(time.perf_counter() - start)
    return samples


def summary(values):
    p25, median, p75 = quartiles(values)
    return {"median_s": median, "p25_s": p25, "p75_s": p75, "min_s": min(values),
            "max_s": max(values), "rounds": len(values)}


def ratio(per_round_a, per_round_b):
    """The median and quartiles of the per-round ratios a / b (the two calls of a round ran
    in the same spell of the machine), and the ratio of the medians."""
    p25, median, p75 = quartiles([a / b for a, b in zip(per_round_a, per_round_b)])
    return {"ratio": median, "round_p25": p25, "round_p75": p75,
            "of_medians": statistics.median(per_round_a) / statistics.median(per_round_b)}


def bench_shape(comm, shape, policy):
    data = inputs(shape, comm.Get_rank())
    fns = calls(shape, comm, data)
    time_rounds(comm, fns, 1)          # warm-up (first touches of the outputs' memory)
    warm = time_rounds(comm, fns, 1)   # the round's length
    warm_s = comm.allreduce(sum(v[0] for v in warm.values()), op=_max(comm))
    rounds = policy.count(warm_s)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        mine = time_rounds(comm, fns, rounds)
    finally:
        if gc_was:
            gc.enable()
    everyone = comm.gather(mine, root=0)
    if comm.Get_rank() != 0:
        return None
    # a call takes as long as its slowest rank
    per_round = {key: [max(r[key][i] for r in everyone) for i in range(rounds)] for key in fns}
    nbytes = data["x"].nbytes
    copy = per_round[("copy", "numpy.copyto")]
    rows = []
    for op, variant in VARIANTS:
        times = per_round[(op, variant)]
        row = {"shape": shape.name, "nbytes": nbytes, "op": op, "variant": variant,
               **summary(times), "over_copy": statistics.median(times) / statistics.median(copy)}
        if op == "copy":
            row["gbps"] = 2 * nbytes / statistics.median(times) / GB
        if op in ("forward", "backward") and variant != "local fused":
            row["over_local_fused"] = ratio(times, per_round[(op, "local fused")])
        if op in ("forward", "backward") and variant == "sync":
            row["over_local_composed"] = ratio(times, per_round[(op, "local composed")])
        rows.append(row)
    return rows


def _max(comm):
    from mpi4py import MPI
    return MPI.MAX


def fmt_ms(seconds):
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.2f}"


def fmt_ratio(r):
    return "" if r is None else f"{r['ratio']:.2f} ({r['round_p25']:.2f}-{r['round_p75']:.2f})"


def format_table(rows):
    header = ("shape", "op", "variant", "median ms", "p25-p75 ms", "min-max ms", "/copy",
              "/local fused (p25-p75)", "/local composed (p25-p75)")
    body = [(r["shape"], r["op"], r["variant"], fmt_ms(r["median_s"]),
             f"{fmt_ms(r['p25_s'])}-{fmt_ms(r['p75_s'])}", f"{fmt_ms(r['min_s'])}-{fmt_ms(r['max_s'])}",
             f"{r['over_copy']:.2f}", fmt_ratio(r.get("over_local_fused")),
             fmt_ratio(r.get("over_local_composed"))) for r in rows]
    return table(header, body)


def format_footer(rows):
    lines = []
    by = {(r["shape"], r["op"], r["variant"]): r for r in rows}
    for shape in dict.fromkeys(r["shape"] for r in rows):
        copy = by[(shape, "copy", "numpy.copyto")]
        coll = by[(shape, "collective", "allgather")]["median_s"]
        parts = [f"{shape} ({copy['nbytes'] / 1e6:.1f} MB per rank): copy "
                 f"{copy['gbps']:.1f} GB/s per rank; allgather alone {fmt_ms(coll)} ms"]
        for op in ("forward", "backward"):
            fused, composed, sync = (by[(shape, op, v)]["median_s"]
                                     for v in ("local fused", "local composed", "sync"))
            parts.append(f"  {op}: unfused two-pass path {fmt_ms(composed - fused)} ms "
                         f"(composed - fused), communication {fmt_ms(sync - composed)} ms "
                         f"(sync - composed)")
        lines += parts
    return "\n".join(lines)


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK.least} rounds per shape (noisy; for tests)")
    parser.add_argument("--json", metavar="PATH", help="rank 0 also writes every number here")
    parser.add_argument("--ranks", type=int,
                        help="the number of ranks expected (checked against the communicator)")
    return parser


def run(comm, args):
    from mpi4py import MPI
    rank, size = comm.Get_rank(), comm.Get_size()
    if not dict((i.name, i.available) for i in normops.backends()).get("cpu"):
        raise RuntimeError("the cpu backend is not available in this build: the sync bench "
                           "times it (python -m normops backends says why)")
    normops.set_num_threads(1)
    register_composed()
    policy = QUICK if args.quick else FULL
    load_before = load_average()
    started = time.perf_counter()
    rows = []
    for shape in SHAPES:
        shape_rows = bench_shape(comm, shape, policy)
        if rank == 0:
            rows += shape_rows
    if rank != 0:
        return
    load_after = load_average()
    meta = {
        "ranks": size, "mpi": " ".join(MPI.Get_library_version().splitlines()[0].split()),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "normops_threads": normops.get_num_threads(), **environment(),
        "dtype": "float32", "mode": "quick" if args.quick else "full",
        "load_average": {"start": load_before, "end": load_after},
        "elapsed_s": time.perf_counter() - started,
    }
    print(f"{format_environment(meta)}  {meta['mpi']}")
    print(f"{size} ranks, each with its own batch of the shape (float32, cpu backend), one thread "
          f"per rank (OMP_NUM_THREADS={meta['omp_num_threads']}, normops threads "
          f"{meta['normops_threads']}); mode {meta['mode']}; load average {load_before:.2f} "
          f"before, {load_after:.2f} after")
    print("each round: one call of every variant, order rotated, a barrier before each call; a "
          "call's time is its slowest rank's; median and spread over the rounds "
          f"({rows[0]['rounds']} rounds for {rows[0]['shape']}, {rows[-1]['rounds']} for "
          f"{rows[-1]['shape']})")
    print("local fused: batch_norm without comm (the cpu backend's whole-op kernels); local "
          "composed: its four kernels composed, no comm; sync: comm=COMM_WORLD (always composed); "
          "allgather: the forward's record alone; ratios: median (quartiles) of the per-round ratios")
    print()
    print(format_table(rows))
    print()
    print(format_footer(rows))
    print(f"({meta['elapsed_s']:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


def main(argv=None):
    args = add_arguments(argparse.ArgumentParser(
        prog=f"mpiexec -n N python -m {RANK_PROGRAM}",
        description=__doc__.split("\n\n")[0])).parse_args(argv)

    def body(comm):
        run(comm, args)
        sys.stdout.flush()
        return 0
    return _mpirun.rank_main(RANK_PROGRAM, args.ranks, body)


if __name__ == "__main__":
    sys.exit(main())
