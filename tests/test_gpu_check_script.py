"""benchmarks/gpu_check.py, the script benchmarks/gpu_check.sh runs on a GPU machine, run
here as CI can: on CPU tensors (--device cpu) with tiny shapes and a few examples per
property (--quick). Everything but CuPy's few lines runs; the cupy part says why it was
skipped when CuPy or a GPU is missing. No assertion on how fast anything is."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import normops
from normops import testing
from normops._bench.columns import OPS
from optional_torch import import_torch

import_torch("the GPU check script's CPU run")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SHAPES = ("NCHW-8x16x14x14", "NHWC-8x14x14x16", "NC-256x64")


def _run(*args, timeout=240):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _cupy_reason():
    return next(i.reason for i in normops.backends() if i.name == "cupy")


def _table_rows(stdout):
    """The table's rows, split on runs of two spaces (a cell holds single spaces at most)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("part "))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append([c.strip() for c in line.split("  ") if c.strip()])
    return rows


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu_check") / "report.json"
    done = _run("--device", "cpu", "--quick", "--json", str(path))
    return done, json.loads(path.read_text()) if path.exists() else None


def test_runs_on_cpu_tensors_and_prints_the_table(cpu_run):
    done, report = cpu_run
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    rows = _table_rows(done.stdout)
    by_part = {}
    for row in rows:
        by_part.setdefault(row[0], []).append(row)
    # the kit: every property on the torch backend, CPU tensors
    (kit,) = [r for r in by_part["kit"] if r[1] == "normops-torch"]
    assert kit[2].startswith("torch on cpu")
    assert kit[3] == f"{len(testing.properties())} passed, 0 failed, 0 n/a"
    # the fixed cases against the reference, training and eval
    compared = [r for r in by_part["vs reference"] if r[1] == "normops-torch"]
    assert len(compared) == 8
    for row in compared:
        assert row[3].startswith("ok, max rel err ")
    # every op of both shapes for normops-torch and pytorch, and each shape's copy
    timed = {(r[1], r[2]) for r in by_part["time"] if r[3] == "ok"}
    for shape in SHAPES:
        for op in OPS:
            assert ("normops-torch", f"{shape} {op}") in timed
            assert ("pytorch", f"{shape} {op}") in timed
        assert ("copy (torch)", f"{shape} x, 3 ops' blocks") in timed
    assert done.stdout.rstrip().endswith("passed")


def test_json_holds_the_errors_and_timings(cpu_run):
    done, report = cpu_run
    assert report["device"] == "cpu" and report["quick"] is True
    for row in report["rows"]:
        if row["part"] == "vs reference" and not row["skipped"]:
            assert set(row["details"]["errors"]) == {"y", "dx", "dgamma", "dbeta",
                                                      "running_mean", "running_var"}
            assert max(row["details"]["errors"].values()) < 1e-5
        if row["part"] == "time" and not row["skipped"]:
            assert 0 < row["p25_s"] <= row["median_s"] <= row["p75_s"] and row["gbps"] > 0
            if row["target"] in ("normops-torch", "pytorch"):
                assert row["of_copy"] > 0 and row["over_pytorch"] > 0


def test_the_cupy_part_says_why_it_was_skipped(cpu_run):
    reason = _cupy_reason()
    if reason is None:
        pytest.skip("CuPy finds a GPU here: its part ran")
    done, _ = cpu_run
    rows = _table_rows(done.stdout)
    for target in ("normops-cupy", "normops-cupy-fused"):   # the fused kernels' too
        cupy_rows = [r for r in rows if r[1] == target]
        assert [r[0] for r in cupy_rows] == ["kit", "vs reference", "time"], target
        for row in cupy_rows:
            assert row[3] == f"skipped: {reason}"


def test_strict_makes_a_skipped_part_a_failure():
    if _cupy_reason() is None:
        pytest.skip("CuPy finds a GPU here: nothing is skipped")
    done = _run("--device", "cpu", "--quick", "--skip-kit", "--strict")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "(--strict: a failure); FAILED" in done.stdout


def test_a_missing_cuda_device_is_reported_not_raised():
    """The default --device cuda on a machine without one: the torch part is skipped
    with the reason, and the table still comes out."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = _run("--quick", "--skip-kit")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [r for r in _table_rows(done.stdout) if r[1] == "normops-torch"]
    assert rows and all(r[3].startswith("skipped: torch.cuda.is_available() is False") for r in rows)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_the_shell_script_parses():
    done = subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert os.access(ROOT / "benchmarks" / "gpu_check.sh", os.X_OK)
