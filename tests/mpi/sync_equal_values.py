"""Rank script: replicas whose running statistics are equal in value but not in bits
(0.0 and -0.0) agree; a synchronized call on them runs (an exception aborts every rank
under python -m mpi4py, and the launch fails).

    mpiexec -n K python -m mpi4py sync_equal_values.py OUT"""
import numpy as np
from mpi4py import MPI

import normops

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
x = np.random.default_rng(rank).standard_normal((4, 3, 2))
mean = -np.zeros(3) if rank % 2 else np.zeros(3)
assert mean.tobytes() != np.zeros(3).tobytes() or rank % 2 == 0
for training in (False, True):
    normops.batch_norm(x, None, None, mean.copy(), np.ones(3), training=training, comm=comm)
    normops.batch_renorm(x, None, None, mean.copy(), np.ones(3), training=training, comm=comm)
