"""``python -m normops bench --fused`` in its smallest form: one or two shapes, one thread
count, one or two timed calls per cell. Every column, ratio and verdict reported, the
ratios those of the reported medians and the verdicts those of the ratios; the columns
compute the same thing. No assertion on how fast anything is."""
import json

import numpy
import pytest

import normops
from normops import _bench
from normops._bench import fused, noise
from normops._bench.backends import usable_cpus
from normops._bench.columns import OPS
from normops._bench.shapes import SHAPES_BY_NAME, make_inputs, make_residual

SHAPES = ("NC-256x1024", "NHWC-32x56x56x64")   # one channels-last: axis=-1, NCHW tensors
TINY = ["--fused", "--quick", "--repeats", "2", "--threads", "1"]
COLUMNS = ("fused", "plain", "numpy", "pytorch", "read z")


@pytest.fixture(autouse=True)
def cpu_backend():
    if not dict((i.name, i.available) for i in normops.backends()).get("cpu"):
        pytest.skip("the cpu backend is not built here")


def _section(out, k):
    """The printed report's k-th part: 0 the header, 1 the times, 2 the ratios, 3 the
    targets by shape, 4 the summary (parts are separated by a blank line)."""
    return out.split("\n\n")[k]


def _line(text, *first):
    """The line of ``text`` whose first cells are ``first``."""
    return next(line for line in text.splitlines() if line.split()[:len(first)] == list(first))


def _check(report, out, shapes, threads, columns):
    meta, rows, summary = report["meta"], report["rows"], report["summary"]
    assert meta["mode"] == "fused" and meta["backend"] == "cpu" and meta["dtype"] == "float32"
    assert meta["threads"] == list(threads) and meta["shapes"] == list(shapes)
    assert meta["columns"] == list(columns)
    assert [(r["threads"], r["shape"], r["op"]) for r in rows] == [
        (n, s, op) for n in threads for s in shapes for op in OPS]
    for r in rows:
        assert list(r["cells"]) == [c for c in fused.COLUMNS if c in columns]   # the columns' order
        shape = SHAPES_BY_NAME[r["shape"]]
        assert r["dims"] == list(shape.dims) and r["axis"] == shape.axis
        assert r["nbytes"] == 4 * numpy.prod(shape.dims)
        for name, cell in r["cells"].items():
            assert 0 < cell["min_s"] <= cell["p25_s"] <= cell["median_s"] <= cell["p75_s"] <= cell["max_s"]
            assert cell["iqr_over_median"] == pytest.approx(
                (cell["p75_s"] - cell["p25_s"]) / cell["median_s"])
            assert cell["noisy"] == (cell["iqr_over_median"] > noise.NOISY_SPREAD)
            line = _line(_section(out, 1), str(r["threads"]), r["shape"], r["op"], *name.split())
            assert f"{cell['iqr_over_median']:.0%}" in line
        assert r["noisy_columns"] == [c for c, cell in r["cells"].items() if cell["noisy"]]
        # read z: half the faster copy of z, timed in the op's own blocks
        copy = r["copy_kernels"][r["copy_baseline"]]
        assert copy["median_s"] == min(k["median_s"] for k in r["copy_kernels"].values())
        assert r["cells"]["read z"]["median_s"] == pytest.approx(copy["median_s"] / 2)
        assert r["cells"]["read z"]["repeats"] == copy["repeats"]
        med = {c: cell["median_s"] for c, cell in r["cells"].items()}
        if r["op"] == "backward":
            assert r["fused_over_plain_plus_read_z"] is None and r["within_plain_plus_read_z"] is None
        else:
            assert r["fused_over_plain_plus_read_z"] == pytest.approx(
                med["fused"] / (med["plain"] + med["read z"]))
            assert r["within_plain_plus_read_z"] == (r["fused_over_plain_plus_read_z"] <= 1.15)
        assert r["numpy_over_fused"] == pytest.approx(med["numpy"] / med["fused"])
        assert r["faster_than_numpy"] == (r["numpy_over_fused"] >= 1.6)
        if "pytorch" in columns:
            assert r["fused_over_pytorch"] == pytest.approx(med["fused"] / med["pytorch"])
            assert r["faster_than_pytorch"] == (med["fused"] < med["pytorch"])
        else:
            assert r["fused_over_pytorch"] is None and r["faster_than_pytorch"] is None
        cells = _line(_section(out, 2), str(r["threads"]), r["shape"], r["op"]).split()[3:]
        # "-": the target is not for this op (or the column is missing); n/a: it is, but
        # the column is missing
        shown = [f"{r[t.ratio]:.2f}" if r[t.name] is not None else "-" for t in fused.TARGETS]
        verdicts = [{True: "yes", False: "no", None: "n/a"}[r[t.name]] if r["op"] in t.ops else "-"
                    for t in fused.TARGETS]
        assert cells[:6] == [v for pair in zip(shown, verdicts) for v in pair]
    targets = summary["targets"]
    assert list(targets) == [t.name for t in fused.TARGETS]
    for target in fused.TARGETS:
        record = targets[target.name]
        assert record["bound"] == {"within_plain_plus_read_z": 1.15, "faster_than_numpy": 1.6,
                                   "faster_than_pytorch": 1.0}[target.name]
        judged = [r for r in rows if r[target.name] is not None]
        assert record["rows_compared"] == len(judged)
        verdict = record["met"]
        if not judged:
            assert verdict is None and target.name == "faster_than_pytorch"
            assert f"{target.text}: n/a (pytorch column skipped: " in out
            continue
        assert len(judged) == len([r for r in rows if r["op"] in target.ops])
        assert verdict == all(r[target.name] for r in judged)
        values = [r[target.ratio] for r in judged]
        assert record["worst"] == (min(values) if target.compare == ">=" else max(values))
        assert record["missed"] == [fused.label(r) for r in judged if not r[target.name]]
        assert f"{target.text}: {'yes' if verdict else 'no'} (worst {target.shown} " \
               f"{record['worst']:.2f}, {record['worst_at']}" in out
        # per shape: every op of the shape meets it
        assert [(s["threads"], s["shape"]) for s in record["by_shape"]] == [
            (n, s) for n in threads for s in shapes]
        for s in record["by_shape"]:
            mine = [r for r in judged if (r["threads"], r["shape"]) == (s["threads"], s["shape"])]
            assert s["met"] == all(r[target.name] for r in mine)
            assert s["rows_compared"] == len(mine)
        assert verdict == all(s["met"] for s in record["by_shape"])
    for n in threads:
        for shape in shapes:
            line = _line(_section(out, 3), str(n), shape)
            for target in fused.TARGETS:
                s = next(s for s in targets[target.name]["by_shape"]
                         if (s["threads"], s["shape"]) == (n, shape))
                assert {True: "yes", False: "no", None: "n/a"}[s["met"]] + (
                    f" ({s['worst']:.2f})" if s["worst"] is not None else "") in line
    record = summary["noise"]
    assert record["cells"] == len(rows) and record["threads"] == max(threads)
    assert record["noisy_cells"] == [fused.label(r) for r in rows if r["noisy_columns"]]
    assert record["load_average"] == meta["load_average"]
    assert (record["warning"] is None) == (not record["noisy_cells"] and not record["machine_busy"])
    if record["warning"]:
        assert record["warning"] in out


def test_fused_tiny_writes_table_and_json(tmp_path, capsys):
    pytest.importorskip("torch")
    path = tmp_path / "fused.json"
    assert _bench.main([*TINY, "--shapes", ",".join(SHAPES), "--json", str(path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(path.read_text())
    _check(report, out, SHAPES, (1,), COLUMNS)
    for r in report["rows"]:
        assert all(cell["repeats"] == 2 for cell in r["cells"].values())
    assert report["meta"]["repeat_policy"]["fixed"] == 2 and report["meta"]["notes"] == {}
    assert "skipped" not in out


def test_fused_default_threads_are_one_and_the_machines(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setattr(fused, "usable_cpus", lambda: 2)
    path = tmp_path / "fused.json"
    assert _bench.main(["--fused", "--repeats", "1", "--shapes", "NC-256x1024", "--json", str(path)]) == 0
    _check(json.loads(path.read_text()), capsys.readouterr().out, ("NC-256x1024",), (1, 2), COLUMNS)


def test_fused_without_torch_skips_the_pytorch_column(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fused, "load_torch", lambda: None)
    path = tmp_path / "fused.json"
    assert _bench.main([*TINY, "--repeats", "1", "--shapes", "NC-256x1024", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(path.read_text())
    _check(report, out, ("NC-256x1024",), (1,), tuple(c for c in COLUMNS if c != "pytorch"))
    assert report["meta"]["torch_version"] is None
    assert report["meta"]["notes"] == {"pytorch": "PyTorch is not installed"}
    assert "pytorch column skipped: PyTorch is not installed" in out


def test_fused_float64(capsys):
    pytest.importorskip("torch")
    assert _bench.main([*TINY, "--repeats", "1", "--shapes", "NC-256x1024", "--dtype", "float64"]) == 0
    assert "dtype float64" in capsys.readouterr().out


def _torch_numpy(value):
    return value.permute(0, 2, 3, 1).numpy() if value.dim() == 4 else value.numpy()


@pytest.mark.parametrize("name", SHAPES)
def test_the_columns_compute_the_same(name):
    """fused, numpy and pytorch: y = relu(BN(x) + z), and the backward's (dx, dgamma,
    dbeta, dz); plain: BN(x) (y + z where y > 0 is the epilogue's)."""
    torch = pytest.importorskip("torch")
    shape = SHAPES_BY_NAME[name]
    inp, z = make_inputs(shape, numpy.float32), make_residual(shape, numpy.float32)
    assert z.shape == inp.x.shape and z.dtype == inp.x.dtype
    assert not numpy.array_equal(z, inp.x) and numpy.array_equal(z, make_residual(shape, numpy.float32))
    calls = fused.column_calls(inp, z, torch)
    assert list(calls) == ["fused", "plain", "numpy", "pytorch"]
    for op in OPS:
        if op == "backward":
            want = calls["fused"][op]()
            assert len(want) == 4   # dx, dgamma, dbeta, dz
            numpy_out = calls["numpy"][op]()
            torch_out = calls["pytorch"][op]()
            for k in range(4):
                scale = numpy.abs(want[k]).max()
                assert numpy.allclose(numpy_out[k], want[k], rtol=1e-3, atol=1e-4 * scale)
                got = _torch_numpy(torch_out[k]) if k in (0, 3) else torch_out[k].numpy()
                # PyTorch's y rounds differently: where y is within rounding of 0, its
                # relu mask may differ (2 elements of NHWC-32x56x56x64's 6.4 million),
                # which moves those elements of dz and dx and the sums dgamma and dbeta
                if k in (0, 3):
                    off = ~numpy.isclose(got, want[k], rtol=1e-3, atol=1e-4 * scale)
                    assert off.sum() <= 1e-5 * off.size
                else:
                    assert numpy.allclose(got, want[k], rtol=1e-3, atol=1e-2 * scale)
        else:
            want = calls["fused"][op]()[0]
            assert numpy.allclose(calls["numpy"][op]()[0], want, rtol=1e-4, atol=1e-4)
            assert numpy.allclose(_torch_numpy(calls["pytorch"][op]()), want, rtol=1e-4, atol=1e-4)
            plain = calls["plain"][op]()[0]
            assert numpy.allclose(numpy.maximum(plain + z, 0), want, rtol=1e-4, atol=1e-4)
            assert (want >= 0).all() and (want == 0).any()


def test_fused_refuses_a_half_dtype(capsys):
    assert _bench.main([*TINY, "--dtype", "float16"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--fused times float32 or float64, not --dtype float16" in captured.err


@pytest.mark.parametrize("extra, message", [
    (["--backend", "reference"], "--backend: not with --fused"),
    (["--calls", "3"], "--calls: only with --overhead"),
])
def test_fused_refuses_the_other_modes_options(capsys, extra, message):
    assert _bench.main([*TINY, *extra]) == 2
    assert message in capsys.readouterr().err


def test_fused_and_overhead_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exc:
        _bench.main(["--fused", "--overhead"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_thread_counts():
    class Args:
        threads = None
    assert fused.thread_counts(Args) == tuple(sorted({1, usable_cpus()}))
    Args.threads = 3
    assert fused.thread_counts(Args) == (3,)
