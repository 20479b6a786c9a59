"""Rank script: one fault of a synchronized call, then a synchronized call that must work.

    mpiexec -n K python sync_faults.py OUT FAULT

Every rank makes the call of FAULT (one rank, or some, with a bad argument, or ranks
that disagree), catches what it raises, and writes OUT/rank-R.json: the exception's
class name, message and ranks_at_fault. Then every rank runs a good synchronized
forward and backward (which meets the other ranks' only if every rank left the faulty
call at the same collective) and adds its outcome and the bytes of its statistics to
the report. A rank that hangs writes no second report; the test's timeout catches it."""
import math
import sys

import numpy as np
from mpi4py import MPI

import normops
from rank_common import write_json

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
out, name = sys.argv[1], sys.argv[2]
FAULTS = {}


def fault(fn):
    FAULTS[fn.__name__] = fn
    return fn


def data(n, channels=3, dtype=np.float64, tail=(2,)):
    """This rank's x, and gamma, beta, running mean and spread for it."""
    rng = np.random.default_rng(10 + rank)
    x = rng.normal(1.0, 2.0, (n, channels) + tail).astype(dtype)
    ones = np.ones(channels, dtype)
    return x, ones * 1.5, ones * 0.25, ones * 0.5, ones * 2.0


# -- a rank whose arguments fail validation ------------------------------------------
@fault
def gamma_shape():
    x, gamma, beta, _, _ = data(3)
    normops.batch_norm(x, gamma[:2] if rank == 1 else gamma, beta, comm=comm)


@fault
def x_integer_dtype():
    x, gamma, beta, _, _ = data(3)
    normops.batch_norm(x.astype(np.int64) if rank == 1 else x, gamma, beta, comm=comm)


@fault
def gamma_dtype():
    x, gamma, beta, _, _ = data(3)
    normops.batch_norm(x, gamma.astype(np.float32) if rank == 0 else gamma, beta, comm=comm)


@fault
def nan_eps():
    x, gamma, beta, mean, var = data(3)
    normops.batch_norm(x, gamma, beta, mean, var, eps=math.nan if rank == 0 else 1e-5, comm=comm)


@fault
def x_not_an_array():
    x, gamma, beta, _, _ = data(3)
    normops.batch_norm(object() if rank == 1 else x, gamma, beta, comm=comm)


@fault
def x_one_dimensional():
    x, gamma, beta, _, _ = data(3)
    normops.batch_norm(x[:, :, 0].ravel()[:3] if rank == 1 else x, gamma, beta, comm=comm)


@fault
def brn_running_std_zero():
    x, gamma, beta, mean, std = data(3)
    normops.batch_renorm(x, gamma, beta, mean, std * 0 if rank == 1 else std, comm=comm)


@fault
def two_ranks_fail_differently():
    x, gamma, beta, _, _ = data(3)
    if rank == 1:
        gamma = gamma[:2]
    if rank == 2:
        x = x.astype(np.int64)
    normops.batch_norm(x, gamma, beta, comm=comm)


# -- ranks that disagree -----------------------------------------------------------------
@fault
def disagree_channels():
    x, gamma, beta, _, _ = data(3, channels=4 if rank == 1 else 3)
    normops.batch_norm(x, gamma, beta, comm=comm)


@fault
def disagree_dtype():
    x, gamma, beta, _, _ = data(3, dtype=np.float32 if rank == 1 else np.float64)
    normops.batch_norm(x, gamma, beta, comm=comm)


@fault
def disagree_axis():
    x, gamma, beta, _, _ = data(3, tail=(3,))   # channels on axis 1 and on axis 2 alike
    normops.batch_norm(x, gamma, beta, axis=2 if rank == 1 else 1, comm=comm)


@fault
def disagree_dimensions():
    x, gamma, beta, _, _ = data(3, tail=() if rank == 1 else (2,))   # NC on rank 1, NCL on rank 0
    normops.batch_norm(x, gamma, beta, comm=comm)


@fault
def disagree_op():
    x, gamma, beta, mean, spread = data(3)
    op = normops.batch_renorm if rank == 1 else normops.batch_norm
    op(x, gamma, beta, mean, spread, comm=comm)


@fault
def disagree_training():
    x, gamma, beta, mean, var = data(3)
    normops.batch_norm(x, gamma, beta, mean, var, training=rank != 1, comm=comm)


@fault
def disagree_eps():
    x, gamma, beta, mean, var = data(3)
    normops.batch_norm(x, gamma, beta, mean, var, eps=1e-3 if rank == 1 else 1e-5, comm=comm)


@fault
def disagree_eps_rank_0_alone():
    x, gamma, beta, mean, var = data(3)
    normops.batch_norm(x, gamma, beta, mean, var, eps=1e-3 if rank == 0 else 1e-5, comm=comm)


@fault
def disagree_momentum():
    x, gamma, beta, mean, var = data(3)
    normops.batch_norm(x, gamma, beta, mean, var, momentum=0.5 if rank == 1 else 0.1, comm=comm)


@fault
def disagree_convention():
    x, gamma, beta, mean, var = data(3)
    normops.batch_norm(x, gamma, beta, mean, var, comm=comm,
                       convention="keras" if rank == 1 else "pytorch")


@fault
def brn_disagree_rmax():
    x, gamma, beta, mean, std = data(3)
    normops.batch_renorm(x, gamma, beta, mean, std, rmax=2.0 if rank == 1 else 3.0, comm=comm)


@fault
def brn_disagree_dmax():
    x, gamma, beta, mean, std = data(3)
    normops.batch_renorm(x, gamma, beta, mean, std, dmax=1.0 if rank == 1 else 5.0, comm=comm)


@fault
def brn_disagree_running_statistics():
    x, gamma, beta, mean, std = data(3)
    normops.batch_renorm(x, gamma, beta, mean + (0.125 if rank == 1 else 0.0), std, comm=comm)


@fault
def disagree_running_statistics():
    x, gamma, beta, mean, var = data(3)
    normops.batch_norm(x, gamma, beta, mean, var * (1.5 if rank == 1 else 1.0), comm=comm)


@fault
def eval_disagree_running_statistics():
    x, gamma, beta, mean, var = data(3)
    normops.batch_norm(x, gamma, beta, mean + (0.125 if rank == 0 else 0.0), var, training=False,
                       comm=comm)


@fault
def disagree_running_statistics_given():
    x, gamma, beta, mean, var = data(3)
    running = (mean, var) if rank == 1 else (None, None)
    normops.batch_norm(x, gamma, beta, *running, comm=comm)


# -- a global batch of one value per channel ---------------------------------------------
@fault
def one_value_over_the_ranks():
    x, gamma, beta, _, _ = data(1 if rank == 0 else 0, tail=())   # NC
    normops.batch_norm(x, gamma, beta, comm=comm)


@fault
def brn_one_value_over_the_ranks():
    x, gamma, beta, mean, std = data(1 if rank == size - 1 else 0, tail=())
    normops.batch_renorm(x, gamma, beta, mean, std, comm=comm)


# -- backward ------------------------------------------------------------------------------
@fault
def backward_dy_shape():
    x, gamma, beta, _, _ = data(3)
    y, saved = normops.batch_norm(x, gamma, beta, comm=comm)
    dy = np.ones_like(y) if rank != 1 else np.ones((2,) + y.shape[1:])
    normops.batch_norm_backward(dy, x, saved, gamma)


@fault
def brn_backward_dy_shape():
    x, gamma, beta, mean, std = data(3)
    y, saved = normops.batch_renorm(x, gamma, beta, mean, std, comm=comm)
    dy = np.ones_like(y) if rank != 0 else np.ones(y.shape[:-1])
    normops.batch_renorm_backward(dy, x, saved, gamma)


# -- layers --------------------------------------------------------------------------------
@fault
def layer_x_dtype():
    layer = normops.BatchNorm(3, dtype=np.float64, comm=comm)
    x = data(3)[0]
    layer(x.astype(np.float32) if rank == 1 else x)


@fault
def brn_layer_channels():
    layer = normops.BatchRenorm(3, dtype=np.float64, comm=comm)
    layer(data(3, channels=4 if rank == 0 else 3)[0])


@fault
def layer_backward_dy_shape():
    layer = normops.BatchNorm(3, dtype=np.float64, comm=comm)
    y = layer(data(3)[0])
    layer.backward(np.ones((4,) + y.shape[1:]) if rank == 1 else np.ones_like(y))


@fault
def population_batch_channels():
    layer = normops.BatchNorm(3, dtype=np.float64, comm=comm)
    batches = [data(4)[0], data(4, channels=4 if rank == 1 else 3)[0]]
    normops.recompute_population_stats(layer, batches)


@fault
def population_layers_disagree():
    channels = 4 if rank == 1 else 3
    layer = normops.BatchNorm(channels, dtype=np.float64)
    normops.recompute_population_stats(layer, [data(4, channels=channels)[0]], comm=comm)


@fault
def population_not_layers():
    layer = normops.BatchNorm(3, dtype=np.float64)
    normops.recompute_population_stats([] if rank == 1 else layer, [data(4)[0]], comm=comm)


@fault
def population_layers_comm_mismatch():
    # rank 1 made one of its layers without the communicator: the others' is found still
    a = normops.BatchNorm(3, dtype=np.float64, comm=comm)
    b = normops.BatchNorm(3, dtype=np.float64, comm=None if rank == 1 else comm)

    def forward(x):
        return b(a(x))
    normops.recompute_population_stats([a, b], [data(4)[0]], forward=forward)


@fault
def population_layers_eps():
    layer = normops.BatchNorm(3, eps=1e-3 if rank == 0 else 1e-5, dtype=np.float64, comm=comm)
    normops.recompute_population_stats(layer, [data(4)[0]])


@fault
def layer_backward_after_population():
    # collecting forwards leave no step to differentiate, on the rank without batches too
    layer = normops.BatchNorm(3, dtype=np.float64, comm=comm)
    x = data(4)[0]
    layer(x)
    normops.recompute_population_stats(layer, [x] if rank == 0 else [])
    layer.backward(np.ones_like(x))


# -- not an intracommunicator: a local TypeError, no collective ---------------------------
def locally(call):
    """call() made rank + 1 times (the last one raising out): were there a collective in
    it, the ranks would be out of step for the call after the fault."""
    for _ in range(rank):
        try:
            call()
        except (TypeError, ValueError):
            pass
    call()


@fault
def comm_object():
    x, gamma, beta, _, _ = data(3)
    locally(lambda: normops.batch_norm(x, gamma, beta, comm=object()))


@fault
def comm_null():
    x, gamma, beta, mean, std = data(3)
    locally(lambda: normops.batch_renorm(x, gamma, beta, mean, std, comm=MPI.COMM_NULL))


@fault
def comm_freed():
    x, gamma, beta, _, _ = data(3)
    freed = comm.Dup()
    freed.Free()   # an intracommunicator that now equals MPI.COMM_NULL
    locally(lambda: normops.batch_norm(x, gamma, beta, comm=freed))


@fault
def layer_comm_object():
    locally(lambda: normops.BatchNorm(3, comm=object()))


@fault
def population_comm_null():
    layer = normops.BatchNorm(3, dtype=np.float64)
    locally(lambda: normops.recompute_population_stats(layer, [data(4)[0]], comm=MPI.COMM_NULL))


def outcome(call):
    try:
        call()
    except Exception as error:
        ranks = getattr(error, "ranks_at_fault", None)
        return dict(error=type(error).__name__, message=str(error),
                    ranks_at_fault=None if ranks is None else list(ranks),
                    has_ranks_at_fault=hasattr(error, "ranks_at_fault"))
    return dict(error=None)


def after():
    """A good synchronized forward and backward, on every rank: its statistics."""
    x, gamma, beta, mean, var = data(2 + rank)
    y, saved = normops.batch_norm(x, gamma, beta, mean, var, comm=comm)
    _, dgamma, dbeta = normops.batch_norm_backward(np.cos(x), x, saved, gamma)
    arrays = dict(mean=saved.mean, invstd=saved.invstd, running_var=var, dgamma=dgamma, dbeta=dbeta)
    return dict(count=saved.count, **{k: np.ascontiguousarray(v).tobytes().hex() for k, v in arrays.items()})


report = dict(rank=rank, ranks=size, fault=name, **outcome(FAULTS[name]))
write_json(f"{out}/rank-{rank}.json", report)
print(f"rank {rank}: {report}", flush=True)
try:
    report["after"] = dict(error=None, **after())
except Exception as error:
    report["after"] = dict(error=type(error).__name__, message=str(error))
write_json(f"{out}/rank-{rank}.json", report)
