"""PNG plots of the loss curves, drawn with matplotlib's Agg canvas (no display, no
pyplot state); matplotlib is an optional extra."""
import os

import numpy as np

from .data import require

COLORS = {"no BN": "tab:gray", "BN": "tab:blue", "BRN": "tab:orange"}


def _figure(ncols, width_per_panel=5.0, height=4.0, sharey=False):
    require("matplotlib", "the plots of python -m normops demo")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_per_panel * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False, sharey=sharey)[0]


def _moving_average(values, window):
    values = np.asarray(values, dtype=np.float64)
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def _log_axis(ax):
    """A log y-axis labelled at 1, 2 and 5 times the powers of ten as plain numbers (0.1,
    0.2, 0.5, 1, 2), with no minor ticks: losses span one or two decades, where
    matplotlib's default labels its minor ticks too (2 x 10^-1, 3 x 10^-1, ...)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.grid(True, alpha=0.3)


def _curves(ax, comparison, attr, steps_attr=None, window=1):
    """One thin line per seed for each method, labelled once."""
    for label, runs in comparison.runs.items():
        for i, run in enumerate(runs):
            values = _moving_average(getattr(run, attr), window)
            steps = (np.asarray(getattr(run, steps_attr)) if steps_attr
                     else np.arange(window, window + len(values)))
            ax.plot(steps, values, color=COLORS.get(label), lw=1, alpha=0.8,
                    label=label if i == 0 else None)
    _log_axis(ax)


def bn_vs_none(comparison, path=None):
    """Validation loss (eval mode) and training batch loss against iterations, per seed;
    the threshold that stops a run is a dashed line in the legend. Writes the PNG to
    ``path`` and returns it, or returns the Figure when ``path`` is None."""
    fig, (left, right) = _figure(2)
    training = comparison.training
    _curves(left, comparison, "val_loss", "eval_steps")
    left.axhline(training.loss_threshold, color="k", ls="--", lw=1,
                 label=f"threshold {training.loss_threshold:g} (run stops)")
    left.set(title="validation loss (eval mode)", xlabel="iteration",
             ylabel="cross-entropy loss (log scale)")
    left.legend()
    _curves(right, comparison, "train_loss", window=10)
    right.set(title="training batch loss (mean of 10 iterations)", xlabel="iteration",
              ylabel="cross-entropy loss (log scale)")
    right.legend()
    fig.suptitle(f"digits MLP, hidden layers {'-'.join(map(str, training.hidden))}: no BN vs BN, "
                 f"SGD lr {training.lr:g}, batches of {training.batch_size}")
    return _done(fig, path)


def bn_vs_brn(comparisons, path=None):
    """Validation loss (eval mode) against steps, one panel per batch setting, on one
    shared y-scale so the settings compare at a glance. Writes the PNG to ``path`` and
    returns it, or returns the Figure when ``path`` is None."""
    fig, axes = _figure(len(comparisons), width_per_panel=4.2, sharey=True)
    for ax, comparison in zip(axes, comparisons):
        _curves(ax, comparison, "val_loss", "eval_steps")
        ax.set(title=comparison.name, xlabel="SGD step")
    axes[0].set_ylabel("validation loss, eval mode (log scale)")
    axes[0].legend()
    fig.suptitle("BN vs BRN on the digits MLP (one line per seed, same y-scale in every panel)")
    return _done(fig, path)


def _done(fig, path):
    if path is None:
        return fig
    fig.savefig(path, dpi=110)
    return path


def write_all(bn_none, renorm, out_dir):
    """Both figures as PNGs in ``out_dir`` (created if needed); returns their paths."""
    require("matplotlib", "the plots of python -m normops demo")
    os.makedirs(out_dir, exist_ok=True)
    return [bn_vs_none(bn_none, os.path.join(out_dir, "bn_vs_no_bn.png")),
            bn_vs_brn(renorm, os.path.join(out_dir, "bn_vs_brn.png"))]
