"""What synchronized BN does without any MPI process: the communicator check (no MPI is
imported here; the multi-rank behaviour is tested under mpiexec) and Chan's merge that
pools the ranks' partial statistics."""
import sys

import numpy as np
import pytest

import normops
from normops._moments import combine


@pytest.mark.parametrize("comm", [object(), "COMM_WORLD", 0, [1, 2]])
def test_a_communicator_that_is_not_an_mpi4py_intracommunicator_is_a_type_error(comm):
    x = np.random.default_rng(0).standard_normal((4, 3))
    ones, zeros = np.ones(3), np.zeros(3)
    calls = [lambda: normops.batch_norm(x, comm=comm),
             lambda: normops.batch_renorm(x, ones, zeros, zeros.copy(), ones.copy(), comm=comm),
             lambda: normops.BatchNorm(3, comm=comm),
             lambda: normops.BatchRenorm(3, comm=comm),
             lambda: normops.recompute_population_stats(normops.BatchNorm(3), [x], comm=comm)]
    for call in calls:
        with pytest.raises(TypeError, match="comm must be an mpi4py intracommunicator"):
            call()


def test_the_check_imports_no_mpi():
    if "mpi4py.MPI" in sys.modules:
        pytest.skip("mpi4py.MPI was imported by another test in this process")
    with pytest.raises(TypeError, match=r'normops\[mpi\]'):
        normops.batch_norm(np.ones((4, 3)), comm=object())
    assert "mpi4py.MPI" not in sys.modules


def _moments(x):
    return x.shape[0], x.mean(axis=0), ((x - x.mean(axis=0)) ** 2).sum(axis=0)


@pytest.mark.parametrize("sizes", [(1, 1), (3, 5), (7, 1), (2, 2, 9), (4, 0, 3), (0, 5)])
def test_merging_partials_in_order_gives_the_statistics_of_the_union(sizes):
    rng = np.random.default_rng(len(sizes))
    parts = [rng.standard_normal((n, 4)) * 3 + 1e6 for n in sizes]
    count, mean, m2 = 0, np.zeros(4), np.zeros(4)
    for part in parts:
        if part.shape[0]:
            count, mean, m2 = combine(count, mean, m2, *_moments(part))
    n, mean_all, m2_all = _moments(np.concatenate(parts))
    assert count == n
    np.testing.assert_allclose(mean, mean_all, rtol=1e-15)
    np.testing.assert_allclose(m2, m2_all, rtol=1e-9)


def test_merging_into_an_empty_set_is_the_other_set_bitwise():
    x = np.random.default_rng(1).standard_normal((5, 3)) + 1e3
    moments = _moments(x)
    count, mean, m2 = combine(0, np.zeros(3), np.zeros(3), *moments)
    assert count == 5
    assert mean.tobytes() == moments[1].tobytes() and m2.tobytes() == moments[2].tobytes()
    assert combine(*moments, 0, np.zeros(3), np.zeros(3)) == moments
