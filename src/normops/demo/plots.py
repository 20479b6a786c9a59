"""PNG plots of the loss curves, drawn with matplotlib's Agg canvas (no display, no
pyplot state); matplotlib is an optional extra."""
import os

import numpy as np

from .data import require

COLORS = {"no BN": "tab:gray", "BN": "tab:blue", "BRN": "tab:orange"}


def _figure(ncols, width_per_panel=5.0, height=4.0):
    require("matplotlib", "the plots of python -m normops demo")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_per_panel * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _moving_average(values, window):
    values = np.asarray(values, dtype=np.float64)
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def _curves(ax, comparison, attr, steps_attr=None, window=1):
    """One thin line per seed for each method, labelled once."""
    for label, runs in comparison.runs.items():
        for i, run in enumerate(runs):
            values = _moving_average(getattr(run, attr), window)
            steps = (np.asarray(getattr(run, steps_attr)) if steps_attr
                     else np.arange(window, window + len(values)))
            ax.plot(steps, values, color=COLORS.get(label), lw=1, alpha=0.8,
                    label=label if i == 0 else None)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()


def bn_vs_none(comparison, path):
    """Validation loss (eval mode) and training batch loss against iterations, per seed."""
    fig, (left, right) = _figure(2)
    training = comparison.training
    _curves(left, comparison, "val_loss", "eval_steps")
    left.axhline(training.loss_threshold, color="k", ls="--", lw=1)
    left.set(title=f"validation loss (stop below {training.loss_threshold:g})", xlabel="iteration")
    _curves(right, comparison, "train_loss", window=10)
    right.set(title="training batch loss (mean of 10 iterations)", xlabel="iteration")
    fig.suptitle(f"digits MLP, hidden layers {'-'.join(map(str, training.hidden))}: no BN vs BN, "
                 f"SGD lr {training.lr:g}, batches of {training.batch_size}")
    fig.savefig(path, dpi=110)
    return path


def bn_vs_brn(comparisons, path):
    """Validation loss (eval mode) against steps, one panel per batch setting."""
    fig, axes = _figure(len(comparisons), width_per_panel=4.2)
    for ax, comparison in zip(axes, comparisons):
        _curves(ax, comparison, "val_loss", "eval_steps")
        ax.set(title=comparison.name, xlabel="SGD step")
    axes[0].set_ylabel("validation loss, eval mode")
    fig.suptitle("BN vs BRN on the digits MLP (one line per seed)")
    fig.savefig(path, dpi=110)
    return path


def write_all(bn_none, renorm, out_dir):
    """Both figures as PNGs in ``out_dir`` (created if needed); returns their paths."""
    require("matplotlib", "the plots of python -m normops demo")
    os.makedirs(out_dir, exist_ok=True)
    return [bn_vs_none(bn_none, os.path.join(out_dir, "bn_vs_no_bn.png")),
            bn_vs_brn(renorm, os.path.join(out_dir, "bn_vs_brn.png"))]
