"""``python -m normops bench`` in its smallest form: one small shape, one timed call per
cell. Runs with whichever backends exist (the reference one at least; torch optional)."""
import json
import subprocess
import sys

import pytest

import normops
from normops import _bench

TINY = ["--shapes", "NC-256x1024", "--repeats", "1", "--threads", "1"]


def _registered(name):
    return any(info.name == name for info in normops.backends())


@pytest.fixture
def cpu_stand_in():
    """Until the cpu backend is built, the reference backend stands in under its name so
    that every column and the footer get exercised."""
    if _registered("cpu"):
        yield
        return
    normops.register_backend("cpu", normops.get_backend("reference"))
    try:
        yield
    finally:
        normops.unregister_backend("cpu")


def _check_report(report, stdout):
    rows = report["rows"]
    assert [r["op"] for r in rows] == list(_bench.OPS)
    for op in _bench.OPS:
        assert any(line.startswith("NC-256x1024") and op in line for line in stdout.splitlines())
    for row in rows:
        assert row["shape"] == "NC-256x1024" and row["nbytes"] == 256 * 1024 * 4
        # the row's baseline: the faster copy kernel timed in this op's own blocks
        assert row["copy_gbps"] == max(k["gbps"] for k in row["copy_kernels"].values()) > 0
        assert row["copy_kernels"].keys() == report["copy"]["NC-256x1024"]["kernels"].keys()
        assert "reference" in row["cells"]
        for cell in row["cells"].values():
            assert cell["median_s"] > 0 and cell["repeats"] == 1
    copy = report["copy"]["NC-256x1024"]["kernels"]["numpy.copyto"]
    assert copy["median_s"] > 0 and copy["gbps"] > 0
    assert {"geomean_cpu_over_torch", "max_cpu_over_torch",
            "cpu_faster_than_torch_everywhere"} <= report["summary"].keys()
    assert report["meta"]["dtype"] == "float32" and report["meta"]["threads"] == 1


def test_bench_main_writes_table_and_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert _bench.main([*TINY, "--json", str(path)]) == 0
    _check_report(json.loads(path.read_text()), capsys.readouterr().out)


def test_bench_every_column_with_a_cpu_backend(tmp_path, capsys, cpu_stand_in):
    if not dict((i.name, i.available) for i in normops.backends())["cpu"]:
        pytest.skip("the cpu backend is registered but unavailable here")
    path = tmp_path / "bench.json"
    assert _bench.main([*TINY, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(path.read_text())
    _check_report(report, out)
    for row in report["rows"]:
        assert row["cells"]["cpu"]["median_s"] > 0
        assert row["reference_over_cpu"] > 0 and row["cpu_gbps"] > 0
        assert row["cpu_fraction_of_copy"] == pytest.approx(row["cpu_gbps"] / row["copy_gbps"])
        if "torch" in row["cells"]:
            assert row["cpu_over_torch"] > 0
    if "torch" in report["rows"][0]["cells"]:
        assert "cpu faster than torch on every row: " in out
        assert report["summary"]["rows_compared"] == 3


def test_bench_cli(tmp_path):
    path = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "normops", "bench", *TINY, "--json", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    _check_report(json.loads(path.read_text()), done.stdout)


def test_bench_rejects_an_unknown_shape(capsys):
    with pytest.raises(SystemExit) as exc:
        _bench.main(["--shapes", "NC-1x1"])
    assert exc.value.code == 2 and "NC-256x1024" in capsys.readouterr().err
