"""Faults of synchronized calls (``comm=``): whichever rank fails or disagrees, every rank
raises, none hangs, and the ranks stay aligned.

Each fault runs in its own mpiexec launch with a timeout (tests/mpi/sync_faults.py):
every rank reports the exception it got (class, message, ranks_at_fault), then runs a
good synchronized forward and backward, which only completes, with bitwise the same
statistics on every rank, if every rank left the faulty call at the same collective.
mpi4py is never imported here (see mpi_launch)."""
from typing import NamedTuple

import pytest

from mpi_launch import Runs, launch
from optional_mpi import require_mpi

TIMEOUT = 60


class Fault(NamedTuple):
    name: str              # the function of sync_faults.py
    ranks: int
    error: str             # the builtin class every rank raises
    kind: str              # "failed", "disagree", "count" or "local"
    ops: tuple = ()        # the op the message names
    at_fault: tuple = ()   # ranks_at_fault
    detail: str = ""       # failed: the failing rank's own error; disagree: the field


LOCAL_TYPE_ERROR = "comm must be an mpi4py intracommunicator"

FAULTS = [
    # a rank whose arguments fail validation
    Fault("gamma_shape", 2, "ValueError", "failed", ("batch_norm",), (1,),
          "ValueError: gamma must have shape (3,)"),
    Fault("x_integer_dtype", 2, "TypeError", "failed", ("batch_norm",), (1,),
          "TypeError: x must have dtype float32, float64, float16 or bfloat16, got int64"),
    Fault("gamma_dtype", 2, "TypeError", "failed", ("batch_norm",), (0,),
          "TypeError: gamma has dtype float32 but x has dtype float64"),
    Fault("nan_eps", 2, "ValueError", "failed", ("batch_norm",), (0,), "ValueError: eps must be"),
    Fault("x_not_an_array", 2, "TypeError", "failed", ("batch_norm",), (1,),
          "TypeError: x must have dtype float32, float64, float16 or bfloat16"),
    Fault("x_one_dimensional", 2, "ValueError", "failed", ("batch_norm",), (1,),
          "ValueError: x must have at least 2 dimensions"),
    Fault("brn_running_std_zero", 2, "ValueError", "failed", ("batch_renorm",), (1,),
          "ValueError: running_std must be positive"),
    Fault("two_ranks_fail_differently", 3, "ValueError", "failed", ("batch_norm",), (1, 2),
          "rank 1: ValueError: gamma must have shape (3,)"),
    # ranks that disagree
    Fault("disagree_channels", 2, "ValueError", "disagree", ("batch_norm",), (1,), "channels"),
    Fault("disagree_dtype", 2, "ValueError", "disagree", ("batch_norm",), (1,), "dtype"),
    Fault("disagree_axis", 2, "ValueError", "disagree", ("batch_norm",), (1,), "channel axis"),
    Fault("disagree_dimensions", 2, "ValueError", "disagree", ("batch_norm",), (1,), "dimensions"),
    Fault("disagree_op", 2, "ValueError", "disagree", ("batch_norm", "batch_renorm"), (1,), "op"),
    Fault("disagree_training", 2, "ValueError", "disagree", ("batch_norm",), (1,), "training"),
    Fault("disagree_eps", 2, "ValueError", "disagree", ("batch_norm",), (1,), "eps"),
    Fault("disagree_eps_rank_0_alone", 3, "ValueError", "disagree", ("batch_norm",), (0,), "eps"),
    Fault("disagree_momentum", 2, "ValueError", "disagree", ("batch_norm",), (1,), "momentum"),
    Fault("disagree_convention", 2, "ValueError", "disagree", ("batch_norm",), (1,), "convention"),
    Fault("brn_disagree_rmax", 2, "ValueError", "disagree", ("batch_renorm",), (1,), "rmax"),
    Fault("brn_disagree_dmax", 2, "ValueError", "disagree", ("batch_renorm",), (1,), "dmax"),
    Fault("brn_disagree_running_statistics", 2, "ValueError", "disagree", ("batch_renorm",),
          (1,), "running statistics (fingerprint)"),
    # replicas that diverged: the running statistics differ (in eval mode too, where they
    # normalize), or only some ranks pass them
    Fault("disagree_running_statistics", 2, "ValueError", "disagree", ("batch_norm",), (1,),
          "running statistics (fingerprint)"),
    Fault("eval_disagree_running_statistics", 3, "ValueError", "disagree", ("batch_norm",), (0,),
          "running statistics (fingerprint)"),
    Fault("disagree_running_statistics_given", 3, "ValueError", "disagree", ("batch_norm",), (1,),
          "running statistics (fingerprint)"),
    # one value per channel over all ranks together
    Fault("one_value_over_the_ranks", 2, "ValueError", "count", ("batch_norm",), (0, 1)),
    Fault("brn_one_value_over_the_ranks", 3, "ValueError", "count", ("batch_renorm",), (0, 1, 2)),
    # backward
    Fault("backward_dy_shape", 2, "ValueError", "failed", ("batch_norm_backward",), (1,),
          "ValueError: dy must have the shape of x"),
    Fault("brn_backward_dy_shape", 2, "ValueError", "failed", ("batch_renorm_backward",), (0,),
          "ValueError: dy must have the shape of x"),
    # layers
    Fault("layer_x_dtype", 2, "TypeError", "failed", ("BatchNorm.forward", "batch_norm"), (1,),
          "TypeError: BatchNorm(3"),
    Fault("brn_layer_channels", 2, "ValueError", "failed", ("BatchRenorm.forward", "batch_renorm"),
          (0,), "ValueError: BatchRenorm(3"),
    Fault("layer_backward_dy_shape", 2, "ValueError", "failed",
          ("BatchNorm.backward", "batch_norm_backward"), (1,), "ValueError: dy must have the shape of x"),
    # population statistics
    Fault("population_batch_channels", 2, "ValueError", "failed", ("recompute_population_stats",),
          (1,), "ValueError: BatchNorm(3"),
    Fault("population_layers_disagree", 2, "ValueError", "disagree", ("recompute_population_stats",),
          (1,), "layers"),
    Fault("population_not_layers", 2, "TypeError", "failed", ("recompute_population_stats",),
          (1,), "TypeError: layer_or_layers must be a BatchNorm/BatchRenorm layer"),
    Fault("population_layers_comm_mismatch", 2, "ValueError", "failed",
          ("recompute_population_stats",), (1,), "ValueError: the layers were made with different"),
    Fault("population_layers_eps", 3, "ValueError", "disagree", ("recompute_population_stats",),
          (0,), "layers"),
    Fault("layer_backward_after_population", 2, "RuntimeError", "failed", ("BatchNorm.backward",),
          (0, 1), "rank 0: RuntimeError: BatchNorm(3"),
    # not an intracommunicator: an error on each rank, before any collective (rank r makes
    # the call r + 1 times, which would misalign the ranks otherwise)
    Fault("comm_object", 2, "TypeError", "local", detail=LOCAL_TYPE_ERROR),
    Fault("comm_null", 2, "TypeError", "local", detail=LOCAL_TYPE_ERROR),   # MPI.COMM_NULL is no Intracomm
    Fault("layer_comm_object", 2, "TypeError", "local", detail=LOCAL_TYPE_ERROR),
    Fault("population_comm_null", 2, "TypeError", "local", detail=LOCAL_TYPE_ERROR),
    # an intracommunicator that was freed: docs/distributed.md's "freed one", a ValueError
    Fault("comm_freed", 2, "ValueError", "local", detail="comm is a null communicator"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory)


@pytest.fixture
def reports(runs, fault):
    """Every rank's report of the fault's launch (which must have exited cleanly)."""
    launched = runs.get(fault.name, fault.ranks, "sync_faults.py", fault.name, timeout=TIMEOUT)
    launched.check()
    found = launched.rank_reports()
    assert [r["rank"] for r in found] == list(range(fault.ranks))
    return found


def by_name(select=lambda f: True):
    return [pytest.param(f, id=f.name) for f in FAULTS if select(f)]


@pytest.mark.parametrize("fault", by_name())
def test_every_rank_raises(fault, reports):
    """The same builtin class on every rank, with ranks_at_fault and a message that names
    the op, the number of ranks and the failing rank's error or the field the ranks
    disagree on."""
    for report in reports:
        where = f"rank {report['rank']}: {report.get('message')}"
        assert report["error"] == fault.error, where
        message = report["message"]
        if fault.kind == "local":
            assert fault.detail in message, where
            assert not report["has_ranks_at_fault"], where
            continue
        assert tuple(report["ranks_at_fault"]) == fault.at_fault, where
        prefix = next((f"{op} over {fault.ranks} ranks: " for op in fault.ops
                       if message.startswith(f"{op} over {fault.ranks} ranks: ")), None)
        assert prefix is not None, where
        body = message[len(prefix):]
        if fault.kind == "failed" and len(fault.at_fault) == 1:
            assert body.startswith(f"rank {fault.at_fault[0]} failed: {fault.detail}"), where
        elif fault.kind == "failed":
            named = ", ".join(map(str, fault.at_fault))
            assert body.startswith(f"ranks {named} failed: {fault.detail}"), where
            for rank in fault.at_fault:
                assert f"rank {rank}: " in body, where
        elif fault.kind == "disagree":
            assert body.startswith(f"the ranks disagree on {fault.detail} ("), where
            for rank in fault.at_fault:
                assert f"rank {rank}: " in body, where
        else:
            assert body.startswith("expected more than 1 value per channel when training"), where


@pytest.mark.parametrize("fault", by_name())
def test_the_ranks_stay_aligned(fault, reports):
    """After the fault, a synchronized forward and backward succeeds on every rank with
    the global count of values and bitwise the same statistics."""
    count = sum(2 + rank for rank in range(fault.ranks)) * 2   # sync_faults.after's batch
    for report in reports:
        after = report.get("after")
        assert after is not None, f"rank {report['rank']} did not finish the call after the fault"
        assert after["error"] is None, f"rank {report['rank']}: {after}"
        assert after["count"] == count
    for field in ("mean", "invstd", "running_var", "dgamma", "dbeta"):
        assert len({report["after"][field] for report in reports}) == 1, field


@pytest.mark.parametrize("fault", by_name(lambda f: f.kind != "local"))
def test_every_rank_gets_the_same_message(fault, reports):
    """Word for word, even where the ranks were in different ops (a layer's own check
    fails in the layer's step while the other ranks wait in the op's): the message is
    built from what every rank received."""
    messages = [report["message"] for report in reports]
    assert len(set(messages)) == 1, messages


def test_equal_running_statistics_of_other_bits_agree(tmp_path):
    """0.0 on one rank and -0.0 on another are the same running statistic."""
    launch(require_mpi(), 2, "sync_equal_values.py", out=tmp_path, timeout=TIMEOUT).check()
