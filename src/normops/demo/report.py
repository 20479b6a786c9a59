"""The demo's tables: medians over seeds with the range (wall times are noisy, so only
their medians are shown), and every seed's value where the spread matters."""
import math
import statistics

from normops._text import table


def _median(values):
    return statistics.median(values) if values else math.nan


def _range(values, fmt):
    """``median (min-max)`` of the values, formatted by ``fmt``."""
    if not values:
        return "-"
    return f"{fmt(_median(values))} ({fmt(min(values))}-{fmt(max(values))})"


def _percent(value):
    return f"{100 * value:.1f}"


def _iterations(value, limit):
    return f">{limit}" if math.isinf(value) else f"{value:g}"


def _decimals(value, digits):
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def iterations_to_threshold(run):
    """The step at which the run reached the threshold, inf when it did not."""
    return math.inf if run.reached is None else run.reached


def bn_vs_none_rows(comparison):
    """Header and rows of experiment (a): one row per network."""
    training = comparison.training
    limit = training.steps
    header = ("network", "reached", f"iterations to val loss < {training.loss_threshold:g}",
              "by seed", "time to threshold, s", "ms / iteration", "test accuracy %")
    rows = []
    for label, runs in comparison.runs.items():
        iterations = [iterations_to_threshold(r) for r in runs]
        by_seed = " ".join("diverged" if r.diverged else _iterations(i, limit)
                           for r, i in zip(runs, iterations))
        reached = [r for r in runs if r.reached is not None]
        rows.append((label, f"{len(reached)}/{len(runs)}",
                     _range(iterations, lambda v: _iterations(v, limit)), by_seed,
                     _decimals(_median([r.seconds for r in reached]), 2),
                     _decimals(_median([r.ms_per_step for r in runs]), 3),
                     _range([r.test_accuracy for r in runs], _percent)))
    return header, rows


def bn_vs_brn_rows(comparisons):
    """Header and rows of experiment (b): one row per setting and normalization."""
    header = ("batches", "normalization", "test accuracy %", "by seed", "test loss",
              "ms / step")
    rows = []
    for comparison in comparisons:
        for label, runs in comparison.runs.items():
            accuracies = [r.test_accuracy for r in runs]
            rows.append((comparison.name, label, _range(accuracies, _percent),
                         " ".join(_percent(a) for a in accuracies),
                         f"{_median([r.test_loss for r in runs]):.3f}",
                         _decimals(_median([r.ms_per_step for r in runs]), 3)))
    return header, rows


def bn_vs_none_table(comparison):
    training = comparison.training
    seeds = len(next(iter(comparison.runs.values())))
    title = (f"(a) no BN vs BN: SGD (lr {training.lr:g}, batches of {training.batch_size}) until the "
             f"validation loss < {training.loss_threshold:g}, at most {training.steps} iterations; "
             f"{seeds} seeds, median (min-max)")
    return title + "\n" + table(*bn_vs_none_rows(comparison))


def bn_vs_brn_table(comparisons):
    first = comparisons[0].training
    seeds = len(next(iter(comparisons[0].runs.values())))
    title = (f"(b) BN vs BRN: {first.steps} SGD steps (lr {first.lr:g}), then the test set in eval "
             f"mode; {seeds} seeds, median (min-max)")
    return title + "\n" + table(*bn_vs_brn_rows(comparisons))
