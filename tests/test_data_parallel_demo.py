"""python -m normops demo --ranks N: data-parallel training with synchronized BatchNorm
against training in one process. The runs need mpi4py and mpiexec (skipped without them
unless NORMOPS_REQUIRE_MPI=1) and scikit-learn."""
import argparse
import re
import subprocess
import sys

import pytest

from normops import _mpirun, demo
from normops.demo import data_parallel
from optional_mpi import require_mpi

TIMEOUT_S = 180


def run_ranks(*args):
    return subprocess.run([sys.executable, "-m", "normops", "demo", *args],
                          capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.mark.parametrize("ranks, counts", [(2, (21, 43)), (3, (11, 21, 32))])
def test_data_parallel_matches_one_process(ranks, counts):
    pytest.importorskip("sklearn")
    require_mpi()
    done = run_ranks("--ranks", str(ranks))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"data-parallel training on {ranks} ranks" in out
    assert "split unevenly: " + " + ".join(f"{c} (rank {r})" for r, c in enumerate(counts)) in out
    assert "replicas bitwise identical on every rank: yes" in out
    worst = float(re.search(r"^largest parameter difference (\S+) \(tolerance 1e-09\): match$",
                            out, re.M).group(1))
    assert worst <= data_parallel.TOLERANCE
    # every parameter and running statistic of the 3 Linear and 2 BatchNorm layers
    rows = re.findall(r"^\d+\s+(Linear|BatchNorm)\s+(\w+)\s+\S+\s+(\S+)$", out, re.M)
    assert len(rows) == 3 * 2 + 2 * 4
    assert max(float(diff) for *_, diff in rows) == pytest.approx(worst, rel=0.1)
    steps = re.search(r"step 1 (\S+), step 50 (\S+) \(one process: (\S+), (\S+)\)", out)
    assert steps is not None and float(steps[2]) < float(steps[1])


def test_summing_batchnorm_grads_again_is_caught():
    """The negative control: BatchNorm's gradients are global sums already; a loop that
    sums them over the ranks again (as for PyTorch's SyncBatchNorm) trains differently."""
    pytest.importorskip("sklearn")
    mpiexec = require_mpi()
    done = subprocess.run(_mpirun.command(mpiexec, 2, "normops.demo.data_parallel",
                                          ["--ranks", 2, "--steps", 5, "--reduce-bn-grads"]),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "NEGATIVE CONTROL" in done.stdout
    worst = float(re.search(r"^largest parameter difference (\S+) .*: MISMATCH$",
                            done.stdout, re.M).group(1))
    assert worst > 1e-3


def test_the_launcher_stops_the_ranks_on_timeout():
    pytest.importorskip("sklearn")
    require_mpi()
    with pytest.raises(_mpirun.LaunchError, match="did not finish within 1 s; its ranks were stopped"):
        data_parallel.launch(2, timeout=1, args=["--steps", 10 ** 7])


@pytest.mark.parametrize("total, ranks, counts", [
    (64, 1, [64]), (64, 2, [21, 43]), (64, 3, [11, 21, 32]), (3, 4, [0, 1, 1, 1])])
def test_uneven_counts(total, ranks, counts):
    assert data_parallel.uneven_counts(total, ranks) == counts


def test_missing_mpi_names_the_extra(monkeypatch, capsys):
    monkeypatch.setattr(_mpirun.importlib.util, "find_spec",
                        lambda name: None if name == "mpi4py" else object())
    monkeypatch.setattr(_mpirun, "find_mpiexec", lambda: None)
    assert demo.main(argparse.Namespace(quick=False, out="unused", seeds=None, ranks=2)) == 2
    err = capsys.readouterr().err
    assert "mpi4py is not installed" in err and "no mpiexec" in err
    assert 'pip install "normops[mpi]"' in err


def test_ranks_must_be_positive(capsys):
    assert demo.main(argparse.Namespace(quick=False, out="unused", seeds=None, ranks=0)) == 2
    assert "--ranks must be at least 1" in capsys.readouterr().err
