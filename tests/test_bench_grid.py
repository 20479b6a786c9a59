"""``python -m normops bench --grid`` at its tiniest (one layout, one channel count, the
256 KB size, one dtype, one thread, one timed call per callable), and its pieces on their
own: the shapes derived from a size, the verdicts over synthetic cells, the options. No
assertion on how fast anything is."""
import json
import math
import subprocess
import sys

import numpy
import pytest

import normops
from normops import _bench
from normops._bench import grid, grid_runs, noise, plot, shapes
from normops._bench.columns import GB, OPS, PASSES

TINY = ["--grid", "--layouts", "NHWC", "--channels", "128", "--sizes", "256KB", "--dtypes",
        "float32", "--threads-list", "1", "--repeats", "1"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _needs_cpu_and_torch():
    pytest.importorskip("torch")
    if not dict((i.name, i.available) for i in normops.backends()).get("cpu"):
        pytest.skip("the cpu backend is not built here")


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("layout", shapes.LAYOUTS)
def test_sized_shapes_hold_exactly_the_size_with_the_channel_axis_right(layout):
    spatial = len(layout) - 2
    for size in grid.SIZES:
        nbytes = grid.parse_size(size)
        for dtype in grid.DTYPES:
            itemsize = numpy.dtype(dtype).itemsize
            for c in grid.CHANNELS:
                shape = shapes.sized_shape(layout, c, nbytes, itemsize)
                assert shape.layout == layout and len(shape.dims) == len(layout)
                assert math.prod(shape.dims) * itemsize == nbytes
                assert shape.channels == c and shape.dims[shape.axis] == c
                assert shape.axis == (-1 if layout in ("NHWC", "NDHWC") else 1)
                n = shape.dims[0]
                sides = list(shape.dims[2:]) if shape.axis == 1 else list(shape.dims[1:-1])
                assert len(sides) == spatial and len(set(sides)) <= 1
                if spatial:
                    s = sides[0]
                    # s: the largest power of two with s ** (d + 1) <= N s ** d
                    assert s & (s - 1) == 0 and s ** (spatial + 1) <= n * s ** spatial
                    assert (2 * s) ** (spatial + 1) > n * s ** spatial
                    assert s <= n <= 2 ** spatial * s   # near-equal: N = s x 2 ** (k mod (d + 1))


def test_sized_shape_examples_and_the_nearest_size():
    assert shapes.sized_shape("NCHW", 64, 256 * 2**20, 4).dims == (256, 64, 64, 64)
    assert shapes.sized_shape("NHWC", 128, 256 * 2**10, 4).dims == (8, 8, 8, 128)
    assert shapes.sized_shape("NDHWC", 16, 32 * 2**20, 8).dims == (64, 16, 16, 16, 16)
    assert shapes.sized_shape("NC", 2048, 256 * 2**10, 8).dims == (16, 2048)
    # 100 channels do not divide 256 KB: N is the nearest whole number
    shape = shapes.sized_shape("NCHW", 100, 256 * 2**10, 4)
    assert shape.dims == (10, 100, 8, 8)        # 655.36 per channel: 8 x 8 sides, N = 10
    # more channels than elements: one sample
    assert shapes.sized_shape("NC", 2048, 1024, 4).dims == (1, 2048)


def test_parse_size():
    assert grid.parse_size("256KB") == 256 * 1024 and grid.parse_size("4mb") == 4 * 2**20
    assert grid.parse_size("1GB") == 2**30
    for bad in ("256", "KB", "0MB", "1.5MB", "4TB"):
        with pytest.raises(ValueError):
            grid.parse_size(bad)


def test_shared_inputs_are_views_of_one_draw():
    x, dy = shapes.flat_data(4096, "float64")
    a = shapes.shared_inputs(shapes.Shape("NCHW", (4, 16, 4, 4)), x, dy, "float64")
    b = shapes.shared_inputs(shapes.Shape("NDHWC", (2, 2, 2, 2, 16)), x, dy, "float64")
    assert a.x.base is x and b.dy.base is dy and a.x.flags.c_contiguous
    assert a.gamma.shape == (16,) and a.x.dtype == a.gamma.dtype == numpy.float64
    assert numpy.array_equal(shapes.flat_data(4096, "float64")[0], x)   # the same every run


def test_pytorch_takes_ndhwc_as_channels_last_3d_on_the_same_memory():
    torch = pytest.importorskip("torch")
    x, dy = shapes.flat_data(2 * 3 * 3 * 3 * 8, "float32")
    inp = shapes.shared_inputs(shapes.Shape("NDHWC", (2, 3, 3, 3, 8)), x, dy, "float32")
    ops = _bench.pytorch_ops(torch, inp)
    y = ops["inference"]()
    assert y.shape == (2, 8, 3, 3, 3) and y.is_contiguous(memory_format=torch.channels_last_3d)
    want = (inp.x - inp.running_mean) / numpy.sqrt(inp.running_var + 1e-5) * inp.gamma + inp.beta
    numpy.testing.assert_allclose(y.permute(0, 2, 3, 4, 1).numpy(), want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- verdicts

def _cell(threads, ratio, fraction, nbytes, noisy=False, op="backward"):
    return {"layout": "NC", "channels": 16, "size": "4MB", "dtype": "float32", "threads": threads,
            "op": op, "nbytes": nbytes, "cpu_over_pytorch": ratio,
            "cpu_fraction_of_copy": fraction, "noisy": noisy}


def test_grid_verdicts_over_synthetic_cells():
    big = grid.LARGE_BYTES
    cells = [_cell(1, 0.25, 0.95, big), _cell(1, 1.0, 0.50, big - 1),     # small: no bandwidth verdict
             _cell(2, 0.5, 0.84, big, noisy=True), _cell(2, None, None, 2 * big)]
    summary = grid.summarize(cells, {"start": 0.1, "end": 0.2}, (1, 2))
    assert summary["cells"] == 4 and summary["compared"] == 3
    assert summary["geomean_cpu_over_pytorch"] == pytest.approx((0.25 * 1.0 * 0.5) ** (1 / 3))
    assert summary["geomean_target_met"] is False and summary["geomean_target"] == 0.45
    assert summary["not_faster"] == [{"cell": "NC C=16 4MB float32 threads=1 backward",
                                      "cpu_over_pytorch": 1.0}]
    assert summary["large_cells"] == 2
    assert summary["below_bandwidth"] == [{"cell": "NC C=16 4MB float32 threads=2 backward",
                                           "cpu_fraction_of_copy": 0.84}]
    assert summary["noisy_cells"] == ["NC C=16 4MB float32 threads=2 backward"]
    one, two = summary["by_threads"]["1"], summary["by_threads"]["2"]
    assert one["geomean_cpu_over_pytorch"] == pytest.approx(0.5) and one["geomean_target_met"] is False
    assert two["geomean_cpu_over_pytorch"] == pytest.approx(0.5) and two["noisy_cells"] != []
    assert one["below_bandwidth"] == [] and one["large_cells"] == 1
    assert summary["noise"]["warning"].startswith("WARNING: 1 of 4 cells are noisy")
    met = grid.stats([_cell(1, 0.4, 0.9, big)])
    assert met["geomean_target_met"] is True and met["not_faster"] == met["below_bandwidth"] == []


# ---------------------------------------------------------------------------- whole runs

def _check_grid_report(report):
    cells, summary = report["cells"], report["summary"]
    assert [c["op"] for c in cells] == list(OPS)
    assert report["meta"]["grid"] == {"layouts": ["NHWC"], "channels": [128], "sizes": ["256KB"],
                                      "dtypes": ["float32"], "threads": [1], "ops": list(OPS)}
    assert report["meta"]["repeat_policy"]["fixed"] == 1
    for c in cells:
        assert (c["layout"], c["channels"], c["size"], c["dtype"], c["threads"]) == (
            "NHWC", 128, "256KB", "float32", 1)
        assert c["dims"] == [8, 8, 8, 128] and c["axis"] == -1
        assert c["nbytes"] == c["size_bytes"] == 256 * 1024
        cpu, pt = c["cells"]["cpu"], c["cells"]["pytorch"]
        for t in (cpu, pt):
            assert t["repeats"] == 1 and t["min_s"] == t["p25_s"] == t["median_s"] == t["max_s"] > 0
            assert t["iqr_over_median"] == 0
        assert c["cpu_over_pytorch"] == pytest.approx(cpu["median_s"] / pt["median_s"])
        assert c["copy_gbps"] == max(k["gbps"] for k in c["copy_kernels"].values())
        assert c["cpu_fraction_of_copy"] == pytest.approx(
            PASSES[c["op"]] * c["nbytes"] / cpu["median_s"] / GB / c["copy_gbps"])
        assert c["noisy"] is False and c["noisy_columns"] == []   # one call: no spread
    assert summary["cells"] == 3 and summary["noisy_cells"] == [] and summary["compared"] == 3
    ratios = [c["cpu_over_pytorch"] for c in cells]
    assert summary["geomean_cpu_over_pytorch"] == pytest.approx(math.prod(ratios) ** (1 / 3))
    assert summary["not_faster"] == [{"cell": grid.label(c), "cpu_over_pytorch": c["cpu_over_pytorch"]}
                                     for c in cells if c["cpu_over_pytorch"] >= 1]
    assert summary["large_cells"] == 0 and summary["below_bandwidth"] == []
    assert set(summary["by_threads"]) == {"1"} and summary["by_threads"]["1"]["cells"] == 3
    assert summary["noise"]["threshold"] == noise.NOISY_SPREAD


def test_grid_tiny_writes_json_and_png(tmp_path, capsys):
    _needs_cpu_and_torch()
    json_path, png_path = tmp_path / "grid.json", tmp_path / "grid.png"
    args = [*TINY, "--json", str(json_path)]
    args += ["--png", str(png_path)] if _has_matplotlib() else ["--no-png"]
    assert _bench.main(args) == 0
    captured = capsys.readouterr()
    _check_grid_report(json.loads(json_path.read_text()))
    if _has_matplotlib():
        assert png_path.read_bytes()[:8] == PNG_MAGIC
    out = captured.out
    for op in OPS:
        assert any(line.startswith("NHWC") and op in line and "NHWC-8x8x8x128" in line
                   for line in out.splitlines())
    assert "all cells: 3 cells, 0 noisy; geometric mean cpu/pytorch " in out
    assert "1 thread: 3 cells" in out and "(target <= 0.45: " in out
    assert "cells of 32 MB or more below 85% of the copy bandwidth: none" in out
    assert f"JSON: {json_path}" in out
    # progress goes to stderr, one line per shape and thread count
    assert "[1/1] NHWC C=128 256KB float32 threads=1 (NHWC-8x8x8x128)" in captured.err


def test_grid_cli_writes_into_the_current_directory_by_default(tmp_path):
    _needs_cpu_and_torch()
    done = subprocess.run([sys.executable, "-m", "normops", "bench", *TINY, "--dtypes", "float64",
                           "--ops", "inference", "--layouts", "NCDHW"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / grid.JSON_PATH).read_text())
    (cell,) = report["cells"]
    assert cell["op"] == "inference" and cell["dtype"] == "float64" and cell["layout"] == "NCDHW"
    assert cell["dims"] == [4, 128, 4, 4, 4] and cell["axis"] == 1 and cell["nbytes"] == 256 * 1024
    if _has_matplotlib():
        assert (tmp_path / grid.PNG_PATH).read_bytes()[:8] == PNG_MAGIC
    else:
        assert 'pip install "normops[bench]"' in done.stderr


def test_grid_without_matplotlib_says_what_to_install(monkeypatch, capsys):
    _needs_cpu_and_torch()
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib fails
    assert _bench.main(TINY) == 2
    captured = capsys.readouterr()
    assert captured.out == ""   # refused before timing anything
    assert captured.err.startswith("python -m normops bench: the PNG heatmap needs matplotlib: ")
    assert plot.INSTALL in captured.err and "--no-png" in captured.err


def test_grid_options_need_grid(capsys):
    assert _bench.main(["--layouts", "NC", "--png", "x.png"]) == 2
    assert "--layouts, --png: only with --grid" in capsys.readouterr().err


def test_the_default_bench_options_are_refused_with_grid(capsys):
    assert _bench.main(["--grid", "--shapes", "NC-256x1024", "--dtype", "float64"]) == 2
    assert ("--shapes, --dtype: not with --grid (--dtypes picks the grid's)"
            in capsys.readouterr().err)
    assert _bench.main(["--overhead", "--backend", "torch"]) == 2
    assert "--backend: not with --overhead" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--grid", "--layouts", "NCW"], "'NCW' is not one of NC, NCHW, NHWC, NCDHW, NDHWC"),
    (["--grid", "--sizes", "4TB"], "a size is a whole number and KB, MB or GB"),
    (["--grid", "--threads-list", "0"], "must be >= 1"),
    (["--grid", "--ranks", "2"], "not allowed with argument"),
])
def test_grid_refuses_bad_options(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        _bench.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_grid_lists_take_commas_and_spaces():
    args = _bench.flatten(_bench.build_parser().parse_args(
        ["--grid", "--channels", "16,64", "128", "16", "--sizes", "256kb"]))
    assert args.channels == [16, 64, 128] and args.sizes == ["256KB"]
    axes = grid.selection(args)
    assert axes["layouts"] == grid.LAYOUTS and axes["threads"] == grid.THREADS


# ---------------------------------------------------------------------------- runs as one

def _run(cells, busy=False):
    return {"meta": {"mode": "grid"}, "cells": cells, "summary": {"noise": {"machine_busy": busy}}}


def test_runs_combine_into_medians_per_cell():
    big = grid.LARGE_BYTES
    runs = [_run([_cell(1, 0.9, 0.80, big), _cell(2, 1.2, 0.5, big, noisy=True, op="inference")]),
            _run([_cell(1, 0.3, 0.95, big), _cell(2, 0.4, 0.6, big, noisy=True, op="inference")]),
            _run([_cell(1, 0.5, 0.90, big, noisy=True), _cell(2, 0.6, 0.7, big, op="inference")],
                 busy=True)]
    result = grid_runs.combine(runs)
    first, second = result["cells"]
    assert (first["cpu_over_pytorch"], first["cpu_fraction_of_copy"]) == (0.5, 0.90)
    assert (second["cpu_over_pytorch"], second["cpu_fraction_of_copy"]) == (0.6, 0.6)
    assert [r["cpu_over_pytorch"] for r in first["runs"]] == [0.9, 0.3, 0.5]
    assert first["noisy"] is False and second["noisy"] is True   # noisy in 1 and 2 of 3 runs
    summary = result["summary"]
    assert summary["geomean_cpu_over_pytorch"] == pytest.approx((0.5 * 0.6) ** 0.5)
    assert summary["not_faster"] == [] and summary["noisy_cells"] == [grid.label(second)]
    assert summary["below_bandwidth"] == [{"cell": grid.label(second), "cpu_fraction_of_copy": 0.6}]
    assert summary["by_threads"]["1"]["cells"] == 1
    warning = summary["noise"]["warning"]
    assert "1 of 2 cells are noisy" in warning and "busy during 1 of the 3 runs" in warning
    quiet = grid_runs.combine([_run([_cell(1, 0.5, 0.9, big)])] * 3)["summary"]["noise"]
    assert quiet["warning"] is None and quiet["busy_runs"] == 0


def test_runs_of_different_grids_are_refused():
    with pytest.raises(ValueError, match="same grid cells"):
        grid_runs.combine([_run([_cell(1, 0.5, 0.9, 1)]), _run([_cell(2, 0.5, 0.9, 1)])])
