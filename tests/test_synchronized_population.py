"""recompute_population_stats(comm=) (precise BN over ranks): each rank holds some of the
batches (uneven shares, a rank with none), and every rank's layers get the population
statistics of all the batches together, as one process computes them from all of them,
bitwise alike on every rank; comm= passed or the layers' own communicator; one layer or
several run by forward=. One mpiexec launch per K (tests/mpi/sync_population.py).

mpi4py is never imported here (see mpi_launch)."""
import numpy as np
import pytest

from mpi_launch import Runs, rank_module

cases = rank_module("rank_common")
TOL = {"float64": 1e-12, "float32": 1e-5}


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    runs, results = Runs(tmp_path_factory), {}

    def get(ranks):
        if ranks not in results:
            launched = runs.get(ranks, ranks, "sync_population.py", timeout=60)
            results[ranks] = launched.check().result()
        return results[ranks]
    return get


def values(enc):
    return np.asarray(enc["values"], np.float64).reshape(enc["shape"])


@pytest.mark.parametrize("ranks, case", [pytest.param(k, c, id=f"{k}ranks-{c['id']}")
                                         for k in (1, 2, 3) for c in cases.population_cases(k)])
def test_population_statistics_match_one_process(population, ranks, case):
    run = population(ranks)[case["id"]]
    dtype = cases.POPULATION_SETUPS[case["setup"]][0]
    oracle, parts = run["oracle"], run["ranks"]
    assert oracle["seen"] == len(cases.POPULATION_BATCH_SIZES)
    assert [p["seen"] for p in parts] == case["share"]   # each rank ran its own batches only
    for rank, mine in enumerate(parts):
        assert len(mine["layers"]) == len(oracle["layers"])
        for i, (layer, expected) in enumerate(zip(mine["layers"], oracle["layers"])):
            for field in ("running_mean", "running_spread"):
                want = values(expected[field])
                assert layer[field]["dtype"] == dtype
                np.testing.assert_allclose(values(layer[field]), want, rtol=TOL[dtype],
                                           atol=TOL[dtype] * np.max(np.abs(want)),
                                           err_msg=f"rank {rank}, layer {i}: {field}")
            # the running statistics are replaced; the count and the mode are left alone
            assert layer["num_batches_tracked"] == expected["num_batches_tracked"] == 0
            assert layer["training"] and expected["training"]
    for i in range(len(oracle["layers"])):
        for field in ("running_mean", "running_spread"):
            assert len({p["layers"][i][field]["hex"] for p in parts}) == 1, (i, field)


def test_the_population_is_not_the_default_running_statistics(population):
    """The premise: the batches move the statistics away from a new layer's (0 and 1)."""
    for run in population(2).values():
        for layer in run["oracle"]["layers"]:
            assert np.all(np.abs(values(layer["running_mean"])) > 1e-3)
            assert np.all(np.abs(values(layer["running_spread"]) - 1.0) > 1e-3)
