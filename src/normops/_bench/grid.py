"""``python -m normops bench --grid``: the cpu backend against PyTorch's own batch norm and
the copy baseline on a grid of cells: layout x channels x size of x x dtype x threads x op.

Each shape (layout, channels, size, dtype) is derived from the size of x
(shapes.sized_shape); shapes of one size and dtype share their x and dy (views of one
draw), which is freed before the next size. For each thread count, a shape's three ops on
cpu and pytorch and its copies are timed in one set of alternating blocks
(standard.bench_shape with the ops as one group): the copies of those blocks are the
baseline of all three ops. Cells are the default bench's rows (standard.make_rows) with
the grid's coordinates added.
"""
import json
import sys
import time
from dataclasses import asdict

import numpy

from . import grid_report, noise, plot, report
from .backends import cpu_against_torch, load_average, load_record, thread_count
from .columns import OPS, PYTORCH, normops_ops, pytorch_ops
from .half import BANDWIDTH_TARGET
from .shapes import LAYOUTS, flat_data, shared_inputs, sized_shape
from .standard import bench_shape, make_rows
from .timing import RepeatPolicy, fixed, geomean

CHANNELS = (16, 64, 128, 256, 512, 1024, 2048)
SIZES = ("256KB", "4MB", "32MB", "256MB")   # bytes of x; KB = 1024 bytes, MB = 1024 KB
DTYPES = ("float32", "float64")
THREADS = (1, 2)
# what the cpu backend should reach: the geometric mean of cpu/pytorch over the grid at
# most GEOMEAN_TARGET, and on the cells whose x holds LARGE_BYTES or more, at least
# BANDWIDTH_TARGET of the copy bandwidth
GEOMEAN_TARGET = 0.45
LARGE_BYTES = 32 * 2**20
# Calls per callable (each op on cpu and pytorch, each copy kernel) of a shape: enough to
# fill the budget, at least 5 (a 256 MB cell gets 5 calls plus its warm-up), at most 200.
POLICY = RepeatPolicy(budget_s=0.03, min_repeats=5, max_repeats=200)
QUICK = RepeatPolicy(budget_s=0.01, min_repeats=3, max_repeats=50)
# where the report goes without --json PATH / --png PATH: the current directory
JSON_PATH = "normops-bench-grid.json"
PNG_PATH = "normops-bench-grid.png"
UNITS = {"KB": 2**10, "MB": 2**20, "GB": 2**30}


def parse_size(text):
    """Bytes of a size such as 256KB, 4MB or 1GB (binary units)."""
    number, unit = text[:-2], text[-2:].upper()
    if unit not in UNITS or not number.isdigit() or int(number) < 1:
        raise ValueError(f"a size is a whole number and KB, MB or GB, e.g. 256KB; got {text!r}")
    return int(number) * UNITS[unit]


def selection(args):
    """The grid's axes from the command line, each defaulting to the full grid's."""
    return {"layouts": args.layouts or LAYOUTS, "channels": args.channels or CHANNELS,
            "sizes": args.sizes or SIZES, "dtypes": args.dtypes or DTYPES,
            "threads": args.threads_list or THREADS, "ops": args.ops or OPS}


def label(cell):
    return (f"{cell['layout']} C={cell['channels']} {cell['size']} {cell['dtype']} "
            f"threads={cell['threads']} {cell['op']}")


def progress(text):
    print(text, file=sys.stderr, flush=True)


def time_size(size, dtype, axes, policy, torch, counter):
    """The cells of every layout and channel count of one size and dtype, on one draw of
    x and dy (freed on return)."""
    nbytes, itemsize = parse_size(size), numpy.dtype(dtype).itemsize
    shapes = [(layout, c, sized_shape(layout, c, nbytes, itemsize))
              for layout in axes["layouts"] for c in axes["channels"]]
    x, dy = flat_data(max(int(numpy.prod(s.dims)) for _, _, s in shapes), dtype)
    ops = tuple(axes["ops"])
    cells = []
    for layout, channels, shape in shapes:
        inp = shared_inputs(shape, x, dy, dtype)
        calls = {"cpu": normops_ops("cpu", inp), PYTORCH: pytorch_ops(torch, inp)}
        for threads in axes["threads"]:
            started = time.perf_counter()
            with thread_count(threads, torch):
                timings = bench_shape(inp, calls, policy, alone=(), groups=(ops,))
            for row in make_rows(shape, inp.x.nbytes, timings, "cpu", ops):
                row.update(layout=layout, channels=channels, size=size, size_bytes=nbytes,
                           dtype=dtype, threads=threads, noisy=bool(row["noisy_columns"]))
                cells.append(row)
            counter[0] += 1
            progress(f"[{counter[0]}/{counter[1]}] {layout} C={channels} {size} {dtype} "
                     f"threads={threads} ({shape.name}): {time.perf_counter() - started:.1f} s, "
                     f"{time.perf_counter() - counter[2]:.0f} s in all")
    return cells


def stats(cells):
    """The grid's verdicts over ``cells``."""
    ratios = [c["cpu_over_pytorch"] for c in cells if c["cpu_over_pytorch"] is not None]
    mean = geomean(ratios) if ratios else None
    large = [c for c in cells if c["nbytes"] >= LARGE_BYTES and c["cpu_fraction_of_copy"] is not None]
    return {
        "cells": len(cells),
        "noisy_cells": [label(c) for c in cells if c["noisy"]],
        "compared": len(ratios),
        "not_faster": [{"cell": label(c), "cpu_over_pytorch": c["cpu_over_pytorch"]}
                       for c in cells if c["cpu_over_pytorch"] is not None and c["cpu_over_pytorch"] >= 1],
        "geomean_cpu_over_pytorch": mean,
        "geomean_target_met": None if mean is None else mean <= GEOMEAN_TARGET,
        "large_cells": len(large),
        "below_bandwidth": [{"cell": label(c), "cpu_fraction_of_copy": c["cpu_fraction_of_copy"]}
                            for c in large if c["cpu_fraction_of_copy"] < BANDWIDTH_TARGET],
    }


def summarize(cells, load, threads):
    return {"geomean_target": GEOMEAN_TARGET, "bandwidth_target": BANDWIDTH_TARGET,
            "large_bytes": LARGE_BYTES, **stats(cells),
            "by_threads": {str(t): stats([c for c in cells if c["threads"] == t]) for t in threads},
            "noise": noise.assess([label(c) for c in cells if c["noisy"]], len(cells), load,
                                  max(threads))}


def run(args):
    """Time the grid; returns the JSON-ready report. BenchError (before any timing) when
    the cpu backend or PyTorch is missing, or a PNG is asked for without matplotlib."""
    torch = cpu_against_torch("--grid")
    if not args.no_png:
        plot.require_matplotlib()
    axes = selection(args)
    policy = (QUICK if args.quick else POLICY) if args.repeats is None else fixed(args.repeats)
    started = time.perf_counter()
    shapes = len(axes["layouts"]) * len(axes["channels"]) * len(axes["sizes"]) * len(axes["dtypes"])
    counter = [0, shapes * len(axes["threads"]), started]
    load_before = load_average()
    cells = [cell for size in axes["sizes"] for dtype in axes["dtypes"]
             for cell in time_size(size, dtype, axes, policy, torch, counter)]
    load = load_record(load_before, load_average())
    meta = {**report.environment(), "torch_version": torch.__version__,
            "mode": "grid", "repeat_policy": asdict(policy), "grid": axes,
            "noisy_spread": noise.NOISY_SPREAD, "load_average": load,
            "elapsed_s": time.perf_counter() - started}
    return {"meta": meta, "cells": cells, "summary": summarize(cells, load, axes["threads"])}


def main(args):
    """``bench --grid``: time the grid, print its table and summary, write the JSON and
    the PNG heatmap; 0."""
    result = run(args)
    json_path = args.json or JSON_PATH
    png_path = None if args.no_png else (args.png or PNG_PATH)
    with open(json_path, "w") as f:
        json.dump(result, f, indent=2)
    if png_path:
        plot.heatmap(result["cells"], png_path)
    print(grid_report.format_report(result, json_path, png_path))
    return 0
