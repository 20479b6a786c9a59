"""``python -m normops bench`` in its smallest form: one small shape, one timed call per
cell. Runs with whichever backends exist (the reference one at least; PyTorch optional).
No assertion on how fast anything is: only that every column and ratio is reported."""
import json
import subprocess
import sys

import pytest

import normops
from normops import _bench
from normops._bench import noise, timing

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
            assert cell["min_s"] <= cell["p25_s"] <= cell["median_s"] <= cell["p75_s"] <= cell["max_s"]
            # one call: no spread, so nothing is noisy
            assert cell["iqr_over_median"] == 0
        assert row["noisy_columns"] == []
        if "cpu" in row["cells"]:
            assert row["cpu_spread"] == row["cells"]["cpu"]["iqr_over_median"]
        else:
            assert row["cpu_spread"] is None
    copy = report["copy"]["NC-256x1024"]["kernels"]["numpy.copyto"]
    assert copy["median_s"] > 0 and copy["gbps"] > 0
    assert {"geomean_cpu_over_pytorch", "max_cpu_over_pytorch",
            "cpu_faster_than_pytorch_everywhere", "noise"} <= report["summary"].keys()
    noise_record = report["summary"]["noise"]
    assert noise_record["threshold"] == noise.NOISY_SPREAD and noise_record["cells"] == 3
    assert noise_record["noisy_cells"] == [] and noise_record["threads"] == 1
    assert noise_record["load_average"] == report["meta"].get("load_average")
    warning = noise_record["warning"]
    assert (warning is None) == (not noise_record["machine_busy"])
    if warning:
        assert warning in stdout and "another process may be busy" in warning
    header = next(line for line in stdout.splitlines() if line.startswith("shape "))
    assert "cpu IQR/med" in header and "noisy" in header
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
        assert row["backend_over_cpu"] is None   # the chosen backend is cpu itself
        if "pytorch" in row["cells"]:
            assert row["cpu_over_pytorch"] > 0
    assert report["meta"]["backend"] == "cpu"
    if "pytorch" in report["rows"][0]["cells"]:
        assert "cpu faster than pytorch on every row: " in out
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


def _cpu_available():
    return dict((i.name, i.available) for i in normops.backends()).get("cpu", False)


def test_bench_times_the_torch_backend_against_cpu(tmp_path, capsys):
    """--backend torch: the torch backend (CPU tensors on the NumPy arrays' memory) is
    timed in cpu's blocks, and each row gets its time, cpu's and their ratio."""
    pytest.importorskip("torch")
    if not _cpu_available():
        pytest.skip("the cpu backend is not built here")
    path = tmp_path / "bench.json"
    # the NHWC shape too: the tensors keep its channels-last layout and axis=-1
    assert _bench.main([*TINY, "--backend", "torch", "--json", str(path), "--shapes",
                        "NC-256x1024,NHWC-32x56x56x64"]) == 0
    out = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert report["meta"]["backend"] == "torch" and report["meta"]["backend_arrays"] == "torch"
    assert [(r["shape"], r["op"]) for r in report["rows"]] == [
        (s, op) for s in ("NC-256x1024", "NHWC-32x56x56x64") for op in _bench.OPS]
    for row in report["rows"]:
        cells = row["cells"]
        assert {"cpu", "torch", "reference", "pytorch"} <= cells.keys()
        assert row["backend_over_cpu"] == pytest.approx(
            cells["torch"]["median_s"] / cells["cpu"]["median_s"])
        assert row["cpu_over_pytorch"] == pytest.approx(
            cells["cpu"]["median_s"] / cells["pytorch"]["median_s"])
        # one call each, in the same (last) block
        assert row["backend_over_cpu_blocks"]["blocks"] == 1
        assert row["backend_over_cpu_blocks"]["min"] == pytest.approx(row["backend_over_cpu"])
    header = next(line for line in out.splitlines() if line.startswith("shape "))
    for column in ("cpu ms", "torch ms", "torch/cpu", "per block", "pytorch ms", "cpu/pytorch"):
        assert column in header
    summary = report["summary"]
    assert summary["backend"] == "torch" and summary["backend_rows_compared"] == 6
    assert summary["geomean_backend_over_cpu"] > 0 and summary["within"] == _bench.WITHIN
    assert "geometric mean torch/cpu over 6 rows: " in out
    assert "torch within 10% of cpu on every row: " in out


def test_bench_times_the_array_api_backend_on_numpy_arrays(capsys):
    if not _cpu_available():
        pytest.skip("the cpu backend is not built here")
    if not dict((i.name, i.available) for i in normops.backends()).get("array-api"):
        pytest.skip("the array-api backend is unavailable (array-api-compat missing)")
    assert _bench.main([*TINY, "--backend", "array-api"]) == 0
    out = capsys.readouterr().out
    assert "backend array-api on the NumPy arrays" in out
    assert "array-api/cpu" in out and "geometric mean array-api/cpu over 3 rows" in out


@pytest.mark.parametrize("name, expected", [
    ("no-such-backend", "unknown backend 'no-such-backend'; known backends: "),
    ("pytorch", "PyTorch's own batch norm is always timed, as the 'pytorch' column"),
])
def test_bench_refuses_an_unknown_backend(capsys, name, expected):
    assert _bench.main([*TINY, "--backend", name]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""   # nothing timed, no table
    assert captured.err.startswith("python -m normops bench: ") and expected in captured.err


def test_bench_refuses_an_unavailable_backend(capsys):
    """A backend that cannot load here (cupy without CuPy or a GPU) is named with why."""
    def broken():
        raise normops.BackendUnavailableError("no such device here")

    normops.register_backend("bench-test-unavailable", broken)
    try:
        assert _bench.main([*TINY, "--backend", "bench-test-unavailable"]) == 2
    finally:
        normops.unregister_backend("bench-test-unavailable")
    err = capsys.readouterr().err
    assert "backend 'bench-test-unavailable' is not available: no such device here" in err


def test_bench_refuses_a_backend_for_gpu_arrays(capsys):
    """A backend picked for another library's arrays (cupy's, on a GPU) is refused even
    when it loads: the bench times the cpu."""
    normops.register_backend("bench-test-gpu", normops.get_backend("reference"),
                             array_module="cupy", priority=-100)
    try:
        assert _bench.main([*TINY, "--backend", "bench-test-gpu"]) == 2
    finally:
        normops.unregister_backend("bench-test-gpu")
    err = capsys.readouterr().err
    assert "works on cupy arrays" in err and "benchmarks/gpu_check.sh" in err


def test_bench_cli_exits_non_zero_without_a_traceback_on_an_unknown_backend():
    done = subprocess.run([sys.executable, "-m", "normops", "bench", *TINY, "--backend", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown backend 'nope'" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------------------- noise

def test_relative_spread_and_the_noisy_classifier():
    quiet = timing.timing_of([1.0, 1.01, 1.02, 1.03, 1.04])
    assert quiet.median_s == 1.02 and quiet.min_s == 1.0 and quiet.max_s == 1.04
    assert quiet.p25_s == 1.01 and quiet.p75_s == 1.03
    assert quiet.relative_spread == pytest.approx(0.02 / 1.02)
    assert not noise.is_noisy(quiet)
    # the quartiles 1.0 and 1.2 around a median of 1.1: IQR/median 0.18 > 10%
    spread = timing.timing_of([0.9, 1.0, 1.1, 1.2, 5.0])
    assert spread.relative_spread == pytest.approx(0.2 / 1.1) and noise.is_noisy(spread)
    assert not noise.is_noisy(spread, threshold=0.2)
    # on the threshold itself: not noisy (IQR/median must exceed it)
    edge = timing.timing_of([0.95, 0.95, 1.0, 1.05, 1.05])
    assert edge.relative_spread == pytest.approx(0.1)
    assert noise.is_noisy(edge, threshold=edge.relative_spread) is False
    # one outlier beyond the quartiles does not make a cell noisy; the min-max shows it
    outlier = timing.timing_of([1.0] * 7 + [3.0])
    assert outlier.relative_spread == 0 and outlier.max_s == 3.0
    assert noise.noisy_names({"cpu": quiet, "pytorch": spread, "copy": outlier}) == ["pytorch"]


@pytest.mark.parametrize("load, threads, busy", [
    (None, 1, None),
    ({"start": 0.4, "end": 1.4}, 1, False),     # the end counts this run's own thread
    ({"start": 0.6, "end": 1.0}, 1, True),      # busy before the run started
    ({"start": 0.1, "end": 1.6}, 1, True),
    ({"start": 0.1, "end": 2.4}, 2, False),
])
def test_machine_busy_rule(load, threads, busy):
    assert noise.machine_busy(load, threads) is busy


def test_noise_warning_line():
    quiet = noise.assess([], 15, {"start": 0.1, "end": 1.0}, 2)
    assert quiet["warning"] is None and quiet["machine_busy"] is False
    loud = noise.assess(["A x", "B y", "C z"], 15, {"start": 2.3, "end": 2.9}, 2)
    assert loud["noisy_cells"] == ["A x", "B y", "C z"] and loud["machine_busy"] is True
    assert loud["warning"] == (
        "WARNING: 3 of 15 cells are noisy (IQR/median > 10%); another process may be busy "
        "(load average 2.30 at the start, 2.90 at the end; this run's threads: 2, margin 0.5): "
        "these numbers are not worth quoting")
    assert noise.assess(["A x"], 15, None, 2)["warning"].startswith("WARNING: 1 of 15 cells")
