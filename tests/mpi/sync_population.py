"""Rank script: recompute_population_stats over the ranks, each holding some of the
batches (a rank may hold none), and by one process over all the batches (the oracle).

    mpiexec -n K python sync_population.py OUT

Rank 0 writes every rank's outcome and the oracle's to OUT/result.json; the tests compare."""
import sys

import numpy as np
from mpi4py import MPI

import normops
from rank_common import (CHANNELS, POPULATION_SETUPS, encode, population_batches,
                         population_cases, write_json)

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
out = sys.argv[1]


def layers_of(setup, comm_):
    """The layers of a setup, made with comm_ (None: without one), and the forward that
    runs them (None for a single layer)."""
    dtype = np.dtype(POPULATION_SETUPS[setup][0])
    if setup.startswith("network"):
        first = normops.BatchNorm(CHANNELS, dtype=dtype, comm=comm_)
        second = normops.BatchRenorm(4, dtype=dtype, eps=1e-3, comm=comm_)
        first.gamma[...] = np.linspace(0.5, 2.0, CHANNELS)
        first.beta[...] = np.array([0.5, -1.0, 2.0])   # the second layer sees nonzero means
        W = np.linspace(-1.0, 1.5, CHANNELS * 4).reshape(CHANNELS, 4).astype(dtype)
        return [first, second], lambda x: second(first(x) @ W)
    if setup.startswith("BatchRenorm"):
        return [normops.BatchRenorm(CHANNELS, dtype=dtype, eps=1e-3, comm=comm_)], None
    convention = "keras" if "keras" in setup else "pytorch"
    return [normops.BatchNorm(CHANNELS, dtype=dtype, convention=convention, comm=comm_)], None


def recompute(case, batches, synchronized):
    layer_comm = synchronized and POPULATION_SETUPS[case["setup"]][1]
    layers, forward = layers_of(case["setup"], comm if layer_comm else None)
    options = {} if forward is None else dict(forward=forward)
    if synchronized and not layer_comm:
        options["comm"] = comm
    seen = normops.recompute_population_stats(layers if forward else layers[0], batches, **options)
    return dict(seen=seen, layers=[dict(running_mean=encode(layer.running_mean),
                                        running_spread=encode(getattr(layer, layer._spread)),
                                        num_batches_tracked=layer.num_batches_tracked,
                                        training=layer.training) for layer in layers])


def run(case):
    batches = population_batches(case["setup"], POPULATION_SETUPS[case["setup"]][0])
    start = sum(case["share"][:rank])
    return recompute(case, batches[start:start + case["share"][rank]], True)


mine = {case["id"]: run(case) for case in population_cases(size)}
gathered = comm.gather(mine, root=0)
if rank == 0:
    result = {}
    for case in population_cases(size):
        batches = population_batches(case["setup"], POPULATION_SETUPS[case["setup"]][0])
        result[case["id"]] = dict(case=case, ranks=[g[case["id"]] for g in gathered],
                                  oracle=recompute(case, batches, False))
    write_json(f"{out}/result.json", result)
