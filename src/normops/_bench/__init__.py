"""``python -m normops bench``: the command line and its modes, one module each.

* standard: the default bench (the shapes of the performance model; --backend, --dtype);
  half: what its float16 and bfloat16 runs do differently;
* ranks: ``--ranks N``, which launches sync, the rank program, under mpiexec.

The pieces they share: timing (repeat policies, alternating blocks, quartiles), shapes
(shapes and their inputs), columns (the ops on normops and in PyTorch as callables, the
copy baselines), backends (which columns can run, thread counts) and report (the printed
tables). This module re-exports what benchmarks/gpu_check.py and the tests use.
"""
import argparse
import sys

from . import half, ranks, standard
from .backends import DEFAULT_BACKEND, BenchError, thread_count, usable_cpus  # noqa: F401
from .columns import (OPS, PASSES, PYTORCH, as_arrays, copy_calls, copy_kernels,  # noqa: F401
                      normops_ops, pytorch_ops)
from .shapes import SEED, SHAPES, SHAPES_BY_NAME, Inputs, Shape, make_inputs  # noqa: F401
from .standard import WITHIN  # noqa: F401
from .timing import RepeatPolicy, pooled, time_in_rounds, timing_of  # noqa: F401

# the command's description: the default bench's docstring, first paragraph
DESCRIPTION = " ".join(standard.__doc__.split("\n\n")[0].split())


def shape_list(text):
    """--shapes: names separated by commas (or given as several arguments)."""
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in SHAPES_BY_NAME]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown shape(s) {', '.join(unknown)}; choose from {', '.join(SHAPES_BY_NAME)}")
    return names


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
    parser.add_argument("--dtype", choices=("float32", "float64", *half.HALF_NAMES),
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
                             f"{ranks.RANK_PROGRAM}); only --quick and --json apply; needs mpi4py "
                             'and mpiexec: pip install "normops[mpi]"')
    return parser


def build_parser():
    return add_arguments(argparse.ArgumentParser(
        prog="python -m normops bench", description=DESCRIPTION))


def main(args=None):
    """Entry point: ``args`` is an argparse namespace from ``python -m normops bench``,
    or a list of command-line strings (None: sys.argv[1:]). Returns the exit status: 0,
    or 2 with the reason on stderr when the bench cannot run as asked (the chosen
    backend cannot be timed, say)."""
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(args)
    if getattr(args, "ranks", None) is not None:
        return ranks.main(args)
    try:
        return standard.main(args)
    except BenchError as exc:
        print(f"python -m normops bench: {exc}", file=sys.stderr)
        return 2
