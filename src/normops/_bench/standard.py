"""Time batch_norm's forward (training and inference) and backward on a normops backend
(--backend, default cpu), the cpu and reference backends and PyTorch's own batch norm, and
set each time against the copy bandwidth.

Every cell (shape x op x column) is the median of single-call timings after one warm-up
call; the chosen backend, cpu, PyTorch and the copy are timed in alternating blocks. The
effective bandwidth of the cpu backend counts the array traffic an op cannot avoid
(PASSES) and is compared with a plain copy of a buffer as large as x, timed in the op's own
blocks: per shape because caches make small and large buffers copy at different speeds,
per op so that both see the same spells of the machine.

Column names: "cpu", "reference" and the --backend name are normops backends; "pytorch"
is PyTorch's torch.nn.functional.batch_norm (not the normops "torch" backend, which runs
normops's kernels on tensors).
"""
import json
import math
import time
from dataclasses import asdict

from . import half, noise, report
from .backends import (DEFAULT_BACKEND, BenchError, backend_status, chosen_backend, load_average,
                       load_record, load_torch, normops_thread_control, thread_count)
from .columns import (OPS, PASSES, PYTORCH, GB, as_arrays, copy_calls, copy_gbps, copy_kernels,
                      normops_ops, pytorch_ops)
from .shapes import SHAPES, make_inputs
from .timing import (FULL, QUICK, block_ratios, fixed, geomean, pooled, time_callable,
                     time_in_rounds, timing_of)

# the chosen backend is "within" cpu on a row when its median time is at most this
# multiple of cpu's
WITHIN = 1.10

# bench_shape's default grouping: each op timed in blocks of its own
EACH_OP = tuple((op,) for op in OPS)


def bench_shape(inp, calls, policy, alone=("reference",), groups=EACH_OP,
                copied=None):
    """Timings of one shape, given ``calls`` {column: {op: fn}}: {op: {column: Timing}},
    ("blocks", op): {column: per-block samples}, ("copy", op): {kernel: Timing}, "copy":
    {kernel: Timing}. For each group of ops (by default each op on its own), the copies and
    every column but the slow reference are timed in alternating blocks (time_in_rounds),
    so the ops' times are set against each other and against the copies timed in the same
    spells of the machine, which are the baseline of every op of the group; "copy" pools
    the groups' copy samples (the shape's copy bandwidth in the header). The columns in
    ``alone`` (the slow reference, unless it is the chosen backend) are timed on their own.
    ``copied``: the array the copies copy (default: x)."""
    source = inp.x if copied is None else copied
    copies = {("copy", name): fn for name, fn in copy_calls(source, copy_kernels()).items()}
    copy_samples = {key: [] for key in copies}
    alone = set(alone) & calls.keys()
    result = {}
    for group in groups:
        fast = {(c, op): fns[op] for op in group for c, fns in calls.items() if c not in alone}
        blocks = time_in_rounds({**copies, **fast}, policy)
        for key in copies:
            copy_samples[key] += pooled(blocks[key])
        copy_timings = {key[1]: timing_of(pooled(blocks[key])) for key in copies}
        for op in group:
            result[("copy", op)] = copy_timings
            result[("blocks", op)] = {c: blocks[(c, o)] for c, o in fast if o == op}
            result[op] = {c: timing_of(pooled(blocks[(c, o)])) for c, o in fast if o == op}
            for c in sorted(alone):
                result[op][c] = time_callable(calls[c][op], policy)
    result["copy"] = {name: timing_of(s) for (_, name), s in copy_samples.items()}
    return result


def ratio(numerator, denominator):
    if numerator is None or denominator is None:
        return None
    return numerator.median_s / denominator.median_s


def cell_record(t):
    return {"median_s": t.median_s, "min_s": t.min_s, "p25_s": t.p25_s, "p75_s": t.p75_s,
            "max_s": t.max_s, "iqr_over_median": t.relative_spread, "repeats": t.repeats}


def make_rows(shape, nbytes, timings, backend, ops=OPS):
    """One dict per op of ``ops`` with its times, ratios and the cpu backend's bandwidth,
    against the faster copy kernel timed in the op's own rounds. ``backend``: the chosen
    normops backend, whose time is set against cpu's when it is not cpu itself."""
    rows = []
    for op in ops:
        copies = timings[("copy", op)]
        baseline = max(copies, key=lambda k: copy_gbps(nbytes, copies[k]))   # the faster kernel
        best_copy = copy_gbps(nbytes, copies[baseline])
        cells = timings[op]
        cpu = cells.get("cpu")
        cpu_gbps = PASSES[op] * nbytes / cpu.median_s / GB if cpu else None
        row = {
            "shape": shape.name, "op": op, "dims": list(shape.dims), "axis": shape.axis,
            "nbytes": nbytes, "passes": PASSES[op], "copy_gbps": best_copy,
            "copy_kernels": copy_record(nbytes, copies),
            "cells": {c: cell_record(t) for c, t in cells.items()},
            "backend_over_cpu": None, "backend_over_cpu_blocks": None,
            "cpu_over_pytorch": ratio(cpu, cells.get(PYTORCH)),
            "reference_over_cpu": ratio(cells.get("reference"), cpu),
            "cpu_gbps": cpu_gbps,
            "cpu_fraction_of_copy": cpu_gbps / best_copy if cpu_gbps else None,
            # the spread of cpu's calls, and the timings whose spread makes the row noisy
            "cpu_spread": cpu.relative_spread if cpu else None,
            "noisy_columns": noise.noisy_names({**cells, "copy": copies[baseline]}),
        }
        if backend != "cpu" and cpu is not None and backend in cells:
            row["backend_over_cpu"] = ratio(cells[backend], cpu)
            blocks = timings[("blocks", op)]
            per_block = block_ratios(blocks[backend], blocks["cpu"]) if backend in blocks else []
            if per_block:
                row["backend_over_cpu_blocks"] = {"min": min(per_block), "max": max(per_block),
                                                  "blocks": len(per_block)}
        rows.append(row)
    return rows


def copy_record(nbytes, copy_timings):
    return {name: {"median_s": t.median_s, "repeats": t.repeats, "gbps": copy_gbps(nbytes, t),
                   "iqr_over_median": t.relative_spread}
            for name, t in copy_timings.items()}


def ratio_stats(rows, key, bound):
    """(rows compared, geometric mean, worst, where the worst is, every row <= bound, rows
    beyond it) of the ratio ``key`` over the rows that have it; a verdict on every row
    only when every row was compared."""
    ratios = [(r[key], r) for r in rows if r[key] is not None]
    if not ratios:
        return 0, None, None, None, None, []
    worst, at = max(ratios, key=lambda p: p[0])
    beyond = [f"{r['shape']} {r['op']}" for v, r in ratios if v > bound]
    return (len(ratios), geomean(v for v, _ in ratios), worst, f"{at['shape']} {at['op']}",
            len(ratios) == len(rows) and not beyond, beyond)


def summarize(rows, backend):
    """Geometric mean and worst of cpu/pytorch over the rows that have both; with a
    chosen backend other than cpu, the same of its time over cpu's, and whether every
    row is within WITHIN."""
    # cpu faster: a ratio below 1 (the largest float below 1 is the bound)
    count, mean, worst, at, everywhere, _ = ratio_stats(rows, "cpu_over_pytorch", math.nextafter(1.0, 0.0))
    summary = {"backend": backend, "rows_compared": count, "geomean_cpu_over_pytorch": mean,
               "max_cpu_over_pytorch": worst, "max_at": at,
               "cpu_faster_than_pytorch_everywhere": everywhere}
    if backend != "cpu":
        count, mean, worst, at, everywhere, beyond = ratio_stats(rows, "backend_over_cpu", WITHIN)
        summary.update(within=WITHIN, backend_rows_compared=count, geomean_backend_over_cpu=mean,
                       max_backend_over_cpu=worst, backend_max_at=at,
                       backend_within_cpu_everywhere=everywhere, backend_rows_beyond=beyond)
    return summary


def selected_shapes(args):
    if not args.shapes:
        return SHAPES
    names = {n for group in args.shapes for n in group}
    return tuple(s for s in SHAPES if s.name in names)


def policy_for(args):
    policy = QUICK if args.quick else FULL
    return policy if args.repeats is None else fixed(args.repeats)


def mode_name(args):
    if args.repeats is not None:
        return f"{args.repeats} repeat(s) per cell"
    return "quick" if args.quick else "full"


def column_calls(inp, backend, kind, available, torch):
    """{column: {op: fn}} of one shape: cpu, the chosen backend on its kind of arrays,
    reference and pytorch, those that can run."""
    calls = {}
    if available["cpu"]:
        calls["cpu"] = normops_ops("cpu", inp)
    if backend != "cpu":
        calls[backend] = normops_ops(backend, as_arrays(kind, torch, inp))
    if available["reference"] and "reference" not in calls:
        calls["reference"] = normops_ops("reference", inp)
    if available[PYTORCH]:
        calls[PYTORCH] = pytorch_ops(torch, inp)
    return calls


def run(args):
    """Measure everything; returns the JSON-ready report. BenchError when the chosen
    backend cannot be timed (before any timing)."""
    torch = load_torch()
    backend = getattr(args, "backend", None) or DEFAULT_BACKEND
    kind = chosen_backend(backend, torch)
    try:
        dtype = half.numpy_dtype(args.dtype)   # bfloat16: ml_dtypes'
    except ImportError as exc:
        raise BenchError(f"--dtype {args.dtype}: {exc}") from None
    is_half = half.is_half(dtype)
    status = backend_status(torch)
    available = {c: ok for c, (ok, _) in status.items()}
    policy = policy_for(args)
    normops_control = normops_thread_control()
    rows, copies = [], {}
    load_before = load_average()
    with thread_count(args.threads, torch):
        meta = {
            **report.environment(), "torch_version": torch.__version__ if torch else None,
            "dtype": args.dtype, "threads": args.threads,
            "normops_threads": normops_control[0]() if normops_control else "not settable",
            "torch_threads": torch.get_num_threads() if torch else "-",
            "mode": mode_name(args),
            "repeat_policy": asdict(policy),
            "backend": backend, "backend_arrays": kind,
            "notes": {c: note for c, (_, note) in status.items() if note},
        }
        if is_half:
            meta.update(half.meta_fields(args.dtype, half.last_level_cache()))
        for shape in selected_shapes(args):
            inp = make_inputs(shape, dtype)
            calls = column_calls(inp, backend, kind, available, torch)
            timings = bench_shape(inp, calls, policy, alone=() if backend == "reference" else ("reference",))
            copies[shape.name] = {"nbytes": inp.x.nbytes, "kernels": copy_record(inp.x.nbytes, timings["copy"])}
            rows.extend(make_rows(shape, inp.x.nbytes, timings, backend))
    load = load_record(load_before, load_average())
    if load is not None:
        # the 1-minute load average of the machine, this process included
        meta["load_average"] = load
    summary = summarize(rows, backend)
    summary["noise"] = noise.assess([f"{r['shape']} {r['op']}" for r in rows if r["noisy_columns"]],
                                    len(rows), meta.get("load_average"), args.threads)
    if is_half:
        half.mark_rows(rows, meta["last_level_cache_bytes"])
        half.summarize(rows, summary)
    return {"meta": meta, "copy": copies, "rows": rows, "summary": summary}


def main(args):
    """The default bench, for the ``python -m normops bench`` namespace ``args``: prints
    the report (and writes its JSON); 0. BenchError when the chosen backend cannot be
    timed (before anything is printed)."""
    started = time.perf_counter()
    result = run(args)
    meta = result["meta"]
    meta["elapsed_s"] = time.perf_counter() - started
    print(report.format_header(meta, result["copy"], result["rows"]))
    print()
    print(report.format_table(result["rows"], meta["backend"]))
    print()
    print(report.format_footer(result["summary"], meta["notes"], meta))
    if result["summary"]["noise"]["warning"]:
        print(result["summary"]["noise"]["warning"])
    print(f"({meta['elapsed_s']:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0
