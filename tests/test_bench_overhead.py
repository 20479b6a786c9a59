"""``python -m normops bench --overhead`` with a few calls per loop and two rounds: every
shape, op and column reported, per call, with its spread and the target's verdict. No
assertion on how fast anything is."""
import json

import pytest

import normops
from normops import _bench
from normops._bench import noise, overhead
from normops._bench.columns import OPS

COLUMNS = ("cpu", "pytorch", "aten")


def test_overhead_tiny_writes_table_and_json(tmp_path, capsys):
    pytest.importorskip("torch")
    if not dict((i.name, i.available) for i in normops.backends()).get("cpu"):
        pytest.skip("the cpu backend is not built here")
    path = tmp_path / "overhead.json"
    assert _bench.main(["--overhead", "--calls", "3", "--repeats", "2", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(path.read_text())
    meta, rows, summary = report["meta"], report["rows"], report["summary"]
    assert meta["mode"] == "overhead" and meta["calls_per_round"] == 3 and meta["rounds"] == 2
    assert sorted((r["shape"], r["op"], r["column"]) for r in rows) == sorted(
        (s.name, op, c) for s in overhead.SHAPES for op in OPS for c in COLUMNS)
    by = {(r["shape"], r["op"], r["column"]): r for r in rows}
    for r in rows:
        assert r["rounds"] == 2
        assert 0 < r["min_us"] <= r["p25_us"] <= r["per_call_us"] <= r["p75_us"] <= r["max_us"]
        assert r["iqr_over_median"] == pytest.approx((r["p75_us"] - r["p25_us"]) / r["per_call_us"])
        assert r["noisy"] == (r["iqr_over_median"] > noise.NOISY_SPREAD)
        assert r["over_pytorch"] == pytest.approx(
            r["per_call_us"] / by[(r["shape"], r["op"], "pytorch")]["per_call_us"])
        line = next(line for line in out.splitlines()
                    if line.split()[:3] == [r["shape"], r["op"], r["column"]])
        assert f"{r['per_call_us']:.2f}" in line
    cpu = [r for r in rows if r["column"] == "cpu"]
    assert summary["target_us"] == overhead.TARGET_US == 6.0
    assert summary["met"] == all(r["per_call_us"] <= 6.0 for r in cpu)
    assert summary["over_target"] == [f"{r['shape']} {r['op']}" for r in cpu if r["per_call_us"] > 6.0]
    assert summary["max_cpu_us"] == max(r["per_call_us"] for r in cpu)
    assert summary["noise"]["cells"] == len(rows) == 18
    assert f"every normops call within 6 us: {'yes' if summary['met'] else 'no'}" in out


def test_a_loop_makes_its_calls():
    seen = []
    overhead.looped(lambda: seen.append(1), 7)()
    assert len(seen) == 7


def test_calls_needs_overhead(capsys):
    assert _bench.main(["--calls", "10"]) == 2
    assert "--calls: only with --overhead" in capsys.readouterr().err


def test_overhead_and_grid_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exc:
        _bench.main(["--overhead", "--grid"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
