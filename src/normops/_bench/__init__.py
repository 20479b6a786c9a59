"""``python -m normops bench``: the command line and its modes, one module each.

* standard: the default bench (the shapes of the performance model; --backend, --dtype);
  half: what its float16 and bfloat16 runs do differently;
* grid: ``--grid``, the cpu backend against PyTorch on a grid of layouts, channel counts,
  sizes, dtypes, thread counts and ops (grid_report prints it, plot draws its heatmap);
* overhead: ``--overhead``, the fixed cost of a call on tiny arrays;
* fused: ``--fused``, the fused epilogue relu(BN(x) + z) against plain BN, the epilogue in
  NumPy and PyTorch's composition;
* ranks: ``--ranks N``, which launches sync, the rank program, under mpiexec.

The pieces they share: timing (repeat policies, alternating blocks, quartiles), noise
(which numbers are not worth quoting), shapes (shapes and their inputs), columns (the ops
on normops and in PyTorch as callables, the copy baselines), backends (which columns can
run, thread counts) and report (the printed tables). This module re-exports what the
tests use.
"""
import argparse
import sys

from . import fused, grid, half, overhead, ranks, standard
from .backends import DEFAULT_BACKEND, BenchError, usable_cpus
from .columns import OPS, as_arrays, copy_calls, copy_kernels, pytorch_ops
from .shapes import SHAPES, SHAPES_BY_NAME, make_inputs
from .standard import WITHIN

# what the tests take from here, besides the command line
__all__ = ["DESCRIPTION", "EPILOG", "OPS", "SHAPES", "SHAPES_BY_NAME", "WITHIN", "add_arguments", "flatten",
           "as_arrays", "build_parser", "copy_calls", "copy_kernels", "main", "make_inputs",
           "pytorch_ops"]

# the command's description: the default bench's docstring, first paragraph
DESCRIPTION = " ".join(standard.__doc__.split("\n\n")[0].split())
# the command's examples (%(prog)s: the command as invoked, "normops bench" say)
EPILOG = """examples:
  %(prog)s --quick                    # every shape, fewer repeats
  %(prog)s --shapes NC-256x1024 --threads 1 --json bench.json
  %(prog)s --backend torch --quick    # torch's CPU tensors against cpu
  %(prog)s --dtype bfloat16 --quick
  %(prog)s --grid --quick --layouts NCHW --dtypes float32
  %(prog)s --overhead --quick         # the cost of a call
  %(prog)s --fused --quick            # relu(BN(x) + z), fused and not
  %(prog)s --ranks 2 --quick          # synchronized BN on 2 MPI ranks"""


def shape_list(text):
    """--shapes: names separated by commas (or given as several arguments)."""
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in SHAPES_BY_NAME]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown shape(s) {', '.join(unknown)}; choose from {', '.join(SHAPES_BY_NAME)}")
    return names


def argument(parse):
    """An option's type that reads its value with ``parse``, whose ValueError message
    becomes the command's error."""
    def value(text):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    value.__name__ = parse.__name__
    return value


def listed(parse):
    """An option's type: values separated by commas, each read by ``parse``."""
    return argument(lambda text: [parse(v) for v in text.split(",") if v])


def one_of(choices):
    def parse(text):
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(map(str, choices))}")
        return text
    return parse


def positive(text):
    value = int(text)
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


positive_int = argument(positive)


def sized(text):
    grid.parse_size(text)
    return text.upper()


# the options of --grid alone: (flag, type, help)
GRID_OPTIONS = (
    ("--layouts", one_of(grid.LAYOUTS), f"layouts (default: {','.join(grid.LAYOUTS)}; NHWC and "
                                        "NDHWC are channels-last, axis=-1)"),
    ("--channels", positive, f"channel counts (default: {','.join(map(str, grid.CHANNELS))})"),
    ("--sizes", sized, f"bytes of x, KB/MB/GB binary (default: {','.join(grid.SIZES)})"),
    ("--dtypes", one_of(grid.DTYPES), f"dtypes (default: {','.join(grid.DTYPES)})"),
    ("--threads-list", positive, f"thread counts (default: {','.join(map(str, grid.THREADS))})"),
    ("--ops", one_of(OPS), f"ops (default: {','.join(OPS)})"),
)


def add_grid_arguments(parser):
    group = parser.add_argument_group(
        "--grid", "restrict the grid (values separated by commas or spaces; defaults: the full "
                  "grid); --quick, --repeats and --json apply too")
    for flag, parse, text in GRID_OPTIONS:
        group.add_argument(flag, type=listed(parse), nargs="+", metavar="V", help=text)
    group.add_argument("--png", metavar="PATH",
                       help=f"the heatmap's file (default: {grid.PNG_PATH} in the current "
                            f"directory; needs matplotlib: pip install \"normops[bench]\")")
    group.add_argument("--no-png", action="store_true", help="draw no heatmap")


def flatten(args):
    """The grid options' values as one list each (None when not given), repeats dropped."""
    for flag, _, _ in GRID_OPTIONS:
        name = flag[2:].replace("-", "_")
        groups = getattr(args, name, None)
        if groups is not None:
            setattr(args, name, list(dict.fromkeys(v for group in groups for v in group)))
    return args


# the options of one mode alone, by the mode's flag
MODE_OPTIONS = {"--grid": [flag for flag, _, _ in GRID_OPTIONS] + ["--png", "--no-png"],
                "--overhead": ["--calls"], "--fused": []}
# the default bench's options that a mode takes too
SHARED_OPTIONS = {"--fused": ("--shapes", "--dtype")}


def _given(args, flag):
    return getattr(args, flag[2:].replace("-", "_"), None)


def misplaced(args):
    """The options of a mode given without it, or the default bench's (those that tell)
    given with a mode that does not take them, as a message (None: there are none)."""
    for mode, flags in MODE_OPTIONS.items():
        given = [flag for flag in flags if _given(args, flag)]
        if given and not _given(args, mode):
            return f"{', '.join(given)}: only with {mode}"
        standard_only = {"--shapes": args.shapes, "--backend": args.backend != DEFAULT_BACKEND,
                         "--dtype": args.dtype != "float32"}
        given = [flag for flag, set_ in standard_only.items()
                 if set_ and flag not in SHARED_OPTIONS.get(mode, ())]
        if given and _given(args, mode):
            return f"{', '.join(given)}: not with {mode}" + (" (--dtypes picks the grid's)"
                                                             if mode == "--grid" else "")
    return None


def add_arguments(parser):
    parser.add_argument("--backend", default=DEFAULT_BACKEND, metavar="NAME",
                        help="the normops backend to time (default: cpu); any other is timed "
                             "in the same blocks as cpu and set against it (NAME/cpu). torch: "
                             "CPU tensors on the same memory (torch.from_numpy); a backend for "
                             "NumPy or any array-API library: the NumPy arrays. 'pytorch' is "
                             "PyTorch's own batch norm, always timed")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats (whole run well under 30 s); noisier numbers")
    parser.add_argument("--dtype", choices=("float32", "float64", *half.HALF_NAMES),
                        default="float32",
                        help="x's and dy's dtype (default: float32); with float16 or bfloat16 "
                             "(ml_dtypes), gamma, beta and the running statistics stay float32, "
                             "for normops and PyTorch alike")
    parser.add_argument("--threads", type=positive_int,
                        help="threads for normops and PyTorch (default: the CPUs this "
                             f"process may run on, {usable_cpus()} here; --fused: 1 and those)")
    parser.add_argument("--shapes", type=shape_list, nargs="+", metavar="NAME",
                        help=f"a subset of the shapes: {', '.join(SHAPES_BY_NAME)}")
    parser.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    parser.add_argument("--repeats", type=positive_int,
                        help="fixed number of timed calls per cell, overriding the adaptive count (for tests)")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--grid", action="store_true",
                       help="instead: the cpu backend against PyTorch and the copy on a grid of "
                            "layouts x channels x sizes x dtypes x threads x ops; writes a JSON "
                            f"file ({grid.JSON_PATH} unless --json) and a PNG heatmap; a full "
                            "grid takes about 15 minutes on 2 cores")
    modes.add_argument("--overhead", action="store_true",
                       help="instead: the fixed cost of a call (tiny NC and NCHW float32 arrays), "
                            "normops on the cpu backend against PyTorch's F.batch_norm and aten "
                            f"ops, in microseconds per call (target: {overhead.TARGET_US:g} us); "
                            "--quick, --repeats (rounds) and --json apply")
    modes.add_argument("--fused", action="store_true",
                       help="instead: the fused epilogue relu(BN(x) + z) on the cpu backend "
                            "(residual=, activation='relu') against plain BN, plain BN with the "
                            "epilogue in NumPy, PyTorch's F.batch_norm + add_ + relu_ and "
                            "reading z, per shape, op and thread count, with its targets; "
                            "--quick, --repeats, --shapes, --dtype float32|float64, --threads "
                            "and --json apply")
    parser.add_argument("--calls", type=positive_int, metavar="N",
                        help=f"--overhead: calls per timed loop (default {overhead.CALLS}, "
                             f"--quick {overhead.QUICK_CALLS})")
    modes.add_argument("--ranks", type=positive_int, metavar="N",
                       help="instead: time synchronized batch_norm (comm=) against the local op "
                            "on N MPI ranks, one thread each (mpiexec -n N python -m "
                            f"{ranks.RANK_PROGRAM}); only --quick and --json apply; needs mpi4py "
                            'and mpiexec: pip install "normops[mpi]"')
    add_grid_arguments(parser)
    return parser


def build_parser():
    from ..__main__ import HelpFormatter   # the command line's: examples kept as written
    return add_arguments(argparse.ArgumentParser(
        prog="python -m normops bench", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=HelpFormatter))


def main(args=None):
    """Entry point: ``args`` is an argparse namespace from ``python -m normops bench``,
    or a list of command-line strings (None: sys.argv[1:]). Returns the exit status: 0,
    or 2 with the reason on stderr when the bench cannot run as asked (the chosen
    backend cannot be timed, say)."""
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(args)
    problem = misplaced(args)
    if problem:
        print(f"python -m normops bench: {problem}", file=sys.stderr)
        return 2
    if getattr(args, "ranks", None) is not None:
        return ranks.main(args)
    try:
        if getattr(args, "grid", False):
            return grid.main(flatten(args))
        if getattr(args, "overhead", False):
            return overhead.main(args)
        if getattr(args, "fused", False):
            return fused.main(args)
        if args.threads is None:
            args.threads = usable_cpus()
        return standard.main(args)
    except BenchError as exc:
        print(f"python -m normops bench: {exc}", file=sys.stderr)
        return 2
