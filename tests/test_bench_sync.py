"""python -m normops bench --ranks N: synchronized batch_norm timed against the local op
on N MPI ranks. The run needs mpi4py, mpiexec (skipped without them unless
NORMOPS_REQUIRE_MPI=1) and the built cpu backend. No assertion on how fast anything is:
only that every row, spread and ratio is reported."""
import json
import re
import subprocess
import sys

import pytest

import normops
from normops import _bench, _mpirun
from normops._bench import sync as bench_sync
from optional_mpi import require_mpi


def test_bench_ranks_quick_reports_every_variant(tmp_path):
    if not dict((i.name, i.available) for i in normops.backends()).get("cpu"):
        pytest.skip("the cpu backend is not built here")
    require_mpi()
    path = tmp_path / "sync.json"
    done = subprocess.run([sys.executable, "-m", "normops", "bench", "--ranks", "2", "--quick",
                           "--json", str(path)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "OMP_NUM_THREADS=1 for every rank" in out
    assert "one thread per rank (OMP_NUM_THREADS=1, normops threads 1)" in out
    for shape in bench_sync.SHAPES:
        for op, variant in bench_sync.VARIANTS:
            row = rf"^{shape.name}\s+{op}\s+{variant}\s+\d+\.\d+\s+\d"
            assert re.search(row, out, re.M), (shape, op, variant)
        assert re.search(rf"^{shape.name}\s+forward\s+sync\s+.*\d\.\d\d \(\d\.\d\d-\d\.\d\d\)\s+"
                         rf"\d\.\d\d \(\d\.\d\d-\d\.\d\d\)$", out, re.M)
        assert f"{shape.name} (" in out and "communication" in out
    report = json.loads(path.read_text())
    assert report["meta"]["ranks"] == 2 and report["meta"]["omp_num_threads"] == "1"
    assert report["meta"]["normops_threads"] == 1 and report["meta"]["mode"] == "quick"
    rows = report["rows"]
    assert [(r["shape"], r["op"], r["variant"]) for r in rows] == [
        (s.name, op, v) for s in bench_sync.SHAPES for op, v in bench_sync.VARIANTS]
    for row in rows:
        assert row["rounds"] == bench_sync.QUICK.least
        assert 0 < row["min_s"] <= row["p25_s"] <= row["median_s"] <= row["p75_s"] <= row["max_s"]
        if row["op"] in ("forward", "backward") and row["variant"] != "local fused":
            r = row["over_local_fused"]
            assert 0 < r["round_p25"] <= r["ratio"] <= r["round_p75"] and r["of_medians"] > 0
        if row["variant"] == "sync":
            assert row["over_local_composed"]["ratio"] > 0
        if row["op"] == "copy":
            assert row["gbps"] > 0


def test_bench_ranks_without_mpi_names_the_extra(monkeypatch, capsys):
    monkeypatch.setattr(_mpirun, "find_mpiexec", lambda: None)
    assert _bench.main(["--ranks", "2", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m normops bench: ") and 'pip install "normops[mpi]"' in err


def test_rounds_policy():
    assert bench_sync.QUICK.count(0.001) == bench_sync.QUICK.count(10.0) == 3
    assert bench_sync.FULL.count(1.0) == bench_sync.FULL.least
    assert bench_sync.FULL.count(1e-6) == bench_sync.FULL.most
