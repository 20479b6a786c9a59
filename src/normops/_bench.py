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
import argparse
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

import numpy

import normops

from . import _bench_half

OPS = ("forward-train", "backward", "inference")
# Array-sized reads and writes each op must make at least: forward and inference read x
# and write y; backward reads x and dy and writes dx.
PASSES = {"forward-train": 2, "backward": 3, "inference": 2}
# the column of PyTorch's own batch norm; "torch" is the normops backend for tensors
PYTORCH = "pytorch"
DEFAULT_BACKEND = "cpu"
# the chosen backend is "within" cpu on a row when its median time is at most this
# multiple of cpu's
WITHIN = 1.10
MOMENTUM = 0.1
EPS = 1e-5
SEED = 20240601
GB = 1e9
DESCRIPTION = " ".join(__doc__.split("\n\n")[0].split())  # the docstring's first paragraph


@dataclass(frozen=True)
class Shape:
    layout: str  # "NC", "NCHW" or "NHWC"; NHWC is channels-last, so axis=-1
    dims: tuple

    @property
    def name(self):
        return f"{self.layout}-{'x'.join(map(str, self.dims))}"

    @property
    def axis(self):
        return -1 if self.layout == "NHWC" else 1

    @property
    def channels(self):
        return self.dims[self.axis]


SHAPES = (
    Shape("NC", (256, 1024)),
    Shape("NC", (8192, 2048)),
    Shape("NCHW", (32, 64, 56, 56)),
    Shape("NCHW", (64, 256, 14, 14)),
    Shape("NHWC", (32, 56, 56, 64)),
)
SHAPES_BY_NAME = {s.name: s for s in SHAPES}


# ---------------------------------------------------------------------------- timing

@dataclass(frozen=True)
class RepeatPolicy:
    """How many timed calls a cell gets: enough to fill ``budget_s``, judged from the
    warm-up call, within [min_repeats, max_repeats]; ``fixed`` overrides all that."""

    budget_s: float
    min_repeats: int
    max_repeats: int
    fixed: Optional[int] = None

    def repeats(self, warmup_s):
        if self.fixed is not None:
            return self.fixed
        wanted = math.ceil(self.budget_s / max(warmup_s, 1e-9))
        return max(self.min_repeats, min(self.max_repeats, wanted))


FULL = RepeatPolicy(budget_s=0.3, min_repeats=5, max_repeats=1000)
# Quick mode covers every cell in well under 30 s on a 2-core machine: a small budget,
# and the slow reference cells (half a second per backward on NC-8192x2048) get 3 calls.
QUICK = RepeatPolicy(budget_s=0.1, min_repeats=3, max_repeats=30)


@dataclass(frozen=True)
class Timing:
    median_s: float
    min_s: float
    repeats: int
    p25_s: float   # the quartiles: the spread of the single calls
    p75_s: float


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# Blocks per callable in time_in_rounds: a slow spell of this shared machine (seconds)
# then lands on every backend's calls alike instead of on one backend's block (with 3
# blocks, the sub-millisecond rows swung by 30 % between runs; see benchmarks/README.md).
ROUNDS = 8


def time_in_rounds(fns, policy, rounds=ROUNDS):
    """Samples (seconds of single calls) of each callable in ``fns`` (name -> fn), block by
    block: {name: [samples of block 1, ..., of block ``rounds``]} (a block is empty when a
    callable gets fewer calls than there are blocks). Each callable is warmed up once
    (which also sizes its repeat count); then its calls run back to back in ``rounds``
    blocks, which alternate with the other callables' blocks. The collector is paused so
    that a collection lands in no sample."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        wanted = {name: policy.repeats(_seconds(fn)) for name, fn in fns.items()}
        blocks = {name: [] for name in fns}
        for k in range(rounds):
            for name, fn in fns.items():
                share = wanted[name] * (k + 1) // rounds - wanted[name] * k // rounds
                blocks[name].append([_seconds(fn) for _ in range(share)])
    finally:
        if was_enabled:
            gc.enable()
    return blocks


def pooled(blocks):
    return [t for block in blocks for t in block]


def timing_of(samples):
    samples = sorted(samples)
    if len(samples) > 1:
        p25, _, p75 = statistics.quantiles(samples, n=4, method="inclusive")
    else:
        p25 = p75 = samples[0]
    return Timing(statistics.median(samples), samples[0], len(samples), p25, p75)


def block_ratios(numerator_blocks, denominator_blocks):
    """The ratio of the two callables' median times in each block both have samples in:
    how the ratio moved with the spells of the machine."""
    return [statistics.median(a) / statistics.median(b)
            for a, b in zip(numerator_blocks, denominator_blocks) if a and b]


def time_callable(fn, policy):
    """Median of single calls of ``fn`` after one warm-up call, in one block."""
    return timing_of(pooled(time_in_rounds({"fn": fn}, policy, rounds=1)["fn"]))


# ---------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Inputs:
    shape: Shape
    x: object             # numpy.ndarray, or a tensor on its memory (as_arrays)
    dy: object
    gamma: object
    beta: object
    running_mean: object
    running_var: object


def make_inputs(shape, dtype):
    """Random normal data, the same on every run and whatever --shapes picks (seeded by
    the shape's place in SHAPES). With a half ``dtype`` (float16, bfloat16), x and dy are
    the float32 run's data rounded to it and the per-channel arrays are the float32 run's
    (PyTorch's mixed precision: half activations, float32 parameters and statistics)."""
    rng = numpy.random.default_rng([SEED, SHAPES.index(shape)])
    c = shape.channels
    draw = _bench_half.data_dtype(dtype)          # dtype itself unless a half one
    params = _bench_half.parameter_dtype(dtype)   # likewise

    def normal(size, scale=1.0, offset=0.0):
        return offset + scale * rng.standard_normal(size, dtype=draw)  # stays in draw

    return Inputs(
        shape=shape,
        x=rng.standard_normal(shape.dims, dtype=draw).astype(dtype, copy=False),
        dy=rng.standard_normal(shape.dims, dtype=draw).astype(dtype, copy=False),
        gamma=normal(c, 0.1, 1.0).astype(params, copy=False),
        beta=normal(c, 0.1).astype(params, copy=False),
        running_mean=normal(c, 0.1).astype(params, copy=False),
        running_var=rng.uniform(0.5, 1.5, c).astype(params),
    )


# ---------------------------------------------------------------------------- copy baseline

def copy_kernels():
    """Plain copies to measure the memory bandwidth with: numpy.copyto (one thread) and,
    once the cpu backend is built, its OpenMP copy (the current thread count)."""
    kernels = {"numpy.copyto": numpy.copyto}
    try:
        from normops._backends._cpu import copy_into
    except (ImportError, AttributeError):
        return kernels
    kernels["copy_into"] = copy_into
    return kernels


def copy_calls(x, kernels):
    """Zero-argument copies of x into a buffer of its size, one per copy kernel.
    numpy.copyto copies x as it is; the others read the buffer protocol, which has no
    bfloat16: they copy a uint16 view of the same memory (the same bytes)."""
    dst = numpy.empty_like(x)
    views = _bench_half.buffer_view(dst), _bench_half.buffer_view(x)
    return {name: (lambda k=kernel, a=((dst, x) if kernel is numpy.copyto else views): k(*a))
            for name, kernel in kernels.items()}


def copy_gbps(nbytes, timing):
    return 2 * nbytes / timing.median_s / GB  # a copy reads and writes nbytes


# ---------------------------------------------------------------------------- backends

def load_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


class BenchError(Exception):
    """The bench cannot run as asked (an unknown or unavailable --backend): its message
    is printed as the command's error."""


def normops_backend_status(name):
    """(available, note): note says why a backend is left out."""
    for info in normops.backends():
        if info.name == name:
            return info.available, None if info.available else f"unavailable: {info.reason}"
    return False, "not registered in this build"


def backend_status(torch):
    """(available, note) of every column but the chosen backend's (checked by
    chosen_backend, which refuses to run without it)."""
    status = {name: normops_backend_status(name) for name in ("cpu", "reference")}
    status[PYTORCH] = (True, None) if torch is not None else (False, "PyTorch is not installed")
    return status


# what the bench hands the chosen backend: the NumPy arrays themselves, or PyTorch CPU
# tensors on their memory
ARRAYS = {
    "numpy": "the NumPy arrays",
    "torch": "PyTorch CPU tensors on the NumPy arrays' memory (torch.from_numpy: same layout "
             "and axis)",
}


def chosen_backend(name, torch):
    """The kind of arrays ("numpy" or "torch", see ARRAYS) the normops backend ``name``
    gets; BenchError saying why when it is unknown, cannot run here, or works on arrays
    that live off the cpu (cupy: a GPU's, timed by benchmarks/gpu_check.py)."""
    from ._registry import ANY_LIBRARY, backend_library
    try:
        normops.get_backend(name)
    except normops.BackendError as exc:
        hint = ""
        if name == PYTORCH:
            hint = (f" (PyTorch's own batch norm is always timed, as the {PYTORCH!r} column; "
                    f"the normops backend for tensors is 'torch')")
        raise BenchError(f"{exc}{hint}") from None
    library = backend_library(name)
    if library in (None, "numpy", ANY_LIBRARY):
        # an array-API backend takes NumPy arrays through array-api-compat's namespace
        return "numpy"
    if library == "torch" and torch is not None:
        return "torch"
    where = " (on a GPU machine, benchmarks/gpu_check.sh times it)" if library == "cupy" else ""
    raise BenchError(f"backend {name!r} works on {library} arrays; the bench times the cpu on "
                     f"NumPy arrays and PyTorch CPU tensors only{where}")


def as_arrays(kind, torch, inp):
    """``inp`` with every array as the chosen backend's kind of array, on the same memory."""
    if kind == "numpy":
        return inp
    fields = {f: getattr(inp, f) for f in ("x", "dy", "gamma", "beta", "running_mean", "running_var")}
    return Inputs(shape=inp.shape, **{f: _bench_half.as_tensor(torch, a) for f, a in fields.items()})


def _copy(a):
    return a.clone() if hasattr(a, "clone") else a.copy()


def normops_ops(backend, inp):
    """The three ops on a normops backend as zero-argument callables (NumPy arrays or
    tensors alike). Each op gets its own running statistics so the in-place updates of
    forward-train leave inference's alone."""
    s = inp.shape
    rm, rv = _copy(inp.running_mean), _copy(inp.running_var)
    rm_eval, rv_eval = _copy(inp.running_mean), _copy(inp.running_var)
    common = dict(momentum=MOMENTUM, eps=EPS, axis=s.axis, backend=backend)
    _, saved = normops.batch_norm(inp.x, inp.gamma, inp.beta, _copy(rm), _copy(rv), training=True, **common)
    return {
        "forward-train": lambda: normops.batch_norm(
            inp.x, inp.gamma, inp.beta, rm, rv, training=True, **common),
        "backward": lambda: normops.batch_norm_backward(inp.dy, inp.x, saved, inp.gamma, backend=backend),
        "inference": lambda: normops.batch_norm(
            inp.x, inp.gamma, inp.beta, rm_eval, rv_eval, training=False, **common),
    }


def pytorch_ops(torch, inp):
    """The same three ops in PyTorch's own batch norm (the "pytorch" column), on tensors
    sharing the NumPy buffers (or on ``inp``'s tensors as they are, on their device, as
    benchmarks/gpu_check.py gives them). NHWC data becomes an NCHW tensor in
    channels_last memory format, which is how PyTorch holds it. A bfloat16 array becomes
    a torch.bfloat16 tensor through an int16 view of its memory (_bench_half.as_tensor);
    half x with float32 weight and running statistics is PyTorch's mixed precision."""
    def as_tensor(a):
        return _bench_half.as_tensor(torch, a)

    def tensor(a):
        t = as_tensor(a)
        return t.permute(0, 3, 1, 2) if inp.shape.layout == "NHWC" else t

    x, dy = tensor(inp.x), tensor(inp.dy)
    w, b = as_tensor(inp.gamma), as_tensor(inp.beta)
    if inp.shape.layout == "NHWC":
        assert x.is_contiguous(memory_format=torch.channels_last)
    rm, rv = as_tensor(inp.running_mean).clone(), as_tensor(inp.running_var).clone()
    rm_eval, rv_eval = as_tensor(inp.running_mean).clone(), as_tensor(inp.running_var).clone()
    batch_norm = torch.nn.functional.batch_norm
    # What autograd runs for batch_norm's backward: native_batch_norm_backward with the
    # batch mean and inverse std saved by native_batch_norm.
    _, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
        x, w, b, rm.clone(), rv.clone(), True, MOMENTUM, EPS)

    def no_grad(fn):
        def run():
            with torch.no_grad():
                return fn()
        return run

    return {
        "forward-train": no_grad(lambda: batch_norm(x, rm, rv, w, b, training=True, momentum=MOMENTUM, eps=EPS)),
        "backward": no_grad(lambda: torch.ops.aten.native_batch_norm_backward(
            dy, x, w, rm, rv, save_mean, save_invstd, True, EPS, [True, True, True])),
        "inference": no_grad(lambda: batch_norm(x, rm_eval, rv_eval, w, b, training=False, eps=EPS)),
    }


def normops_thread_control():
    """(get, set) of normops' thread count, or None: set_num_threads arrives with the cpu
    backend, and may refuse when that backend is not built."""
    get = getattr(normops, "get_num_threads", None)
    set_ = getattr(normops, "set_num_threads", None)
    if get is None or set_ is None:
        return None
    try:
        get()
    except normops.BackendError:
        return None
    return get, set_


@contextlib.contextmanager
def thread_count(n, torch):
    """Run normops (when it can be told) and torch on n threads; restore the previous
    counts afterwards."""
    controls = [c for c in (normops_thread_control(),
                            torch and (torch.get_num_threads, torch.set_num_threads)) if c]
    previous = [get() for get, _ in controls]
    for _, set_ in controls:
        set_(n)
    try:
        yield
    finally:
        for (_, set_), count in zip(controls, previous):
            set_(count)


# ---------------------------------------------------------------------------- measuring

def bench_shape(inp, calls, policy, alone=("reference",)):
    """Timings of one shape, given ``calls`` {column: {op: fn}}: {op: {column: Timing}},
    ("blocks", op): {column: per-block samples}, ("copy", op): {kernel: Timing}, "copy":
    {kernel: Timing}. For each op, the copies and every column but the slow reference are
    timed in alternating blocks (time_in_rounds), so the op's times are set against each
    other and against the copies timed in the same spells of the machine; "copy" pools the
    three ops' copy samples (the shape's copy bandwidth in the header). The columns in
    ``alone`` (the slow reference, unless it is the chosen backend) are timed on their own."""
    copies = {("copy", name): fn for name, fn in copy_calls(inp.x, copy_kernels()).items()}
    copy_samples = {key: [] for key in copies}
    alone = set(alone) & calls.keys()
    result = {}
    for op in OPS:
        fast = {c: fns[op] for c, fns in calls.items() if c not in alone}
        blocks = time_in_rounds({**copies, **fast}, policy)
        for key in copies:
            copy_samples[key] += pooled(blocks[key])
        result[("copy", op)] = {key[1]: timing_of(pooled(blocks[key])) for key in copies}
        result[("blocks", op)] = {c: blocks[c] for c in fast}
        result[op] = {c: timing_of(pooled(blocks[c])) for c in fast}
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
            "repeats": t.repeats}


def make_rows(shape, nbytes, timings, backend):
    """One dict per op with its times, ratios and the cpu backend's bandwidth, against the
    faster copy kernel timed in the op's own rounds. ``backend``: the chosen normops
    backend, whose time is set against cpu's when it is not cpu itself."""
    rows = []
    for op in OPS:
        best_copy = max(copy_gbps(nbytes, t) for t in timings[("copy", op)].values())
        cells = timings[op]
        cpu = cells.get("cpu")
        cpu_gbps = PASSES[op] * nbytes / cpu.median_s / GB if cpu else None
        row = {
            "shape": shape.name, "op": op, "dims": list(shape.dims), "axis": shape.axis,
            "nbytes": nbytes, "passes": PASSES[op], "copy_gbps": best_copy,
            "copy_kernels": copy_record(nbytes, timings[("copy", op)]),
            "cells": {c: cell_record(t) for c, t in cells.items()},
            "backend_over_cpu": None, "backend_over_cpu_blocks": None,
            "cpu_over_pytorch": ratio(cpu, cells.get(PYTORCH)),
            "reference_over_cpu": ratio(cells.get("reference"), cpu),
            "cpu_gbps": cpu_gbps,
            "cpu_fraction_of_copy": cpu_gbps / best_copy if cpu_gbps else None,
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
    return {name: {"median_s": t.median_s, "repeats": t.repeats, "gbps": copy_gbps(nbytes, t)}
            for name, t in copy_timings.items()}


def geomean(values):
    return math.exp(statistics.fmean(math.log(v) for v in values))


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


# ---------------------------------------------------------------------------- report

def fmt_ms(seconds):
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def fmt_range(blocks):
    return "-" if blocks is None else f"{blocks['min']:.2f}-{blocks['max']:.2f}"


def format_table(rows, backend=DEFAULT_BACKEND):
    """The table: a column per header; the chosen backend's three columns when it is not
    cpu, and the reference's own two unless it is the chosen one."""
    ours = backend != "cpu"
    ref = backend != "reference"
    dram = any("dram_sized" in r for r in rows)   # a half dtype: its DRAM-sized rows marked
    header = ("shape", "op", "copy GB/s", "cpu ms",
              *((f"{backend} ms", f"{backend}/cpu", "per block") if ours else ()),
              *(("reference ms",) if ref else ()), "pytorch ms", "cpu/pytorch",
              *(("ref/cpu",) if ref else ()), "cpu GB/s", "cpu/copy",
              *(("DRAM",) if dram else ()))
    body = []
    for r in rows:
        med = {c: cell["median_s"] for c, cell in r["cells"].items()}
        body.append((r["shape"], r["op"], fmt(r["copy_gbps"], ".1f"), fmt_ms(med.get("cpu")),
                     *((fmt_ms(med.get(backend)), fmt(r["backend_over_cpu"], ".2f"),
                        fmt_range(r["backend_over_cpu_blocks"])) if ours else ()),
                     *((fmt_ms(med.get("reference")),) if ref else ()), fmt_ms(med.get(PYTORCH)),
                     fmt(r["cpu_over_pytorch"], ".2f"),
                     *((fmt(r["reference_over_cpu"], ".1f"),) if ref else ()),
                     fmt(r["cpu_gbps"], ".1f"), fmt(r["cpu_fraction_of_copy"], ".0%"),
                     *((("yes" if r.get("dram_sized") else "no"),) if dram else ())))
    widths = [max(len(v) for v in col) for col in zip(header, *body)]
    # text columns left-aligned, numbers right-aligned
    def line(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def format_header(meta, copies, rows=()):
    load = meta.get("load_average")
    lines = [
        f"normops {meta['normops_version']}  numpy {meta['numpy_version']}  "
        f"torch {meta['torch_version'] or 'not installed'}  python {meta['python_version']}  "
        f"{meta['machine']}",
        f"dtype {meta['dtype']}"
        + (f" (parameters {meta['parameter_dtype']})" if "parameter_dtype" in meta else "")
        + f"  threads {meta['threads']} (normops: {meta['normops_threads']}, "
        f"torch: {meta['torch_threads']})  mode {meta['mode']}"
        + (f"  load average {load['start']:.2f} before, {load['end']:.2f} after" if load else ""),
        f"backend {meta['backend']} on {ARRAYS[meta['backend_arrays']]}"
        + (f", timed in the same blocks as cpu; {meta['backend']}/cpu: median over median; "
           "per block: its lowest and highest over the blocks" if meta["backend"] != "cpu" else ""),
        f"{PYTORCH}: PyTorch's own torch.nn.functional.batch_norm (and its backward)",
    ]
    if "parameter_dtype" in meta:   # a half dtype
        dram = list(dict.fromkeys(r["shape"] for r in rows if r.get("dram_sized")))
        lines += _bench_half.header_lines(meta, dram)
    for column, note in meta["notes"].items():
        lines.append(f"{column} column left empty: {note}")
    lines.append("copy bandwidth (2 x nbytes / median copy time, the three ops' blocks pooled; each "
                 "row's baseline is the larger in its op's blocks):")
    for name, rec in copies.items():
        kernels = "  ".join(f"{k} {v['gbps']:.1f} GB/s" for k, v in rec["kernels"].items())
        lines.append(f"  {name:<18} {rec['nbytes'] / 1e6:7.1f} MB  {kernels}")
    return "\n".join(lines)


def format_footer(summary, notes, meta=None):
    lines = []
    if summary["rows_compared"] == 0:
        why = "; ".join(f"{c}: {n}" for c, n in notes.items() if c in ("cpu", PYTORCH)) or "no rows"
        lines.append(f"cpu/pytorch: n/a ({why})")
    else:
        verdict = summary["cpu_faster_than_pytorch_everywhere"]
        lines += [
            f"geometric mean cpu/pytorch over {summary['rows_compared']} rows: "
            f"{summary['geomean_cpu_over_pytorch']:.2f}  (< 1: cpu faster)",
            f"worst cpu/pytorch: {summary['max_cpu_over_pytorch']:.2f} ({summary['max_at']})",
            f"cpu faster than pytorch on every row: {'yes' if verdict else 'no'}",
        ]
    if meta is not None and "parameter_dtype" in meta:   # a half dtype: its targets
        lines += _bench_half.footer_lines(meta, summary)
    backend = summary["backend"]
    if backend == "cpu":
        return "\n".join(lines)
    if summary["backend_rows_compared"] == 0:
        why = notes.get("cpu") or "no rows"
        lines.append(f"{backend}/cpu: n/a ({why})")
        return "\n".join(lines)
    within = summary["within"]
    beyond = summary["backend_rows_beyond"]
    lines += [
        f"geometric mean {backend}/cpu over {summary['backend_rows_compared']} rows: "
        f"{summary['geomean_backend_over_cpu']:.2f}  (> 1: {backend} slower)",
        f"worst {backend}/cpu: {summary['max_backend_over_cpu']:.2f} ({summary['backend_max_at']})",
        f"{backend} within {within - 1:.0%} of cpu on every row: "
        f"{'yes' if summary['backend_within_cpu_everywhere'] else 'no'}"
        + (f" (beyond: {', '.join(beyond)})" if beyond else ""),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line

def shape_list(text):
    """--shapes: names separated by commas (or given as several arguments)."""
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in SHAPES_BY_NAME]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown shape(s) {', '.join(unknown)}; choose from {', '.join(SHAPES_BY_NAME)}")
    return names


def usable_cpus():
    """The CPUs this process may run on (its affinity mask where the OS has one): a
    process pinned to fewer CPUs than the machine has gains nothing from more threads,
    and normops refuses more than 4 per such CPU."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser):
    parser.add_argument("--backend", default=DEFAULT_BACKEND, metavar="NAME",
                        help="the normops backend to time (default: cpu); any other is timed "
                             "in the same blocks as cpu and set against it (NAME/cpu). torch: "
                             "CPU tensors on the same memory (torch.from_numpy); a backend for "
                             "NumPy or any array-API library: the NumPy arrays. 'pytorch' is "
                             "PyTorch's own batch norm, always timed")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats (whole run well under 30 s); noisier numbers")
    parser.add_argument("--dtype", choices=("float32", "float64", *_bench_half.HALF_NAMES),
                        default="float32",
                        help="x's and dy's dtype (default: float32); with float16 or bfloat16 "
                             "(ml_dtypes), gamma, beta and the running statistics stay float32, "
                             "for normops and PyTorch alike")
    parser.add_argument("--threads", type=positive_int, default=usable_cpus(),
                        help="threads for normops and PyTorch (default: the CPUs this "
                             "process may run on)")
    parser.add_argument("--shapes", type=shape_list, nargs="+", metavar="NAME",
                        help=f"a subset of the shapes: {', '.join(SHAPES_BY_NAME)}")
    parser.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    parser.add_argument("--repeats", type=positive_int,
                        help="fixed number of timed calls per cell, overriding the adaptive count (for tests)")
    parser.add_argument("--ranks", type=positive_int, metavar="N",
                        help="instead: time synchronized batch_norm (comm=) against the local op "
                             "on N MPI ranks, one thread each (mpiexec -n N python -m "
                             "normops._bench_sync); only --quick and --json apply; needs mpi4py "
                             'and mpiexec: pip install "normops[mpi]"')
    return parser


def build_parser():
    return add_arguments(argparse.ArgumentParser(
        prog="python -m normops bench", description=DESCRIPTION))


def selected_shapes(args):
    if not args.shapes:
        return SHAPES
    names = {n for group in args.shapes for n in group}
    return tuple(s for s in SHAPES if s.name in names)


def policy_for(args):
    policy = QUICK if args.quick else FULL
    return policy if args.repeats is None else RepeatPolicy(0.0, 1, 1, fixed=args.repeats)


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


def load_average():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run(args):
    """Measure everything; returns the JSON-ready report. BenchError when the chosen
    backend cannot be timed (before any timing)."""
    torch = load_torch()
    backend = getattr(args, "backend", None) or DEFAULT_BACKEND
    kind = chosen_backend(backend, torch)
    try:
        dtype = _bench_half.numpy_dtype(args.dtype)   # bfloat16: ml_dtypes'
    except ImportError as exc:
        raise BenchError(f"--dtype {args.dtype}: {exc}") from None
    half = _bench_half.is_half(dtype)
    status = backend_status(torch)
    available = {c: ok for c, (ok, _) in status.items()}
    policy = policy_for(args)
    normops_control = normops_thread_control()
    rows, copies = [], {}
    load_before = load_average()
    with thread_count(args.threads, torch):
        meta = {
            "normops_version": normops.__version__, "numpy_version": numpy.__version__,
            "torch_version": torch.__version__ if torch else None,
            "python_version": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus",
            "dtype": args.dtype, "threads": args.threads,
            "normops_threads": normops_control[0]() if normops_control else "not settable",
            "torch_threads": torch.get_num_threads() if torch else "-",
            "mode": mode_name(args),
            "repeat_policy": asdict(policy),
            "backend": backend, "backend_arrays": kind,
            "notes": {c: note for c, (_, note) in status.items() if note},
        }
        if half:
            meta.update(_bench_half.meta_fields(args.dtype, _bench_half.last_level_cache()))
        for shape in selected_shapes(args):
            inp = make_inputs(shape, dtype)
            calls = column_calls(inp, backend, kind, available, torch)
            timings = bench_shape(inp, calls, policy, alone=() if backend == "reference" else ("reference",))
            copies[shape.name] = {"nbytes": inp.x.nbytes, "kernels": copy_record(inp.x.nbytes, timings["copy"])}
            rows.extend(make_rows(shape, inp.x.nbytes, timings, backend))
    load_after = load_average()
    if load_before is not None and load_after is not None:
        # the 1-minute load average of the machine, this process included
        meta["load_average"] = {"start": load_before, "end": load_after}
    summary = summarize(rows, backend)
    if half:
        _bench_half.mark_rows(rows, meta["last_level_cache_bytes"])
        _bench_half.summarize(rows, summary)
    return {"meta": meta, "copy": copies, "rows": rows, "summary": summary}


def main(args=None):
    """Entry point: ``args`` is an argparse namespace from ``python -m normops bench``,
    or a list of command-line strings (None: sys.argv[1:]). Returns the exit status: 0,
    or 2 with the reason on stderr when the chosen backend cannot be timed."""
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(args)
    if getattr(args, "ranks", None) is not None:
        return sync_main(args)
    started = time.perf_counter()
    try:
        report = run(args)
    except BenchError as exc:
        print(f"python -m normops bench: {exc}", file=sys.stderr)
        return 2
    report["meta"]["elapsed_s"] = time.perf_counter() - started
    print(format_header(report["meta"], report["copy"], report["rows"]))
    print()
    print(format_table(report["rows"], report["meta"]["backend"]))
    print()
    print(format_footer(report["summary"], report["meta"]["notes"], report["meta"]))
    print(f"({report['meta']['elapsed_s']:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


# the whole mpiexec run of bench --ranks, started to finished
SYNC_TIMEOUT_S = {"quick": 180, "full": 900}


def sync_main(args):
    """``bench --ranks N``: normops._bench_sync on N ranks with OMP_NUM_THREADS=1 (it
    prints its own table); mpiexec's exit status, or 2 when it cannot be launched or
    runs out of time."""
    from . import _mpirun
    forwarded = ["--ranks", args.ranks] + ["--quick"] * args.quick
    if args.json:
        forwarded += ["--json", os.path.abspath(args.json)]
    timeout = SYNC_TIMEOUT_S["quick" if args.quick else "full"]
    print(f"python -m normops bench --ranks {args.ranks}: mpiexec -n {args.ranks} python -m "
          f"normops._bench_sync with OMP_NUM_THREADS=1 for every rank (timeout {timeout} s)",
          flush=True)
    try:
        return _mpirun.run(args.ranks, "normops._bench_sync", forwarded, timeout=timeout,
                           env=_mpirun.environment(OMP_NUM_THREADS=1))
    except _mpirun.LaunchError as exc:
        print(f"python -m normops bench: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
