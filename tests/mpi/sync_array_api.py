"""Rank script: synchronized BN and BRN on the array-API path (the one CuPy arrays and
CUDA tensors take): array-api-strict arrays on the array-api backend, and torch tensors
through it (backend="array-api"). Each rank runs its part of one global batch, an
uneven split with an empty rank on 3 ranks; rank 0 gathers every rank's results and
compares them with the cpu backend on the whole batch, as NumPy, in one process.

    mpiexec -n K python -m mpi4py sync_array_api.py OUT

Writes OUT/result.json (rank 0): per library and op, the largest difference of y, dx,
dgamma, dbeta and the running statistics, whether the outputs are arrays of the input's
library, and whether every rank's statistics are bitwise alike."""
import sys

import numpy as np
from mpi4py import MPI

import normops
from rank_common import write_json

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
out = sys.argv[1]
SPLITS = {1: [6], 2: [2, 5], 3: [4, 0, 3]}
split = SPLITS[size]
rng = np.random.default_rng(7)
x = rng.normal(2.0, 3.0, (sum(split), 3, 2, 2))
dy = rng.normal(size=x.shape)
gamma, beta = rng.uniform(0.5, 2.0, 3), rng.normal(size=3)
mine = slice(sum(split[:rank]), sum(split[:rank + 1]))


def libraries():
    import array_api_strict as xs
    import torch
    yield "array_api_strict", xs.asarray, lambda a: np.asarray(a), "array-api", type(xs.asarray(0.0))
    yield "torch", torch.asarray, lambda a: a.numpy(), "array-api", torch.Tensor


def run(op, conv, backend, xs, dys, comm_):
    first, second = conv(np.full(3, 0.5)), conv(np.full(3, 2.0))
    args = (conv(xs), conv(gamma), conv(beta), first, second)
    if op == "batch_norm":
        y, saved = normops.batch_norm(*args, comm=comm_, backend=backend)
        grads = normops.batch_norm_backward(conv(dys), args[0], saved, args[1], backend=backend)
    else:
        y, saved = normops.batch_renorm(*args, rmax=1.5, dmax=0.5, comm=comm_, backend=backend)
        grads = normops.batch_renorm_backward(conv(dys), args[0], saved, args[1], backend=backend)
    return y, grads, (first, second), saved


result = {}
for name, conv, host, backend, kind in libraries():
    for op in ("batch_norm", "batch_renorm"):
        y, (dx, dgamma, dbeta), running, saved = run(op, conv, backend, x[mine], dy[mine], comm)
        mine_out = dict(y=host(y), dx=host(dx), dgamma=host(dgamma), dbeta=host(dbeta),
                        first=host(running[0]), second=host(running[1]),
                        stats=np.concatenate([np.asarray(host(saved.mean)),
                                              np.asarray(host(saved.invstd))]).tobytes(),
                        library=all(isinstance(a, kind) for a in (y, dx, dgamma, dbeta)))
        every = comm.gather(mine_out, root=0)
        if rank == 0:
            ry, (rdx, rdg, rdb), rrun, _ = run(op, np.asarray, "cpu", x, dy, None)
            diff = lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - b), initial=0))  # noqa: E731
            result[f"{name}/{op}"] = dict(
                y=diff(np.concatenate([e["y"] for e in every]), ry),
                dx=diff(np.concatenate([e["dx"] for e in every]), rdx),
                dgamma=max(diff(e["dgamma"], rdg) for e in every),
                dbeta=max(diff(e["dbeta"], rdb) for e in every),
                running=max(max(diff(e["first"], rrun[0]), diff(e["second"], rrun[1]))
                            for e in every),
                library=all(e["library"] for e in every),
                bitwise=len({e["stats"] for e in every}) == 1)
if rank == 0:
    write_json(f"{out}/result.json", result)
