"""The fused epilogue (residual, relu) over MPI ranks: each rank's y, dx and dz are its
part of what one process computes on the whole batch, dgamma and dbeta the whole batch's,
the running statistics updated alike; ranks that disagree on the epilogue fail on every
rank. One mpiexec launch per K (tests/mpi/sync_fused.py).

mpi4py is never imported here (see mpi_launch)."""
import numpy as np
import pytest

from mpi_launch import Runs

RANKS = (2, 3)
SPLITS = {2: [3, 4], 3: [2, 0, 5]}
TOL = {"float64": 1e-12, "float32": 1e-5}
CASE_IDS = [f"{op}-{layout}-{dtype}-{kind}"
            for op in ("bn", "brn") for layout in ("NCHW", "NHWC") for dtype in ("float64", "float32")
            for kind in ("residual-relu", "none-relu", "residual-None")]


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    runs, results = Runs(tmp_path_factory), {}

    def get(ranks):
        if ranks not in results:
            results[ranks] = runs.get(ranks, ranks, "sync_fused.py", timeout=120).check().result()
        return results[ranks]
    return get


def values(enc):
    return np.asarray(enc["values"], np.float64).reshape(enc["shape"])


def close(actual, expected, dtype, what):
    scale = np.max(np.abs(expected), initial=0.0)
    np.testing.assert_allclose(actual, expected, rtol=TOL[dtype], atol=TOL[dtype] * scale,
                               err_msg=what)


@pytest.mark.parametrize("ranks", RANKS)
@pytest.mark.parametrize("case_id", CASE_IDS)
def test_synchronized_fused_ops_match_one_process(fused, ranks, case_id):
    run = fused(ranks)[case_id]
    dtype = case_id.split("-")[2]
    oracle, parts = run["oracle"], run["ranks"]
    residual = "residual" in case_id
    assert oracle["count"] == (4 if residual else 3)
    per_sample = ("y", "dx", "dz") if residual else ("y", "dx")
    for name in per_sample:
        whole = np.concatenate([values(p[name]) for p in parts], axis=0)
        close(whole, values(oracle[name]), dtype, name)
    for rank, part in enumerate(parts):
        assert part["count"] == oracle["count"]
        for name in ("dgamma", "dbeta"):
            close(values(part[name]), values(oracle[name]), dtype, f"rank {rank}: {name}")
        for i in range(2):
            close(values(part["running"][i]), values(oracle["running"][i]), dtype,
                  f"rank {rank}: running statistic {i}")
    # every rank holds bitwise the same sums over the batch
    for name in ("dgamma", "dbeta"):
        assert len({p[name]["hex"] for p in parts}) == 1, name
    if "relu" in case_id:
        y = np.concatenate([values(p["y"]) for p in parts], axis=0)
        assert np.all(y >= 0)


@pytest.mark.parametrize("ranks", RANKS)
def test_ranks_that_disagree_on_the_epilogue_fail_on_every_rank(fused, ranks):
    outcomes = fused(ranks)["disagreement"]
    assert len(outcomes) == ranks
    for outcome in outcomes:
        assert outcome.startswith("ValueError") and "activation" in outcome, outcome
