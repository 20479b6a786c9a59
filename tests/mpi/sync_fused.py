"""Rank script: the fused epilogue (residual, relu) synchronized over the ranks, each on
its part of a batch, and one process on the whole batch (the oracle); and ranks that
disagree on the epilogue, which must fail on every rank.

    mpiexec -n K python sync_fused.py OUT

Rank 0 writes every rank's outcome and the oracle's to OUT/result.json; the tests compare."""
import sys

import numpy as np
from mpi4py import MPI

import normops
from rank_common import CHANNELS, LAYOUTS, batch, encode, parts, write_json

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
out = sys.argv[1]
SPLITS = {1: [7], 2: [3, 4], 3: [2, 0, 5]}   # a rank may hold no part of the batch
BATCHES = {"NCHW": "NCHW", "NHWC": "NHWC-axis-1"}   # rank_common's layouts
CASES = [dict(id=f"{op}-{layout}-{dtype}-{'residual' if residual else 'none'}-{activation}",
              op=op, layout=layout, dtype=dtype, residual=residual, activation=activation)
         for op in ("bn", "brn") for layout in ("NCHW", "NHWC") for dtype in ("float64", "float32")
         for residual, activation in ((True, "relu"), (False, "relu"), (True, None))]


def inputs(case):
    layout = BATCHES[case["layout"]]
    x, dy = batch(layout, sum(SPLITS[size]), case["dtype"], seed=11)
    axis = LAYOUTS[layout][0]
    rng = np.random.default_rng(12)
    z = rng.standard_normal(x.shape).astype(x.dtype) if case["residual"] else None
    gamma = rng.uniform(0.5, 2.0, CHANNELS).astype(x.dtype)
    beta = rng.normal(size=CHANNELS).astype(x.dtype)
    running = (rng.normal(size=CHANNELS).astype(x.dtype), rng.uniform(0.5, 2.0, CHANNELS).astype(x.dtype))
    return x, dy, z, gamma, beta, running, axis


def step(case, x, dy, z, gamma, beta, running, axis, **where):
    forward, backward = ((normops.batch_norm, normops.batch_norm_backward) if case["op"] == "bn"
                         else (normops.batch_renorm, normops.batch_renorm_backward))
    options = dict(rmax=1.5, dmax=0.5) if case["op"] == "brn" else {}
    y, saved = forward(x, gamma, beta, *running, training=True, momentum=0.3, axis=axis,
                       residual=z, activation=case["activation"], **options, **where)
    grads = backward(dy, x, saved, gamma, y=y)
    names = ("dx", "dgamma", "dbeta", "dz")
    return dict(y=encode(y), running=[encode(r) for r in running], count=len(grads),
                **{name: encode(g) for name, g in zip(names, grads)})


report = {}
for case in CASES:
    x, dy, z, gamma, beta, running, axis = inputs(case)
    mine = [p[rank] for p in (parts(x, SPLITS[size]), parts(dy, SPLITS[size]))]
    z_mine = None if z is None else parts(z, SPLITS[size])[rank]
    got = step(case, *mine[:1], mine[1], z_mine, gamma, beta, tuple(r.copy() for r in running),
               axis, comm=comm)
    gathered = comm.gather(got, root=0)
    if rank == 0:
        oracle = step(case, x, dy, z, gamma, beta, tuple(r.copy() for r in running), axis)
        report[case["id"]] = dict(ranks=gathered, oracle=oracle)

# ranks that disagree on the epilogue: rank 0 asks for relu, the others for none
x, dy = batch("NCHW", sum(SPLITS[size]), "float64", seed=13)
try:
    normops.batch_norm(parts(x, SPLITS[size])[rank], activation="relu" if rank == 0 else None,
                       comm=comm)
    outcome = "no error"
except Exception as exc:   # what this rank raised
    outcome = f"{type(exc).__name__}: {exc}"
outcomes = comm.gather(outcome, root=0)
if rank == 0:
    report["disagreement"] = outcomes
    write_json(f"{out}/result.json", report)
