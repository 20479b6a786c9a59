"""``python -m normops bench --fused``: the fused epilogue of a residual block,
y = relu(BN(x) + z), on the cpu backend against the same without fusion.

For each shape (shapes.SHAPES, or --shapes), thread count and op (forward-train with
running statistics, inference with them, and the backward of a training forward), five
columns on the same inputs: x, dy, gamma, beta and the running statistics of the default
bench (shapes.make_inputs) and z, random normal data of x's shape from the shapes module's
seeded generator (shapes.make_residual):

* fused: normops.batch_norm(..., residual=z, activation="relu", backend="cpu"); backward:
  batch_norm_backward(dy, x, saved, gamma, y=y), which also returns dz;
* plain: the same calls without residual and activation (columns.normops_ops);
* numpy: plain, then the epilogue as a NumPy user writes it, in place:
  ``np.add(y, z, out=y); np.maximum(y, 0, out=y)``; backward: dz = dy where y > 0, else 0
  (``np.multiply(dy, y > 0, out=dz)``, into a buffer allocated once per shape: cheaper
  than ``np.where``), then the plain backward of dz;
* pytorch: torch.nn.functional.batch_norm, ``y += z`` (add_) and ``torch.relu_(y)`` under
  torch.no_grad(), on CPU tensors sharing the NumPy arrays' memory (torch.from_numpy; NHWC
  as a channels_last NCHW tensor); backward: what autograd runs for that composition,
  ``aten.threshold_backward(dy, y, 0)`` then native_batch_norm_backward
  (columns.native_backward). Skipped, with a note, when PyTorch is not installed;
* read z: the time to read z once, estimated as half the copy baseline: the median time
  of the faster copy kernel (numpy.copyto, the cpu backend's copy_into) copying an array
  of z's size (z itself), which reads and writes every byte, timed in the op's own blocks.

Each op's four columns and the copies are timed in alternating blocks
(standard.bench_shape), so that they see the same spells of the machine; each cell is the
median of single calls, with its quartiles, IQR/median and noisy flag (noise).

Targets, each judged per row (shape, threads, op), per shape and over the run:

1. fused forward-train and inference within WITHIN_PLAIN_READ_Z x (plain + read z): the
   epilogue should cost no more than reading z;
2. fused at least FASTER_THAN_NUMPY x faster than numpy (time(numpy) / time(fused)) for
   forward-train, inference and backward;
3. fused faster than pytorch (time(fused) / time(pytorch) < 1) for every op.

Thread counts: 1 and the CPUs this process may run on (the default bench's count), or
--threads N alone; normops and PyTorch get the same count (backends.thread_count).
"""
import time
from collections import namedtuple
from dataclasses import asdict, replace

import numpy

import normops
from normops._text import table

from . import noise, report
from .backends import (BenchError, backend_status, load_average, load_record, load_torch,
                       normops_backend_status, thread_count, usable_cpus)
from .columns import (EPS, MOMENTUM, OPS, PYTORCH, copy_gbps, native_backward, no_grad,
                      normops_ops, torch_tensors, torch_view)
from .shapes import make_inputs, make_residual
from .standard import bench_shape, cell_record, copy_record, mode_name, policy_for, selected_shapes

DTYPES = ("float32", "float64")
FUSED, PLAIN, NUMPY, READ_Z = "fused", "plain", "numpy", "read z"
COLUMNS = (FUSED, PLAIN, NUMPY, PYTORCH, READ_Z)
BACKEND = "cpu"
WITHIN_PLAIN_READ_Z = 1.15
FASTER_THAN_NUMPY = 1.6
FORWARD_OPS = ("forward-train", "inference")

# A target: the row's ratio ``ratio`` (printed as ``shown``) must be <= bound ("<="),
# >= bound (">=") or < bound ("<") on the ops ``ops``; ``text`` starts its summary line.
Target = namedtuple("Target", "name ratio shown compare bound ops text")
TARGETS = (
    Target("within_plain_plus_read_z", "fused_over_plain_plus_read_z", "fused/(plain+read z)",
           "<=", WITHIN_PLAIN_READ_Z, FORWARD_OPS,
           f"fused within {WITHIN_PLAIN_READ_Z:g}x of plain + read z"),
    Target("faster_than_numpy", "numpy_over_fused", "numpy/fused", ">=", FASTER_THAN_NUMPY, OPS,
           f"fused at least {FASTER_THAN_NUMPY:g}x faster than numpy"),
    Target("faster_than_pytorch", "fused_over_pytorch", "fused/pytorch", "<", 1.0, OPS,
           "fused faster than pytorch"),
)
COMPARE = {"<=": lambda v, b: v <= b, ">=": lambda v, b: v >= b, "<": lambda v, b: v < b}


def thread_counts(args):
    """--threads N alone, else 1 and the CPUs this process may run on."""
    if args.threads is not None:
        return (args.threads,)
    return tuple(sorted({1, usable_cpus()}))


# ---------------------------------------------------------------------------- the columns

def fused_ops(inp, z):
    """The three ops with the epilogue fused, on the cpu backend."""
    s = inp.shape
    common = dict(momentum=MOMENTUM, eps=EPS, axis=s.axis, backend=BACKEND, residual=z,
                  activation="relu")
    rm, rv = inp.running_mean.copy(), inp.running_var.copy()
    rm_eval, rv_eval = inp.running_mean.copy(), inp.running_var.copy()
    y, saved = normops.batch_norm(inp.x, inp.gamma, inp.beta, rm.copy(), rv.copy(), training=True,
                                  **common)
    return {
        "forward-train": lambda: normops.batch_norm(
            inp.x, inp.gamma, inp.beta, rm, rv, training=True, **common),
        "backward": lambda: normops.batch_norm_backward(inp.dy, inp.x, saved, inp.gamma, y=y,
                                                        backend=BACKEND),
        "inference": lambda: normops.batch_norm(
            inp.x, inp.gamma, inp.beta, rm_eval, rv_eval, training=False, **common),
    }


def numpy_ops(inp, z):
    """Plain normops on the cpu backend, the epilogue in NumPy, in place."""
    s = inp.shape
    common = dict(momentum=MOMENTUM, eps=EPS, axis=s.axis, backend=BACKEND)
    rm, rv = inp.running_mean.copy(), inp.running_var.copy()
    rm_eval, rv_eval = inp.running_mean.copy(), inp.running_var.copy()

    def epilogue(y, saved):
        numpy.add(y, z, out=y)
        numpy.maximum(y, 0, out=y)
        return y, saved

    y, saved = epilogue(*normops.batch_norm(inp.x, inp.gamma, inp.beta, rm.copy(), rv.copy(),
                                            training=True, **common))
    dz = numpy.empty_like(inp.dy)

    def backward():
        numpy.multiply(inp.dy, y > 0, out=dz)
        return (*normops.batch_norm_backward(dz, inp.x, saved, inp.gamma, backend=BACKEND), dz)

    return {
        "forward-train": lambda: epilogue(*normops.batch_norm(
            inp.x, inp.gamma, inp.beta, rm, rv, training=True, **common)),
        "backward": backward,
        "inference": lambda: epilogue(*normops.batch_norm(
            inp.x, inp.gamma, inp.beta, rm_eval, rv_eval, training=False, **common)),
    }


def pytorch_fused_ops(torch, inp, z):
    """PyTorch's batch norm, then add_ and relu_ (torchvision's residual block), under
    torch.no_grad(); the backward as autograd runs it for that composition."""
    t = torch_tensors(torch, inp)
    x, dy, w, b, rm, rv, rm_eval, rv_eval = t[:8]
    zt = torch_view(torch, inp.shape, z)
    batch_norm, relu_ = torch.nn.functional.batch_norm, torch.relu_
    threshold_backward = torch.ops.aten.threshold_backward
    bn_backward = native_backward(torch, t)

    def forward(running_mean, running_var, training):
        y = batch_norm(x, running_mean, running_var, w, b, training=training, momentum=MOMENTUM,
                       eps=EPS)
        y.add_(zt)
        return relu_(y)

    y = no_grad(torch, lambda: forward(rm.clone(), rv.clone(), True))()

    def backward():
        dz = threshold_backward(dy, y, 0)
        return (*bn_backward(dz), dz)

    return {
        "forward-train": no_grad(torch, lambda: forward(rm, rv, True)),
        "backward": no_grad(torch, backward),
        "inference": no_grad(torch, lambda: forward(rm_eval, rv_eval, False)),
    }


def column_calls(inp, z, torch):
    """{column: {op: fn}}: fused, plain, numpy and, with PyTorch, pytorch."""
    calls = {FUSED: fused_ops(inp, z), PLAIN: normops_ops(BACKEND, inp), NUMPY: numpy_ops(inp, z)}
    if torch is not None:
        calls[PYTORCH] = pytorch_fused_ops(torch, inp, z)
    return calls


# ---------------------------------------------------------------------------- rows

def halved(t):
    """A copy's Timing as the time of reading its source once: every field halved."""
    return replace(t, median_s=t.median_s / 2, min_s=t.min_s / 2, p25_s=t.p25_s / 2,
                   p75_s=t.p75_s / 2, max_s=t.max_s / 2)


def ratio(numerator, denominator):
    return None if numerator is None or denominator is None else numerator / denominator


def verdict(target, value):
    return None if value is None else COMPARE[target.compare](value, target.bound)


def make_rows(shape, threads, nbytes, timings):
    """One dict per op: its cells (median, quartiles, IQR/median, noisy), the ratios and
    each target's verdict on the row (None where the target does not apply or a column is
    missing)."""
    rows = []
    for op in OPS:
        copies = timings[("copy", op)]
        baseline = max(copies, key=lambda k: copy_gbps(nbytes, copies[k]))   # the faster kernel
        cells = {**timings[op], READ_Z: halved(copies[baseline])}
        med = {c: t.median_s for c, t in cells.items()}
        row = {
            "shape": shape.name, "op": op, "threads": threads, "dims": list(shape.dims),
            "axis": shape.axis, "nbytes": nbytes,
            "cells": {c: {**cell_record(t), "noisy": noise.is_noisy(t)} for c, t in cells.items()},
            "copy_baseline": baseline, "copy_kernels": copy_record(nbytes, copies),
            "fused_over_plain_plus_read_z": (med[FUSED] / (med[PLAIN] + med[READ_Z])
                                             if op in FORWARD_OPS else None),
            "numpy_over_fused": ratio(med[NUMPY], med[FUSED]),
            "fused_over_pytorch": ratio(med[FUSED], med.get(PYTORCH)),
            # the row's timings (its columns, read z: the copy baseline) too spread to quote
            "noisy_columns": noise.noisy_names(cells),
        }
        for target in TARGETS:
            row[target.name] = verdict(target, row[target.ratio]) if op in target.ops else None
        rows.append(row)
    return rows


def label(row):
    return f"{row['shape']} {row['op']}, {row['threads']} thread{'s' if row['threads'] > 1 else ''}"


def judge(target, rows):
    """Whether ``rows`` meet ``target`` (None when none of them could be judged), its
    worst ratio and where, and the rows that miss it."""
    judged = [r for r in rows if r[target.name] is not None]
    if not judged:
        return {"rows_compared": 0, "met": None, "worst": None, "worst_at": None, "missed": []}
    pick = min if target.compare == ">=" else max
    worst = pick(judged, key=lambda r: r[target.ratio])
    applicable = [r for r in rows if r["op"] in target.ops]
    return {"rows_compared": len(judged),
            "met": len(judged) == len(applicable) and all(r[target.name] for r in judged),
            "worst": worst[target.ratio], "worst_at": label(worst),
            "missed": [label(r) for r in judged if not r[target.name]]}


def summarize(rows, load, threads):
    """Each target's verdict over the run and per shape (and thread count), and the
    run's noise (``load``: the load averages before and after)."""
    by_shape = {}
    for r in rows:
        by_shape.setdefault((r["threads"], r["shape"]), []).append(r)
    targets = {}
    for target in TARGETS:
        targets[target.name] = {
            "text": target.text, "ratio": target.ratio, "compare": target.compare,
            "bound": target.bound, "ops": list(target.ops), **judge(target, rows),
            "by_shape": [{"threads": n, "shape": s, **judge(target, shape_rows)}
                         for (n, s), shape_rows in by_shape.items()]}
    return {"targets": targets,
            "noise": noise.assess([label(r) for r in rows if r["noisy_columns"]], len(rows),
                                  load, max(threads))}


# ---------------------------------------------------------------------------- the run

def check_setup(args):
    """The dtype (a NumPy dtype) and PyTorch (None: the pytorch column is skipped);
    BenchError when the mode cannot run as asked."""
    if args.dtype not in DTYPES:
        raise BenchError(f"--fused times {' or '.join(DTYPES)}, not --dtype {args.dtype}")
    available, note = normops_backend_status(BACKEND)
    if not available:
        raise BenchError(f"--fused times the {BACKEND} backend, which is {note}")
    return numpy.dtype(args.dtype), load_torch()


def run(args):
    """Measure everything; returns the JSON-ready report ({"meta", "rows", "summary"})."""
    started = time.perf_counter()
    dtype, torch = check_setup(args)
    threads = thread_counts(args)
    policy = policy_for(args)
    shapes = selected_shapes(args)
    notes = {c: note for c, (_, note) in backend_status(torch).items() if c == PYTORCH and note}
    rows = []
    load_before = load_average()
    for shape in shapes:
        inp, z = make_inputs(shape, dtype), make_residual(shape, dtype)
        calls = column_calls(inp, z, torch)
        for n in threads:
            with thread_count(n, torch):
                timings = bench_shape(inp, calls, policy, alone=(), copied=z)
            rows.extend(make_rows(shape, n, z.nbytes, timings))
        del inp, z, calls
    load = load_record(load_before, load_average())
    order = {s.name: i for i, s in enumerate(shapes)}
    rows.sort(key=lambda r: (r["threads"], order[r["shape"]]))   # stable: OPS order kept
    summary = summarize(rows, load, threads)
    meta = {**report.environment(), "torch_version": torch.__version__ if torch else None,
            "mode": "fused", "repeats": mode_name(args), "repeat_policy": asdict(policy),
            "dtype": args.dtype, "threads": list(threads), "backend": BACKEND,
            "columns": list(c for c in COLUMNS if c != PYTORCH or torch is not None),
            "shapes": [s.name for s in shapes], "notes": notes, "load_average": load,
            "elapsed_s": time.perf_counter() - started}
    return {"meta": meta, "rows": rows, "summary": summary}


# ---------------------------------------------------------------------------- the report

def yes_no(met):
    return "n/a" if met is None else ("yes" if met else "no")


def fmt_ratio(value):
    return "-" if value is None else f"{value:.2f}"


def format_times(rows, columns):
    """One line per cell: median, quartiles and IQR/median (noisy above the threshold)."""
    header = ("threads", "shape", "op", "column", "median ms", "p25-p75 ms", "IQR/med")
    body = []
    for r in rows:
        for c in columns:
            cell = r["cells"][c]
            body.append((str(r["threads"]), r["shape"], r["op"], c, report.fmt_ms(cell["median_s"]),
                         f"{report.fmt_ms(cell['p25_s'])}-{report.fmt_ms(cell['p75_s'])}",
                         f"{cell['iqr_over_median']:.0%}" + (" noisy" if cell["noisy"] else "")))
    return table(header, body)


def format_ratios(rows):
    """One line per row: the ratios and each target's verdict on it."""
    header = ("threads", "shape", "op",
              *(h for t in TARGETS for h in (t.shown, f"{t.compare} {t.bound:g}")), "noisy")
    body = []
    for r in rows:
        cells = [str(r["threads"]), r["shape"], r["op"]]
        for target in TARGETS:
            applies = r["op"] in target.ops
            cells += [fmt_ratio(r[target.ratio]) if applies else "-",
                      yes_no(r[target.name]) if applies else "-"]
        body.append((*cells, ",".join(r["noisy_columns"])))
    return table(header, body)


def format_by_shape(summary):
    """One line per shape and thread count: each target's verdict and worst ratio there."""
    targets = summary["targets"]
    first = targets[TARGETS[0].name]["by_shape"]
    header = ("threads", "shape", *(t.text for t in TARGETS))
    body = []
    for k, where in enumerate(first):
        cells = []
        for target in TARGETS:
            s = targets[target.name]["by_shape"][k]
            cells.append(yes_no(s["met"]) + (f" ({s['worst']:.2f})" if s["worst"] is not None else ""))
        body.append((str(where["threads"]), where["shape"], *cells))
    return table(header, body)


def summary_line(target, record, notes):
    """'<target>: yes/no (worst <ratio> <value>, <where>; missed on k of n rows)', or n/a
    with the reason (the pytorch column skipped)."""
    if record["met"] is None:
        why = notes.get(PYTORCH) if target.ratio == "fused_over_pytorch" else None
        return f"{target.text}: n/a ({f'pytorch column skipped: {why}' if why else 'no rows'})"
    missed = record["missed"]
    return (f"{target.text}: {yes_no(record['met'])} (worst {target.shown} {record['worst']:.2f}, "
            f"{record['worst_at']}"
            + (f"; missed on {len(missed)} of {record['rows_compared']} rows" if missed else "")
            + ")")


def format_report(result):
    meta, rows, summary = result["meta"], result["rows"], result["summary"]
    load = meta["load_average"]
    lines = [
        report.format_environment(meta),
        f"dtype {meta['dtype']}  threads {', '.join(map(str, meta['threads']))} (normops and "
        f"torch alike)  mode {meta['repeats']}"
        + (f"  load average {load['start']:.2f} before, {load['end']:.2f} after" if load else ""),
        "fused: normops.batch_norm(..., residual=z, activation='relu', backend='cpu') "
        "(backward: batch_norm_backward(dy, x, saved, gamma, y=y), dz too); plain: the same "
        "without residual and activation",
        "numpy: plain, then np.add(y, z, out=y); np.maximum(y, 0, out=y) (backward: "
        "np.multiply(dy, y > 0, out=dz), then plain batch_norm_backward(dz, ...))",
        "pytorch: F.batch_norm, y.add_(z), torch.relu_(y) under torch.no_grad() (backward: "
        "aten.threshold_backward, then native_batch_norm_backward)",
        "read z: half the faster copy's median time of an array of z's size, in the op's own "
        "blocks (a copy reads and writes it)",
        f"IQR/med: the interquartile range of a cell's calls over their median; noisy above "
        f"{noise.NOISY_SPREAD:.0%}",
    ]
    for column, note in meta["notes"].items():
        lines.append(f"{column} column skipped: {note}")
    lines += ["", format_times(rows, meta["columns"]), "", format_ratios(rows), "",
              "targets by shape (worst ratio):", format_by_shape(summary), ""]
    lines += [summary_line(t, summary["targets"][t.name], meta["notes"]) for t in TARGETS]
    return "\n".join(lines + report.ending(summary, meta))


def main(args):
    result = run(args)
    return report.print_and_save(result, format_report(result), args.json)
