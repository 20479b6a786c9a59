"""Synchronized BN/BRN (``comm=``) against one process on the whole batch.

For K = 1, 2, 3 ranks, each holding a slice of the batch (uneven; a rank with no sample,
a rank with exactly one), the synchronized ops and layers must give what normops gives
without comm on the concatenated batch, on the "cpu" and the "reference" backend: y and
dx (each rank's part), dgamma and dbeta (sums over the global batch), the saved
statistics and the running statistics updated with the global count; and every rank
must hold bitwise the same statistics. One mpiexec launch per K runs every case
(tests/mpi/sync_equivalence.py); each case is a test here.

mpi4py is never imported here (see mpi_launch)."""
import importlib.util
import os

import numpy as np
import pytest

from mpi_launch import Runs, rank_module

cases = rank_module("rank_common")

RANKS = (1, 2, 3)
TORCH_RANKS = 2   # the launch that also runs the torch cases
HAVE_TORCH = importlib.util.find_spec("torch") is not None
if not HAVE_TORCH and os.environ.get("NORMOPS_REQUIRE_TORCH"):
    raise RuntimeError("NORMOPS_REQUIRE_TORCH is set but PyTorch is not installed")
TOL = {"float64": 1e-12, "float32": 1e-5}
# the per-channel results every rank must hold bitwise alike
SHARED_FIELDS = ("mean", "invstd", "r", "d", "running_first", "running_second", "dgamma", "dbeta")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory)


@pytest.fixture(scope="module")
def equivalence(runs):
    """The result of the launch for K ranks (rank 0's result.json)."""
    results = {}

    def get(ranks):
        if ranks not in results:
            torch = ["--torch"] if HAVE_TORCH and ranks == TORCH_RANKS else []
            launched = runs.get(ranks, ranks, "sync_equivalence.py", *torch, timeout=120)
            results[ranks] = launched.check().result()
        return results[ranks]
    return get


def params(kind, select=None):
    return [pytest.param(k, c, id=f"{k}ranks-{c['id']}")
            for k in RANKS for c in getattr(cases, kind)(k) if select is None or select(k, c)]


# -- comparisons -------------------------------------------------------------------------
def values(enc):
    return np.asarray(enc["values"], np.float64).reshape(enc["shape"])


def assert_close(actual, expected, dtype, what, scale=None):
    """Equal to TOL[dtype] relative to ``scale``, the magnitude of the terms the value is
    made of (default: the largest magnitude of ``expected``), and to the value itself
    where it is larger."""
    expected = np.asarray(expected, np.float64)
    actual = np.asarray(actual, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if scale is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=TOL[dtype], atol=TOL[dtype] * scale,
                               err_msg=what)


def concatenated(encs):
    """The ranks' parts of an array, joined along the batch axis."""
    return np.concatenate([values(e) for e in encs], axis=0)


def values_per_sample(case):
    layout = cases.LAYOUTS[case["layout"]]
    return 1 if layout[2] == 2 else 6   # (n, C) or (n, C, 2, 3) / (n, 2, 3, C)


# -- ops ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ranks, case", params("op_cases"))
def test_forward_matches_one_process(equivalence, ranks, case):
    """y (each rank's part of it), the saved statistics (r and d for BRN) and the
    running statistics after the step equal one process's on the whole batch."""
    run = equivalence(ranks)["ops"][case["id"]]
    dtype, parts = case["dtype"], run["ranks"]
    assert len(parts) == ranks
    for rank, (mine, n) in enumerate(zip(parts, case["split"])):
        assert mine["y"]["shape"][0] == n and mine["y"]["dtype"] == dtype, f"rank {rank}'s y"
        assert mine["types"] == ["numpy"] * 3
    training = case["mode"] == "train"
    for backend, oracle in run["oracle"].items():
        assert_close(concatenated(p["y"] for p in parts), values(oracle["y"]), dtype,
                     f"y against {backend}")
        for rank, mine in enumerate(parts):
            assert mine["training"] is training
            # statistics not reported by one process's ops are left out (count; r, d in eval)
            for field in ("mean", "invstd", "r", "d", "running_first", "running_second"):
                if oracle[field] is None:
                    assert mine[field] is None, f"rank {rank}'s saved.{field}"
                    continue
                assert_close(values(mine[field]), values(oracle[field]), dtype,
                             f"rank {rank}'s {field} against {backend}")
    if training:
        global_count = sum(case["split"]) * values_per_sample(case)
        assert [p["count"] for p in parts] == [global_count] * ranks
    else:
        # eval: the running statistics are read, not written
        for rank, mine in enumerate(parts):
            for field in ("running_first", "running_second"):
                assert mine[field]["hex"] == run["initial"][field]["hex"], f"rank {rank}'s {field}"
            assert mine["count"] is None


@pytest.mark.parametrize("ranks, case", params("op_cases"))
def test_backward_matches_one_process(equivalence, ranks, case):
    """dx is each rank's part of one process's dx; dgamma and dbeta, on every rank, are
    one process's (sums over the whole batch)."""
    run = equivalence(ranks)["ops"][case["id"]]
    dtype, parts = case["dtype"], run["ranks"]
    for rank, (mine, n) in enumerate(zip(parts, case["split"])):
        assert mine["dx"]["shape"][0] == n and mine["dx"]["dtype"] == dtype
        assert mine["dgamma"]["dtype"] == mine["dbeta"]["dtype"] == dtype
    for backend, oracle in run["oracle"].items():
        assert_close(concatenated(p["dx"] for p in parts), values(oracle["dx"]), dtype,
                     f"dx against {backend}", oracle["scales"]["dx"])
        for rank, mine in enumerate(parts):
            for field in ("dgamma", "dbeta"):
                assert_close(values(mine[field]), values(oracle[field]), dtype,
                             f"rank {rank}'s {field} against {backend}", oracle["scales"][field])


@pytest.mark.parametrize("ranks, case", params("op_cases", lambda k, c: k > 1))
def test_every_rank_holds_bitwise_the_same_statistics(equivalence, ranks, case):
    parts = equivalence(ranks)["ops"][case["id"]]["ranks"]
    for field in SHARED_FIELDS:
        first = parts[0][field]
        for rank, mine in enumerate(parts[1:], 1):
            if first is None:
                assert mine[field] is None
            else:
                assert mine[field]["hex"] == first["hex"], f"{field}: rank {rank} differs from rank 0"
    assert len({p["count"] for p in parts}) == 1


@pytest.mark.parametrize("ranks, case", params(
    "op_cases", lambda k, c: c["op"].startswith("brn-") and c["mode"] == "train"))
def test_renorm_cases_clip_as_designed(equivalence, ranks, case):
    """The premise of the BRN cases: in brn-clip, r clips on channels 0 and 1 and d on
    channels 0 and 2 (the others do not); in brn-noclip nothing clips. Read from what
    rank 0 got."""
    run = equivalence(ranks)["ops"][case["id"]]
    rmax, dmax = run["options"]["rmax"], run["options"]["dmax"]
    r, d = values(run["ranks"][0]["r"]), values(run["ranks"][0]["d"])
    r_clipped = (r == rmax) | (r == 1.0 / rmax)
    d_clipped = np.abs(d) == dmax
    if case["op"] == "brn-clip":
        assert r_clipped.tolist() == [True, True, False], r
        assert d_clipped.tolist() == [True, False, True], d
    else:
        assert not r_clipped.any() and not d_clipped.any(), (r, d)
        assert np.all((r > 1.0 / rmax) & (r < rmax)) and np.all(np.abs(d) < dmax)


# -- layers ------------------------------------------------------------------------------
@pytest.mark.parametrize("ranks, case", params("layer_cases"))
def test_layer_steps_match_one_process(equivalence, ranks, case):
    """Training steps (forward, backward, SGD on gamma and beta) and an eval step of a
    layer made with comm, each rank on its part of every batch (the split changes from
    step to step), against one layer without comm on the whole batches."""
    run = equivalence(ranks)["layers"][case["id"]]
    dtype, oracle, parts = case["dtype"], run["oracle"], run["ranks"]
    for step, split in enumerate(case["splits"]):
        mine_steps = [p["steps"][step] for p in parts]
        for rank, n in enumerate(split):
            assert mine_steps[rank]["y"]["shape"][0] == n
        expected = oracle["steps"][step]
        assert_close(concatenated(m["y"] for m in mine_steps), values(expected["y"]), dtype,
                     f"step {step}: y")
        assert_close(concatenated(m["dx"] for m in mine_steps), values(expected["dx"]), dtype,
                     f"step {step}: dx", expected["scales"]["dx"])
        for rank, mine in enumerate(mine_steps):
            for field in ("dgamma", "dbeta"):
                assert_close(values(mine[field]), values(expected[field]), dtype,
                             f"step {step}: rank {rank}'s {field}", expected["scales"][field])
    for rank, mine in enumerate(parts):
        for field in ("running_mean", "running_spread", "gamma", "beta"):
            assert_close(values(mine[field]), values(oracle[field]), dtype, f"rank {rank}'s {field}")
        assert mine["num_batches_tracked"] == oracle["num_batches_tracked"] == cases.LAYER_STEPS
    if ranks > 1:   # the parameters and running statistics stay bitwise alike on every rank
        for field in ("running_mean", "running_spread", "gamma", "beta"):
            assert len({p[field]["hex"] for p in parts}) == 1, field
        for step in range(len(case["splits"])):
            for field in ("dgamma", "dbeta"):
                assert len({p["steps"][step][field]["hex"] for p in parts}) == 1, (step, field)


# -- torch CPU tensors -------------------------------------------------------------------
@pytest.mark.parametrize("case", [pytest.param(c, id=f"{TORCH_RANKS}ranks-{c['id']}")
                                  for c in cases.torch_cases(TORCH_RANKS)])
def test_torch_cpu_tensors_give_numpys_results(equivalence, case):
    """The same synchronized case on torch CPU tensors (bridged to the cpu kernels) and on
    NumPy arrays: bitwise the same y, dx, statistics and running statistics on every rank,
    the outputs being tensors."""
    if not HAVE_TORCH:
        pytest.skip("PyTorch is not installed (pip install torch==2.13.0 enables this test)")
    run = equivalence(TORCH_RANKS)["torch"][case["id"]]
    assert len(run["ranks"]) == TORCH_RANKS
    for rank, mine in enumerate(run["ranks"]):
        assert mine["torch"]["types"] == ["torch"] * 3 and mine["numpy"]["types"] == ["numpy"] * 3
        for field in ("y", "dx") + SHARED_FIELDS:
            ours, theirs = mine["torch"][field], mine["numpy"][field]
            if theirs is None:
                assert ours is None, f"rank {rank}: {field}"
                continue
            assert ours["shape"] == theirs["shape"] and ours["dtype"] == theirs["dtype"], field
            assert ours["hex"] == theirs["hex"], f"rank {rank}: {field} differs on tensors"
        assert mine["torch"]["count"] == mine["numpy"]["count"]
