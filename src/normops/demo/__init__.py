"""``python -m normops demo``: a NumPy MLP (Linear -> BN -> ReLU) on scikit-learn's
bundled handwritten digits, trained with SGD over several seeds, comparing (a) no BN vs BN
(iterations and time until the validation loss falls below a threshold, test accuracy)
and (b) BN vs BRN with i.i.d. batches, microbatches of 4 and non-i.i.d. batches.
``python -m normops demo --ranks N`` instead trains the MLP data parallel on N MPI ranks
with synchronized BatchNorm and checks it against one process (``data_parallel``).

Needs the demo extra (``pip install "normops[demo]"``): scikit-learn for the data,
matplotlib for the PNG plots (skipped, with a note, when it is missing).

The pieces: ``data`` (loading, splits, batch orders), ``nn`` (Linear, ReLU, softmax
cross-entropy, Sequential, SGD), ``experiments`` (training runs and the two comparisons),
``report`` (tables), ``plots`` (PNGs) and ``data_parallel`` (the rank program of
--ranks, which needs mpi4py and mpiexec: ``pip install "normops[mpi]"``).
"""
import sys
import time
from typing import NamedTuple

import normops

from normops._registry import selected_name

from . import plots, report
from .data import load_digits
from .experiments import (BN_MOMENTUM, BN_VS_NONE, RENORM_MOMENTUM, RENORM_SETTINGS, Plan, bn_vs_brn,
                          bn_vs_none, scaled_paper_schedule)

DESCRIPTION = ("Train a small NumPy MLP (Linear -> BN -> ReLU) on scikit-learn's bundled "
               "handwritten digits with SGD over several seeds; print (a) no BN vs BN: iterations "
               "and time to a validation-loss threshold and test accuracy, and (b) BN vs BRN with "
               "microbatches of 4 and with non-i.i.d. batches; write PNG plots of the loss curves. "
               'Needs: pip install "normops[demo]".')
# the command's examples (%(prog)s: the command as invoked, "normops demo" say)
EPILOG = """examples:
  %(prog)s --quick                  # 3 seeds and shorter runs
  %(prog)s --seeds 5 --out plots    # the PNGs in plots/
  %(prog)s --ranks 2                # data parallel on 2 MPI ranks"""


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="3 seeds and shorter runs (under a minute on two cores)")
    parser.add_argument("--out", default="normops-demo", metavar="DIR",
                        help="folder for the PNG plots (default: normops-demo)")
    parser.add_argument("--seeds", type=int, metavar="N",
                        help="number of seeds (default: 5, or 3 with --quick)")
    parser.add_argument("--ranks", type=int, metavar="N",
                        help="instead of the comparisons: train the MLP data parallel on N MPI "
                             "ranks (mpiexec -n N) with synchronized BatchNorm and check it "
                             "against training in one process (exit 1 if they differ); needs "
                             'mpi4py and mpiexec: pip install "normops[mpi]"')
    return parser


class Results(NamedTuple):
    bn_vs_none: object      # experiments.Comparison
    bn_vs_brn: list         # one experiments.Comparison per batch setting
    plots: list             # paths of the PNGs written (empty when skipped)


def _setup_lines(split, plan):
    schedule = scaled_paper_schedule(plan.renorm_steps)
    sizes = "-".join(map(str, (split.num_features, *BN_VS_NONE.hidden, split.num_classes)))
    per_step = max(training.forwards_per_step for _, training in RENORM_SETTINGS)
    try:
        backend = selected_name()
    except normops.BackendError as exc:
        backend = f"none ({exc})"
    return [
        f"digits (scikit-learn): 8x8 pixels scaled to [0, 1]; {len(split.y_train)} train, "
        f"{len(split.y_val)} validation, {len(split.y_test)} test (stratified, fixed split)",
        f"MLP {sizes}: Linear (He init) -> [BN | BRN] -> ReLU, softmax cross-entropy, plain SGD; "
        f"seeds {', '.join(map(str, plan.seeds))} (init and batch order; each method sees the same)",
        f"(a) BN momentum {BN_MOMENTUM:g}; (b) BN and BRN momentum {RENORM_MOMENTUM:g} (the BRN paper's); "
        f"BRN rmax 1 -> 3, dmax 0 -> 5 on the paper's schedule scaled to {plan.renorm_steps} steps "
        f"(warm-up {schedule.rmax.begin}, dmax at {schedule.dmax.finish}, rmax at {schedule.rmax.finish}; "
        f"x{per_step} layer steps with microbatches)",
        f"normops backend {backend}",
    ]


def run(*, quick=False, out="normops-demo", seeds=None, log=print):
    """Run both experiments, print their tables through ``log`` and write the plots into
    ``out``; returns the Results. Raises ImportError without scikit-learn."""
    plan = Plan.quick(seeds or 3) if quick else Plan.full(seeds or 5)
    start = time.perf_counter()
    split = load_digits()
    for line in _setup_lines(split, plan):
        log(line)
    log("")
    log("(a) no BN vs BN")
    a = bn_vs_none(split, plan, log=log)
    log("(b) BN vs BRN")
    b = bn_vs_brn(split, plan, log=log)
    log("")
    log(report.bn_vs_none_table(a))
    log("")
    log(report.bn_vs_brn_table(b))
    log("")
    log("Times are spent inside the training steps (evaluations excluded), medians over seeds; "
        "the machine's load moves them.")
    try:
        paths = plots.write_all(a, b, out)
        log("plots: " + ", ".join(paths))
    except ImportError as exc:
        paths = []
        log(f"plots skipped: {exc}")
    log(f"demo finished in {time.perf_counter() - start:.1f} s")
    return Results(a, b, paths)


def main(args):
    """The ``python -m normops demo`` command: 0 on success, 2 without scikit-learn (or,
    with --ranks, without mpi4py or mpiexec); with --ranks 1 when data-parallel training
    differs from training in one process."""
    if args.seeds is not None and args.seeds < 1:
        print("python -m normops demo: --seeds must be at least 1", file=sys.stderr)
        return 2
    if getattr(args, "ranks", None) is not None:
        return _data_parallel(args.ranks)
    try:
        run(quick=args.quick, out=args.out, seeds=args.seeds, log=lambda line: print(line, flush=True))
    except ImportError as exc:
        print(f"python -m normops demo: {exc}", file=sys.stderr)
        return 2
    return 0


def _data_parallel(ranks):
    from . import data_parallel
    from .._mpirun import LaunchError
    if ranks < 1:
        print("python -m normops demo: --ranks must be at least 1", file=sys.stderr)
        return 2
    try:
        status = data_parallel.launch(ranks)
    except (ImportError, LaunchError) as exc:
        print(f"python -m normops demo --ranks: {exc}", file=sys.stderr)
        return 2
    if status != 0:
        print(f"python -m normops demo --ranks: the ranks exited with status {status}"
              + (" (data parallel differs from one process)" if status == 1 else ""),
              file=sys.stderr)
    return status
