"""``python -m normops bench --dtype float16|bfloat16``: one small shape, one timed call per
cell (as tests/test_bench.py), plus the pieces of the half mode on their own: tensors and
copies on the half arrays' memory, the inputs, which rows are DRAM-sized, the targets.
No assertion on how fast anything is."""
import json
import subprocess
import sys

import numpy
import pytest

import normops
from normops import _bench
from normops._bench import half as bench_half

TINY = ["--shapes", "NC-256x1024", "--repeats", "1", "--threads", "1"]
NBYTES = 256 * 1024 * 2


def _available(name):
    return dict((i.name, i.available) for i in normops.backends()).get(name, False)


def _half(name):
    if name == "bfloat16":
        pytest.importorskip("ml_dtypes")
    return bench_half.numpy_dtype(name)


@pytest.fixture(params=["float16", "bfloat16"])
def half(request):
    _half(request.param)
    return request.param


# ---------------------------------------------------------------------------- whole runs

def _check_half_report(report, out, dtype):
    meta, rows, summary = report["meta"], report["rows"], report["summary"]
    assert meta["dtype"] == dtype and meta["parameter_dtype"] == "float32"
    assert meta["last_level_cache_bytes"] > 0 and meta["bandwidth_target"] == 0.85
    assert [r["op"] for r in rows] == list(_bench.OPS)
    for row in rows:
        # half bytes: the copy baseline and the bandwidth count x's own size
        assert row["nbytes"] == NBYTES and row["dram_sized"] is False
        assert row["copy_gbps"] == max(k["gbps"] for k in row["copy_kernels"].values()) > 0
        assert "reference" in row["cells"]
        for cell in row["cells"].values():
            assert cell["median_s"] > 0 and cell["repeats"] == 1
        if "cpu" in row["cells"]:
            assert row["reference_over_cpu"] > 0 and row["cpu_gbps"] > 0
            assert row["cpu_fraction_of_copy"] == pytest.approx(row["cpu_gbps"] / row["copy_gbps"])
            if "pytorch" in row["cells"]:
                assert row["cpu_over_pytorch"] == pytest.approx(
                    row["cells"]["cpu"]["median_s"] / row["cells"]["pytorch"]["median_s"])
    assert report["copy"]["NC-256x1024"]["nbytes"] == NBYTES
    if _available("cpu"):
        # copy_into takes bfloat16 through a uint16 view of the same memory
        assert report["copy"]["NC-256x1024"]["kernels"].keys() == {"numpy.copyto", "copy_into"}
    assert summary["dram_sized_rows"] == [] and summary["bandwidth_target_met"] is None
    assert f"dtype {dtype} (parameters float32)  threads 1" in out
    assert "DRAM-sized rows (x at least the last-level cache" in out
    header = next(line for line in out.splitlines() if line.startswith("shape "))
    assert header.split()[-1] == "DRAM" and "cpu/pytorch" in header
    assert f"targets for {dtype} (parameters float32):" in out
    assert "cpu/copy >= 85% on every DRAM-sized row: n/a (no DRAM-sized row" in out
    if _available("cpu") and "pytorch" in rows[0]["cells"]:
        assert summary["rows_compared"] == 3
        verdict = "yes" if summary["cpu_faster_than_pytorch_everywhere"] else "no"
        assert f"  cpu faster than pytorch on every row: {verdict}" in out


def test_bench_half_writes_table_and_json(tmp_path, capsys, half):
    path = tmp_path / "bench.json"
    assert _bench.main([*TINY, "--dtype", half, "--json", str(path)]) == 0
    _check_half_report(json.loads(path.read_text()), capsys.readouterr().out, half)


def test_bench_half_cli(tmp_path):
    _half("bfloat16")
    path = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "normops", "bench", *TINY, "--dtype", "bfloat16",
                           "--json", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    _check_half_report(json.loads(path.read_text()), done.stdout, "bfloat16")


def test_bench_bfloat16_with_the_torch_backend(tmp_path, capsys):
    """--backend torch gets bfloat16 tensors on the arrays' memory (through int16), NHWC
    included (axis=-1), with float32 parameters. (float16 tensors come from
    torch.from_numpy as float32 ones do.)"""
    pytest.importorskip("torch")
    half = "bfloat16"
    _half(half)
    if not _available("cpu"):
        pytest.skip("the cpu backend is not built here")
    path = tmp_path / "bench.json"
    assert _bench.main([*TINY, "--dtype", half, "--backend", "torch", "--json", str(path),
                        "--shapes", "NC-256x1024,NHWC-32x56x56x64"]) == 0
    out = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert report["meta"]["backend_arrays"] == "torch"
    for row in report["rows"]:
        assert {"cpu", "torch", "pytorch"} <= row["cells"].keys()
        assert row["backend_over_cpu"] > 0 and row["cpu_over_pytorch"] > 0
    assert report["summary"]["backend_rows_compared"] == 6
    assert "torch within 10% of cpu on every row: " in out
    assert f"targets for {half} (parameters float32):" in out


def test_bench_float32_has_no_half_fields(tmp_path, capsys):
    """float32 (and float64) runs print and record what they did before the half mode."""
    path = tmp_path / "bench.json"
    assert _bench.main([*TINY, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert "parameter_dtype" not in report["meta"] and "bandwidth_target" not in report["summary"]
    assert all("dram_sized" not in r for r in report["rows"])
    assert "dtype float32  threads 1" in out
    assert "targets for" not in out and "DRAM" not in out


def test_bench_refuses_bfloat16_without_ml_dtypes(monkeypatch, capsys):
    def missing(name):
        raise ImportError(f"bfloat16 NumPy arrays need ml_dtypes: {normops._halves.BF16_INSTALL}")

    monkeypatch.setattr(bench_half, "numpy_dtype", missing)
    assert _bench.main([*TINY, "--dtype", "bfloat16"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("python -m normops bench: --dtype bfloat16: ")
    assert "ml_dtypes" in captured.err


# ---------------------------------------------------------------------------- the pieces

def test_half_inputs_are_the_float32_data_rounded_with_float32_parameters(half):
    dtype = _half(half)
    for shape in (_bench.SHAPES_BY_NAME["NC-256x1024"], _bench.SHAPES_BY_NAME["NCHW-64x256x14x14"]):
        h = _bench.make_inputs(shape, dtype)
        f = _bench.make_inputs(shape, numpy.dtype(numpy.float32))
        assert h.x.dtype == h.dy.dtype == dtype and h.x.shape == shape.dims
        assert numpy.array_equal(h.x, f.x.astype(dtype)) and numpy.array_equal(h.dy, f.dy.astype(dtype))
        for name in ("gamma", "beta", "running_mean", "running_var"):
            a, b = getattr(h, name), getattr(f, name)
            assert a.dtype == numpy.float32 and numpy.array_equal(a, b)


def test_bfloat16_tensor_shares_the_arrays_memory():
    torch = pytest.importorskip("torch")
    dtype = _half("bfloat16")
    a = numpy.zeros((4, 3), dtype)
    t = bench_half.as_tensor(torch, a)
    assert t.dtype == torch.bfloat16 and t.shape == a.shape and t.stride() == (3, 1)
    assert t.data_ptr() == a.ctypes.data
    t[1, 2] = 1.5                      # a write through the tensor shows in the array
    assert a[1, 2] == 1.5 and a.sum() == 1.5
    a[0, 0] = -2.0                     # and the other way round
    assert t[0, 0].item() == -2.0
    assert bench_half.as_tensor(torch, t) is t


def test_half_tensors_of_the_bench_share_memory_and_keep_channels_last(half):
    torch = pytest.importorskip("torch")
    dtype = _half(half)
    inp = _bench.make_inputs(_bench.SHAPES_BY_NAME["NHWC-32x56x56x64"], dtype)
    tensors = _bench.as_arrays("torch", torch, inp)
    assert tensors.x.dtype == getattr(torch, half) and tensors.gamma.dtype == torch.float32
    tensors.x[0, 0, 0, 0] = 3.0
    assert inp.x[0, 0, 0, 0] == 3.0
    assert tensors.x.permute(0, 3, 1, 2).is_contiguous(memory_format=torch.channels_last)
    # PyTorch takes half x with float32 weight and running statistics, forward and backward
    ops = _bench.pytorch_ops(torch, inp)
    y = ops["forward-train"]()
    assert y.dtype == getattr(torch, half) and y.is_contiguous(memory_format=torch.channels_last)
    dx, dgamma, dbeta = ops["backward"]()
    assert dx.dtype == getattr(torch, half) and dgamma.dtype == dbeta.dtype == torch.float32
    assert ops["inference"]().dtype == getattr(torch, half)


def test_half_copies_copy_the_same_bytes(half):
    dtype = _half(half)
    x = numpy.random.default_rng(0).standard_normal(1000, numpy.float32).astype(dtype)
    view = bench_half.buffer_view(x)
    assert view.dtype.itemsize == 2 and view.ctypes.data == x.ctypes.data
    if half == "bfloat16":
        assert view.dtype == numpy.uint16
        memoryview(view)               # what copy_into's buffer arguments go through
    kernels = _bench.copy_kernels()
    if _available("cpu"):
        assert "copy_into" in kernels
    for name, kernel in kernels.items():
        seen = {}

        def spy(dst, src, kernel=kernel):
            seen.update(dst=dst, src=src)
            kernel(dst, src)

        _bench.copy_calls(x, {name: spy if kernel is not numpy.copyto else kernel})[name]()
        if seen:   # a buffer-protocol kernel: it got 2-byte views of x and of its buffer
            assert seen["src"].ctypes.data == x.ctypes.data and seen["dst"].nbytes == x.nbytes
            assert numpy.array_equal(seen["dst"].view(dtype), x)


def test_last_level_cache_from_sysfs(tmp_path):
    def cache(index, level, kind, size):
        d = tmp_path / f"index{index}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")

    cache(0, 1, "Data", "32K")
    cache(1, 1, "Instruction", "32K")
    cache(2, 2, "Unified", "512K")
    cache(3, 3, "Unified", "32768K")
    assert bench_half.last_level_cache(str(tmp_path)) == (32 * 2**20, f"L3, {tmp_path}")
    size, where = bench_half.last_level_cache(str(tmp_path / "none"))
    assert size == bench_half.ASSUMED_LLC_BYTES and where.startswith("assumed")


def test_dram_sized_rows_on_a_32_mib_cache():
    """With this machine's 32 MiB last-level cache: NC-8192x2048 (x of 32 MiB in half
    precision) is DRAM-sized, the 56x56 shapes (12.25 MiB) and the rest are not."""
    llc = 32 * 2**20
    sized = {s.name: bench_half.dram_sized(2 * numpy.prod(s.dims), llc) for s in _bench.SHAPES}
    assert sized == {"NC-256x1024": False, "NC-8192x2048": True, "NCHW-32x64x56x56": False,
                     "NCHW-64x256x14x14": False, "NHWC-32x56x56x64": False}


def _rows(*fractions):
    return [{"shape": "S", "op": op, "nbytes": nbytes, "cpu_fraction_of_copy": f}
            for op, (nbytes, f) in zip(_bench.OPS, fractions)]


@pytest.mark.parametrize("fractions, met, low, below", [
    (((100, 0.95), (100, 0.85), (1, 0.10)), True, 0.85, []),
    (((100, 0.95), (100, 0.84), (1, 0.10)), False, 0.84, ["S backward"]),
    (((100, 0.95), (100, None), (1, 0.10)), None, 0.95, []),   # a DRAM row without cpu
    (((1, 0.95), (1, 0.5), (1, 0.10)), None, None, []),        # no DRAM-sized row
])
def test_half_bandwidth_target(fractions, met, low, below):
    rows = bench_half.mark_rows(_rows(*fractions), llc_bytes=100)
    summary = bench_half.summarize(rows, {"cpu_faster_than_pytorch_everywhere": True})
    assert summary["bandwidth_target_met"] is met
    assert summary["min_cpu_fraction_of_copy_dram"] == low
    assert summary["dram_rows_below_target"] == below
    lines = bench_half.footer_lines({"dtype": "bfloat16", "parameter_dtype": "float32"}, summary)
    assert lines[1] == "  cpu faster than pytorch on every row: yes"
    verdict = {True: "yes", False: "no", None: "n/a"}[met]
    assert lines[2].startswith(f"  cpu/copy >= 85% on every DRAM-sized row: {verdict}")
