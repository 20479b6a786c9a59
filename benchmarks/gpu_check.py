"""GPU check of normops: the conformance kit on the cupy backend (CuPy arrays) with its
array-API kernels and with its fused CUDA kernels (NORMOPS_CUPY_KERNELS=fused, here the
backend "cupy-fused"), and on the torch backend with tensors on --device (CUDA by
default); each set against the reference backend on fixed cases (max relative error of
y, dx, dgamma, dbeta and the running statistics); forward-train, backward and inference
timed for normops-cupy, normops-cupy-fused, normops-torch and PyTorch's own batch norm,
with the effective bandwidth set against a device-to-device copy of x timed in the same
blocks. Prints one table on stdout (progress goes to stderr).

    python benchmarks/gpu_check.py                  # on a GPU (benchmarks/gpu_check.sh runs it)
    python benchmarks/gpu_check.py --device cpu --quick   # CPU tensors, tiny shapes (CI)

The cupy parts run whenever CuPy finds a GPU (the fused one also needs numba-cuda);
otherwise their rows say why they were skipped (--strict makes a skipped part a failure). Exit status: 0 when every part that ran passed,
1 otherwise, 2 for bad arguments.
"""
import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy

import normops
from normops import testing
from normops._bench.columns import GB, OPS, PASSES, normops_ops, pytorch_ops
from normops._bench.shapes import SEED, Inputs, Shape
from normops._bench.timing import RepeatPolicy, pooled, time_in_rounds, timing_of

# (name, layout, dims): float32, channel axis 1 for NCHW and NC, -1 for NHWC; x is 205 MB,
# 205 MB and 268 MB
SHAPES = (("NCHW-256x64x56x56", "NCHW", (256, 64, 56, 56)),
          ("NHWC-256x56x56x64", "NHWC", (256, 56, 56, 64)),
          ("NC-65536x1024", "NC", (65536, 1024)))
QUICK_SHAPES = (("NCHW-8x16x14x14", "NCHW", (8, 16, 14, 14)),
                ("NHWC-8x14x14x16", "NHWC", (8, 14, 14, 16)),
                ("NC-256x64", "NC", (256, 64)))
# timed calls per cell, split into alternating blocks (as python -m normops bench does)
REPEATS, ROUNDS = 100, 10
QUICK_REPEATS, QUICK_ROUNDS = 6, 3
# --quick runs every property on this many examples instead of the profile's
QUICK_EXAMPLES = 3
# seconds the kit may take per backend before the rest of its properties are left out
# (and the check fails): 3 x 90 s keeps benchmarks/gpu_check.sh under 8 minutes
KIT_BUDGET_S = 90.0
# the name the cupy backend with its fused kernels is registered under here
FUSED = "cupy-fused"


def fixed_cases():
    """(label, case): the kit's make_case, so each is rebuilt from its recipe."""
    make = testing.make_case
    return (
        ("NC 64x32 f32", make((64, 32), 1, "float32", regime="moderate", seed=1)),
        ("NCHW 8x16x7x7 f32 offset", make((8, 16, 7, 7), 1, "float32", regime="large_offset", seed=2)),
        ("NHWC 8x7x7x16 f32", make((8, 7, 7, 16), -1, "float32", regime="moderate", seed=3)),
        ("NCHW 16x8x5x5 f64 mixed", make((16, 8, 5, 5), 1, "float64", regime="mixed_scales", seed=4)),
    )


# ---------------------------------------------------------------------------- libraries

@dataclass
class Library:
    """An array library on one device, for one normops backend: ``adapter`` is the kit's
    (testing.array_library), ``sync`` waits for the device, ``copy_of(x)`` returns a
    zero-argument copy of x into a buffer of its own; ``reason`` says why it cannot run."""

    name: str                         # "cupy" or "torch"
    backend: str                      # the normops backend that takes its arrays
    reason: Optional[str] = None
    adapter: Any = None
    device: Any = None                # for testing.backend_implementation (None: default)
    sync: Callable = field(default=lambda: None)
    copy_of: Optional[Callable] = None

    @property
    def available(self):
        return self.reason is None

    @property
    def where(self):
        if self.adapter is None:
            return self.name
        device = self.adapter.device   # a cupy.cuda.Device, a torch.device
        return f"{self.name} on {f'cuda:{device.id}' if self.name == 'cupy' else device}"

    @property
    def target(self):
        return f"normops-{self.backend}"

    @property
    def device_type(self):
        """"cuda" or "cpu": which arrays can be timed against each other."""
        device = getattr(self.adapter, "device", None)
        return "cuda" if self.name == "cupy" else getattr(device, "type", None)


def backend_reason(name):
    """Why normops's backend ``name`` cannot load here (None: it can)."""
    for info in normops.backends():
        if info.name == name:
            return None if info.available else info.reason
    return "not registered"


def cupy_library():
    """CuPy on its current GPU; normops's cupy backend checks for CuPy and a GPU."""
    reason = backend_reason("cupy")
    if reason is not None:
        return Library("cupy", "cupy", reason=reason)
    import cupy

    def copy_of(x):
        dst = cupy.empty_like(x)
        return lambda: cupy.copyto(dst, x)

    return Library("cupy", "cupy", adapter=testing.array_library("cupy"),
                   sync=cupy.cuda.runtime.deviceSynchronize, copy_of=copy_of)


def cupy_fused_library():
    """CuPy through the cupy backend's fused CUDA kernels (what NORMOPS_CUPY_KERNELS=fused
    gives the "cupy" backend), registered as "cupy-fused" so both run in one process."""
    if FUSED not in {info.name for info in normops.backends()}:
        normops.register_backend(FUSED, "normops._backends.cupy_fused:FusedCupyBackend")
    library = cupy_library()
    reason = library.reason or backend_reason(FUSED)
    if reason is not None:
        return Library("cupy", FUSED, reason=reason)
    library.backend = FUSED
    return library


def torch_library(device):
    """PyTorch tensors on ``device`` through normops's torch backend."""
    reason = backend_reason("torch")
    if reason is not None:
        return Library("torch", "torch", reason=reason)
    import torch
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        return Library("torch", "torch", reason=f"--device {device!r}: {exc}")
    sync = lambda: None  # noqa: E731 - the CPU has nothing to wait for
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return Library("torch", "torch", reason=(
                f"torch.cuda.is_available() is False (PyTorch {torch.__version__}, built for "
                f"CUDA {torch.version.cuda or 'none'})"))
        if dev.index is None:   # the tensors' device says cuda:N, and the kit compares
            dev = torch.device("cuda", torch.cuda.current_device())
        sync = lambda: torch.cuda.synchronize(dev)  # noqa: E731

    def copy_of(x):
        dst = torch.empty_like(x)
        return lambda: dst.copy_(x)

    return Library("torch", "torch", adapter=testing.array_library("torch", dev), device=dev,
                   sync=sync, copy_of=copy_of)


# ---------------------------------------------------------------------------- rows

HEADER = ("part", "target", "case", "result", "median ms", "p25-p75 ms", "GB/s", "of copy",
          "/pytorch")


@dataclass
class Row:
    part: str
    target: str
    case: str
    result: str
    failed: bool = False
    skipped: bool = False
    median_s: Optional[float] = None
    p25_s: Optional[float] = None
    p75_s: Optional[float] = None
    gbps: Optional[float] = None
    of_copy: Optional[float] = None
    over_pytorch: Optional[float] = None
    details: dict = field(default_factory=dict)

    def cells(self):
        def ms(s):
            return "-" if s is None else f"{s * 1e3:.3f}"

        def num(v, spec):
            return "-" if v is None else format(v, spec)

        spread = "-" if self.p25_s is None else f"{ms(self.p25_s)}-{ms(self.p75_s)}"
        return (self.part, self.target, self.case, self.result, ms(self.median_s), spread,
                num(self.gbps, ".0f"), num(self.of_copy, ".0%"), num(self.over_pytorch, ".2f"))


def format_table(rows):
    body = [r.cells() for r in rows]
    widths = [max(len(c) for c in col) for col in zip(HEADER, *body)]

    def line(cells):   # text left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(HEADER), "  ".join("-" * w for w in widths), *map(line, body)])


def skipped(part, library):
    return Row(part, library.target, "-", f"skipped: {library.reason}", skipped=True)


def progress(text):
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the kit

def kit_row(library, profile, budget_s, label):
    """The kit's every property on ``library``'s backend through the public ops; those
    the budget leaves no time for are counted as not run (a failure: the check is
    incomplete)."""
    if not library.available:
        return skipped("kit", library), None
    impl = testing.backend_implementation(library.backend, library.name, library.device)
    start = time.perf_counter()
    results, not_run = [], []
    for prop in testing.properties():
        if time.perf_counter() - start > budget_s:
            not_run.append(prop.name)
            continue
        result = testing.run(impl, profile=profile, names=[prop.name]).results[0]
        progress(f"  kit {library.where}: {result.name}: {result.status} "
                 f"({result.examples} examples, {result.seconds:.1f} s)")
        results.append(result)
    report = testing.Report(impl.name, tuple(results))
    counts = report.counts()
    text = f"{counts['passed']} passed, {counts['FAILED']} failed, {counts['n/a']} n/a"
    if not_run:
        text += f", {len(not_run)} not run (--kit-budget {budget_s:g} s spent)"
    row = Row("kit", library.target, f"{library.where}, {label}", text,
              failed=not report.passed or bool(not_run), median_s=None,
              details={"results": [r.__dict__ for r in results], "not_run": not_run,
                       "seconds": time.perf_counter() - start})
    return row, report


# ---------------------------------------------------------------------------- vs reference

STEP_ARRAYS = ("y", "dx", "dgamma", "dbeta", "running_mean", "running_var")


def relative_errors(got, want):
    """max |got - want| / max |want| of each array (the largest value as the scale, so a
    near-zero element does not blow the error up)."""
    errors = {}
    for key in STEP_ARRAYS:
        a, b = numpy.asarray(got[key], dtype=numpy.float64), numpy.asarray(want[key], dtype=numpy.float64)
        scale = numpy.max(numpy.abs(b)) if b.size else 0.0
        diff = numpy.max(numpy.abs(a - b)) if b.size else 0.0
        errors[key] = float(diff / scale) if scale > 0 else float(diff)
    return errors


def compare_rows(library):
    """One row per fixed case and mode: the worst relative error over the step's arrays,
    and the kit's own tolerance check (testing.assert_steps_close) as the verdict."""
    if not library.available:
        return [skipped("vs reference", library)]
    impl = testing.backend_implementation(library.backend, library.name, library.device)
    reference = testing.backend_implementation("reference")
    rows = []
    for label, case in fixed_cases():
        for training in (True, False):
            mode = "train" if training else "eval"
            want = testing.bn_step(reference, case, training=training)
            errors = {}
            try:
                got = testing.bn_step(impl, case, training=training)
                errors = relative_errors(got, want)
                worst = max(errors, key=errors.get)
                testing.assert_steps_close(got, want, case)
                result, failed = f"ok, max rel err {errors[worst]:.1e} ({worst})", False
            except AssertionError as exc:
                result, failed = f"FAILED: {str(exc).splitlines()[0]}", True
            except Exception as exc:   # a crash is reported, and the other cases still run
                result, failed = f"FAILED: raised {type(exc).__name__}: {exc}", True
            rows.append(Row("vs reference", library.target, f"{label} {mode}", result,
                            failed=failed, details={"errors": errors, "recipe": case.recipe}))
    return rows


# ---------------------------------------------------------------------------- timing

def host_inputs(layout, dims, seed):
    rng = numpy.random.default_rng([SEED, seed])
    shape = Shape(layout, dims)
    c = shape.channels
    return Inputs(
        shape=shape,
        x=rng.standard_normal(dims, dtype=numpy.float32),
        dy=rng.standard_normal(dims, dtype=numpy.float32),
        gamma=(1.0 + 0.1 * rng.standard_normal(c)).astype(numpy.float32),
        beta=(0.1 * rng.standard_normal(c)).astype(numpy.float32),
        running_mean=(0.1 * rng.standard_normal(c)).astype(numpy.float32),
        running_var=rng.uniform(0.5, 1.5, c).astype(numpy.float32))


def on_device(library, inp):
    to = library.adapter.to_library
    return Inputs(shape=inp.shape, **{f: to(getattr(inp, f)) for f in (
        "x", "dy", "gamma", "beta", "running_mean", "running_var")})


def synced(fn, sync):
    def run():
        fn()
        sync()
    return run


def time_shape(name, layout, dims, seed, libraries, torch, torch_lib, policy, rounds):
    """Rows of one shape: per op, every target and each library's copy of x timed in
    alternating blocks, each call followed by a synchronisation of its device; then one
    row per library's copy, its samples of the three ops pooled."""
    inp = host_inputs(layout, dims, seed)
    nbytes = inp.x.nbytes
    calls, copies, library_of = {}, {}, {}
    for library in libraries:
        dev = on_device(library, inp)
        calls[library.target] = {op: synced(fn, library.sync)
                                 for op, fn in normops_ops(library.backend, dev).items()}
        library_of[library.target] = library
        copies[f"copy ({library.name})"] = synced(library.copy_of(dev.x), library.sync)
        if library is torch_lib:
            calls["pytorch"] = {op: synced(fn, library.sync)
                                for op, fn in pytorch_ops(torch, dev).items()}
            library_of["pytorch"] = library
    for library in libraries:
        library.sync()
    rows, copy_samples = [], {key: [] for key in copies}
    for op in OPS:
        fns = {**copies, **{target: ops[op] for target, ops in calls.items()}}
        for fn in fns.values():   # compiles CuPy's kernels, warms the allocators
            fn()
        blocks = time_in_rounds(fns, policy, rounds)
        timings = {key: timing_of(pooled(b)) for key, b in blocks.items()}
        for key in copies:
            copy_samples[key] += pooled(blocks[key])
        pytorch = timings.get("pytorch")
        for target in calls:
            t, library = timings[target], library_of[target]
            copy = timings[f"copy ({library.name})"]
            gbps = PASSES[op] * nbytes / t.median_s / GB
            # a ratio to PyTorch only between arrays on the same kind of device
            comparable = pytorch is not None and library.device_type == torch_lib.device_type
            rows.append(Row("time", target, f"{name} {op}", "ok", median_s=t.median_s,
                            p25_s=t.p25_s, p75_s=t.p75_s, gbps=gbps,
                            of_copy=gbps / (2 * nbytes / copy.median_s / GB),
                            over_pytorch=t.median_s / pytorch.median_s if comparable else None,
                            details={"repeats": t.repeats, "min_s": t.min_s,
                                     "passes": PASSES[op], "nbytes": nbytes}))
    for key, samples in copy_samples.items():
        t = timing_of(samples)
        rows.append(Row("time", key, f"{name} x, 3 ops' blocks", "ok", median_s=t.median_s,
                        p25_s=t.p25_s, p75_s=t.p75_s, gbps=2 * nbytes / t.median_s / GB,
                        details={"repeats": t.repeats, "nbytes": nbytes}))
    return rows


def timing_rows(shapes, libraries, torch_lib, policy, rounds):
    ready = [lib for lib in libraries if lib.available]
    rows = [skipped("time", lib) for lib in libraries if not lib.available]
    if not ready:
        return rows
    torch = None
    if torch_lib.available:
        import torch
    for seed, (name, layout, dims) in enumerate(shapes):
        progress(f"  timing {name} on {', '.join(lib.where for lib in ready)}")
        try:
            rows += time_shape(name, layout, dims, seed, ready, torch, torch_lib, policy, rounds)
        except Exception as exc:   # out of memory, say: reported, the other shape still runs
            rows.append(Row("time", ", ".join(lib.target for lib in ready), name,
                            f"FAILED: raised {type(exc).__name__}: {exc}", failed=True))
    return rows


# ---------------------------------------------------------------------------- main

def build_parser():
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda",
                        help="the torch device of the torch backend's tensors (default: cuda; "
                             "cpu runs the same checks on CPU tensors)")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny shapes, {QUICK_REPEATS} timed calls per cell, "
                             f"{QUICK_EXAMPLES} examples per property")
    parser.add_argument("--strict", action="store_true",
                        help="a part skipped for want of CuPy, PyTorch or a GPU is a failure "
                             "(benchmarks/gpu_check.sh sets it)")
    parser.add_argument("--kit-budget", type=float, default=KIT_BUDGET_S, metavar="SECONDS",
                        help=f"time the kit may take per backend (default {KIT_BUDGET_S:g})")
    parser.add_argument("--skip-kit", action="store_true", help="leave the conformance kit out")
    parser.add_argument("--json", metavar="PATH", help="also write every row to this JSON file")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    if args.quick:
        from hypothesis import settings
        profile = settings(testing.PROFILES["ci"], max_examples=QUICK_EXAMPLES)
        label = f"{QUICK_EXAMPLES} examples per property (--quick)"
    else:
        profile = testing.profile_name()   # HYPOTHESIS_PROFILE, ci by default
        label = f"profile {profile}"
    shapes = QUICK_SHAPES if args.quick else SHAPES
    policy = RepeatPolicy(0.0, 1, 1, fixed=QUICK_REPEATS if args.quick else REPEATS)
    rounds = QUICK_ROUNDS if args.quick else ROUNDS

    torch_lib = torch_library(args.device)
    libraries = (cupy_library(), cupy_fused_library(), torch_lib)
    for lib in libraries:
        progress(f"{lib.target}: {lib.where if lib.available else 'skipped: ' + lib.reason}")

    rows = []
    for lib in libraries:
        if args.skip_kit:
            continue
        progress(f"kit on {lib.where} ({label})")
        row, report = kit_row(lib, profile, args.kit_budget, label)
        rows.append(row)
        if report is not None and not report.passed:
            progress(report.failures())
    for lib in libraries:
        progress(f"vs reference: {lib.where}")
        rows += compare_rows(lib)
    rows += timing_rows(shapes, libraries, torch_lib, policy, rounds)

    print(f"normops {normops.__version__} ({os.path.dirname(normops.__file__)})  "
          f"numpy {numpy.__version__}  python "
          f"{platform.python_version()}  --device {args.device}  "
          f"{'quick' if args.quick else 'full'}  ({time.perf_counter() - started:.0f} s)")
    print("time: median of single calls, each followed by a device synchronisation, the "
          "targets and copies of an op in alternating blocks; GB/s: minimal traffic (2 "
          "passes of x forward and inference, 3 backward) / median; of copy: that over the "
          "same library's copy of x in the same blocks; /pytorch: median over PyTorch's")
    print()
    print(format_table(rows))
    failed = [r for r in rows if r.failed]
    missing = [r for r in rows if r.skipped] if args.strict else []
    print()
    print(f"{len(failed)} failed, {sum(r.skipped for r in rows)} skipped"
          + (" (--strict: a failure)" if missing else "")
          + f"; {'FAILED' if failed or missing else 'passed'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "quick": args.quick,
                       "rows": [r.__dict__ for r in rows]}, f, indent=2, default=str)
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
