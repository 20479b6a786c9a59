"""Time batch_norm's forward (training and inference) and backward on the cpu and
reference backends against PyTorch, and set each time against the copy bandwidth.

Every cell (shape x op x backend) is the median of single-call timings after one warm-up
call; cpu, torch and the copy are timed in alternating blocks. The effective bandwidth of
the cpu backend counts the array traffic an op cannot avoid (PASSES) and is compared with
a plain copy of a buffer as large as x, timed in the op's own blocks: per shape because
caches make small and large buffers copy at different speeds, per op so that both see the
same spells of the machine.
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

OPS = ("forward-train", "backward", "inference")
# Array-sized reads and writes each op must make at least: forward and inference read x
# and write y; backward reads x and dy and writes dx.
PASSES = {"forward-train": 2, "backward": 3, "inference": 2}
BACKENDS = ("cpu", "reference", "torch")
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


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# Blocks per callable in time_in_rounds: a slow spell of this shared machine (seconds)
# then lands on every backend's calls alike instead of on one backend's block (with 3
# blocks, the sub-millisecond rows swung by 30 % between runs; see benchmarks/README.md).
ROUNDS = 8


def time_in_rounds(fns, policy, rounds=ROUNDS):
    """Samples (seconds of single calls) of each callable in ``fns`` (name -> fn). Each is
    warmed up once (which also sizes its repeat count); then its calls run back to back in
    ``rounds`` blocks, which alternate with the other callables' blocks. The collector is
    paused so that a collection lands in no sample."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        wanted = {name: policy.repeats(_seconds(fn)) for name, fn in fns.items()}
        samples = {name: [] for name in fns}
        for k in range(rounds):
            for name, fn in fns.items():
                share = wanted[name] * (k + 1) // rounds - wanted[name] * k // rounds
                samples[name] += [_seconds(fn) for _ in range(share)]
    finally:
        if was_enabled:
            gc.enable()
    return samples


def timing_of(samples):
    return Timing(statistics.median(samples), min(samples), len(samples))


def time_callable(fn, policy):
    """Median of single calls of ``fn`` after one warm-up call, in one block."""
    return timing_of(time_in_rounds({"fn": fn}, policy, rounds=1)["fn"])


# ---------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Inputs:
    shape: Shape
    x: numpy.ndarray
    dy: numpy.ndarray
    gamma: numpy.ndarray
    beta: numpy.ndarray
    running_mean: numpy.ndarray
    running_var: numpy.ndarray


def make_inputs(shape, dtype):
    """Random normal data, the same on every run and whatever --shapes picks (seeded by
    the shape's place in SHAPES)."""
    rng = numpy.random.default_rng([SEED, SHAPES.index(shape)])
    c = shape.channels

    def normal(size, scale=1.0, offset=0.0):
        return offset + scale * rng.standard_normal(size, dtype=dtype)  # stays in dtype

    return Inputs(
        shape=shape,
        x=rng.standard_normal(shape.dims, dtype=dtype),
        dy=rng.standard_normal(shape.dims, dtype=dtype),
        gamma=normal(c, 0.1, 1.0),
        beta=normal(c, 0.1),
        running_mean=normal(c, 0.1),
        running_var=rng.uniform(0.5, 1.5, c).astype(dtype),
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
    """Zero-argument copies of x into a buffer of its size, one per copy kernel."""
    dst = numpy.empty_like(x)
    return {name: (lambda k=kernel: k(dst, x)) for name, kernel in kernels.items()}


def copy_gbps(nbytes, timing):
    return 2 * nbytes / timing.median_s / GB  # a copy reads and writes nbytes


# ---------------------------------------------------------------------------- backends

def load_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def normops_backend_status(name):
    """(available, note): note says why a backend is left out."""
    for info in normops.backends():
        if info.name == name:
            return info.available, None if info.available else f"unavailable: {info.reason}"
    return False, "not registered in this build"


def backend_status(torch):
    status = {name: normops_backend_status(name) for name in ("cpu", "reference")}
    status["torch"] = (True, None) if torch is not None else (False, "not installed")
    return status


def normops_ops(backend, inp):
    """The three ops on a normops backend as zero-argument callables. Each op gets its
    own running statistics so the in-place updates of forward-train leave inference's alone."""
    s = inp.shape
    rm, rv = inp.running_mean.copy(), inp.running_var.copy()
    rm_eval, rv_eval = inp.running_mean.copy(), inp.running_var.copy()
    common = dict(momentum=MOMENTUM, eps=EPS, axis=s.axis, backend=backend)
    _, saved = normops.batch_norm(inp.x, inp.gamma, inp.beta, rm.copy(), rv.copy(), training=True, **common)
    return {
        "forward-train": lambda: normops.batch_norm(
            inp.x, inp.gamma, inp.beta, rm, rv, training=True, **common),
        "backward": lambda: normops.batch_norm_backward(inp.dy, inp.x, saved, inp.gamma, backend=backend),
        "inference": lambda: normops.batch_norm(
            inp.x, inp.gamma, inp.beta, rm_eval, rv_eval, training=False, **common),
    }


def torch_ops(torch, inp):
    """The same three ops in PyTorch, on tensors sharing the numpy buffers. NHWC data
    becomes an NCHW tensor in channels_last memory format, which is how PyTorch holds it."""
    def tensor(a):
        t = torch.from_numpy(a)
        return t.permute(0, 3, 1, 2) if inp.shape.layout == "NHWC" else t

    x, dy = tensor(inp.x), tensor(inp.dy)
    w, b = torch.from_numpy(inp.gamma), torch.from_numpy(inp.beta)
    if inp.shape.layout == "NHWC":
        assert x.is_contiguous(memory_format=torch.channels_last)
    rm, rv = torch.from_numpy(inp.running_mean.copy()), torch.from_numpy(inp.running_var.copy())
    rm_eval, rv_eval = torch.from_numpy(inp.running_mean.copy()), torch.from_numpy(inp.running_var.copy())
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


def ops_for(backend, torch, inp):
    return torch_ops(torch, inp) if backend == "torch" else normops_ops(backend, inp)


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

def bench_shape(inp, available, torch, policy):
    """Timings of one shape: {op: {backend: Timing}, ("copy", op): {kernel: Timing},
    "copy": {kernel: Timing}}. For each op, the copies, cpu and torch are timed in
    alternating blocks (time_in_rounds), so the op's cpu time is set against the copies
    timed in the same spells of the machine; "copy" pools the three ops' copy samples
    (the shape's copy bandwidth in the header). The slow reference is timed on its own."""
    copies = {("copy", name): fn for name, fn in copy_calls(inp.x, copy_kernels()).items()}
    calls = {b: ops_for(b, torch, inp) for b in BACKENDS if available[b]}
    copy_samples = {key: [] for key in copies}
    result = {}
    for op in OPS:
        fast = {b: fns[op] for b, fns in calls.items() if b != "reference"}
        samples = time_in_rounds({**copies, **fast}, policy)
        for key in copies:
            copy_samples[key] += samples[key]
        result[("copy", op)] = {key[1]: timing_of(samples[key]) for key in copies}
        result[op] = {b: timing_of(samples[b]) for b in fast}
        if "reference" in calls:
            result[op]["reference"] = time_callable(calls["reference"][op], policy)
    result["copy"] = {name: timing_of(s) for (_, name), s in copy_samples.items()}
    return result


def ratio(numerator, denominator):
    if numerator is None or denominator is None:
        return None
    return numerator.median_s / denominator.median_s


def make_rows(shape, nbytes, timings):
    """One dict per op with its times, ratios and the cpu backend's bandwidth, against the
    faster copy kernel timed in the op's own rounds."""
    rows = []
    for op in OPS:
        best_copy = max(copy_gbps(nbytes, t) for t in timings[("copy", op)].values())
        cells = timings[op]
        cpu = cells.get("cpu")
        cpu_gbps = PASSES[op] * nbytes / cpu.median_s / GB if cpu else None
        rows.append({
            "shape": shape.name, "op": op, "dims": list(shape.dims), "axis": shape.axis,
            "nbytes": nbytes, "passes": PASSES[op], "copy_gbps": best_copy,
            "copy_kernels": copy_record(nbytes, timings[("copy", op)]),
            "cells": {b: {"median_s": t.median_s, "min_s": t.min_s, "repeats": t.repeats}
                      for b, t in cells.items()},
            "cpu_over_torch": ratio(cpu, cells.get("torch")),
            "reference_over_cpu": ratio(cells.get("reference"), cpu),
            "cpu_gbps": cpu_gbps,
            "cpu_fraction_of_copy": cpu_gbps / best_copy if cpu_gbps else None,
        })
    return rows


def copy_record(nbytes, copy_timings):
    return {name: {"median_s": t.median_s, "repeats": t.repeats, "gbps": copy_gbps(nbytes, t)}
            for name, t in copy_timings.items()}


def summarize(rows):
    """Geometric mean and worst of cpu/torch over the rows that have both."""
    ratios = [(r["cpu_over_torch"], r) for r in rows if r["cpu_over_torch"] is not None]
    if not ratios:
        return {"rows_compared": 0, "geomean_cpu_over_torch": None, "max_cpu_over_torch": None,
                "max_at": None, "cpu_faster_than_torch_everywhere": None}
    worst, at = max(ratios, key=lambda p: p[0])
    return {
        "rows_compared": len(ratios),
        "geomean_cpu_over_torch": math.exp(statistics.fmean(math.log(v) for v, _ in ratios)),
        "max_cpu_over_torch": worst,
        "max_at": f"{at['shape']} {at['op']}",
        # only a verdict when every row was compared
        "cpu_faster_than_torch_everywhere": (len(ratios) == len(rows)
                                             and all(v < 1 for v, _ in ratios)),
    }


# ---------------------------------------------------------------------------- report

def fmt_ms(seconds):
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_table(rows):
    header = ("shape", "op", "copy GB/s", "cpu ms", "reference ms", "torch ms",
              "cpu/torch", "ref/cpu", "cpu GB/s", "cpu/copy")
    body = []
    for r in rows:
        med = {b: (r["cells"][b]["median_s"] if b in r["cells"] else None) for b in BACKENDS}
        body.append((r["shape"], r["op"], fmt(r["copy_gbps"], ".1f"), fmt_ms(med["cpu"]),
                     fmt_ms(med["reference"]), fmt_ms(med["torch"]), fmt(r["cpu_over_torch"], ".2f"),
                     fmt(r["reference_over_cpu"], ".1f"), fmt(r["cpu_gbps"], ".1f"),
                     fmt(r["cpu_fraction_of_copy"], ".0%")))
    widths = [max(len(v) for v in col) for col in zip(header, *body)]
    # text columns left-aligned, numbers right-aligned
    def line(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def format_header(meta, copies):
    lines = [
        f"normops {meta['normops_version']}  numpy {meta['numpy_version']}  "
        f"torch {meta['torch_version'] or 'not installed'}  python {meta['python_version']}  "
        f"{meta['machine']}",
        f"dtype {meta['dtype']}  threads {meta['threads']} (normops: {meta['normops_threads']}, "
        f"torch: {meta['torch_threads']})  mode {meta['mode']}",
    ]
    for backend, note in meta["notes"].items():
        lines.append(f"{backend} column left empty: {note}")
    lines.append("copy bandwidth (2 x nbytes / median copy time, the three ops' blocks pooled; each "
                 "row's baseline is the larger in its op's blocks):")
    for name, rec in copies.items():
        kernels = "  ".join(f"{k} {v['gbps']:.1f} GB/s" for k, v in rec["kernels"].items())
        lines.append(f"  {name:<18} {rec['nbytes'] / 1e6:7.1f} MB  {kernels}")
    return "\n".join(lines)


def format_footer(summary, notes):
    if summary["rows_compared"] == 0:
        why = "; ".join(f"{b}: {n}" for b, n in notes.items() if b in ("cpu", "torch")) or "no rows"
        return f"cpu/torch: n/a ({why})"
    verdict = summary["cpu_faster_than_torch_everywhere"]
    return "\n".join([
        f"geometric mean cpu/torch over {summary['rows_compared']} rows: "
        f"{summary['geomean_cpu_over_torch']:.2f}  (< 1: cpu faster)",
        f"worst cpu/torch: {summary['max_cpu_over_torch']:.2f} ({summary['max_at']})",
        f"cpu faster than torch on every row: {'yes' if verdict else 'no'}",
    ])


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
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats (whole run well under 30 s); noisier numbers")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=positive_int, default=usable_cpus(),
                        help="threads for the cpu backend and torch (default: the CPUs this "
                             "process may run on)")
    parser.add_argument("--shapes", type=shape_list, nargs="+", metavar="NAME",
                        help=f"a subset of the shapes: {', '.join(SHAPES_BY_NAME)}")
    parser.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    parser.add_argument("--repeats", type=positive_int,
                        help="fixed number of timed calls per cell, overriding the adaptive count (for tests)")
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


def run(args):
    """Measure everything; returns the JSON-ready report."""
    torch = load_torch()
    status = backend_status(torch)
    available = {b: ok for b, (ok, _) in status.items()}
    policy = policy_for(args)
    normops_control = normops_thread_control()
    rows, copies = [], {}
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
            "notes": {b: note for b, (_, note) in status.items() if note},
        }
        for shape in selected_shapes(args):
            inp = make_inputs(shape, numpy.dtype(args.dtype))
            timings = bench_shape(inp, available, torch, policy)
            copies[shape.name] = {"nbytes": inp.x.nbytes, "kernels": copy_record(inp.x.nbytes, timings["copy"])}
            rows.extend(make_rows(shape, inp.x.nbytes, timings))
    return {"meta": meta, "copy": copies, "rows": rows, "summary": summarize(rows)}


def main(args=None):
    """Entry point: ``args`` is an argparse namespace from ``python -m normops bench``,
    or a list of command-line strings (None: sys.argv[1:])."""
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(args)
    started = time.perf_counter()
    report = run(args)
    report["meta"]["elapsed_s"] = time.perf_counter() - started
    print(format_header(report["meta"], report["copy"]))
    print()
    print(format_table(report["rows"]))
    print()
    print(format_footer(report["summary"], report["meta"]["notes"]))
    print(f"({report['meta']['elapsed_s']:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
