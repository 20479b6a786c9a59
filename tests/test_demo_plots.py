"""The demo's figures, drawn by normops.demo.plots from small made-up runs (the records
python -m normops demo fills, with loss curves written down here instead of trained, so
no scikit-learn is needed): axes labelled, the stopping threshold in the legend, the
BN vs BRN panels on one shared y-scale, and log axes labelled at a few plain numbers
with no minor tick labels. Needs matplotlib (normops[demo]); skipped without it."""
import math
import re
from dataclasses import replace

import numpy as np
import pytest

from normops.demo import experiments, plots
from normops.demo.experiments import Comparison, Norm, Run

pytest.importorskip("matplotlib")

PLAIN_NUMBER = re.compile(r"\d+(\.\d+)?")


def curve(start, end, n, wiggle=0.03, phase=0.0):
    """n losses decaying geometrically from start to end, with a noise-like wiggle that
    fades out towards the end (the last loss is ``end``)."""
    t = np.linspace(0.0, 1.0, n)
    return list(start * (end / start) ** t * (1 + wiggle * (1 - t) * np.sin(40 * t + phase)))


def make_run(label, seed, training, start, end, n, eval_every=1):
    val = curve(start, end, n // eval_every, phase=seed)
    run = Run(label, seed, steps=n, seconds=0.01 * n, eval_steps=list(range(eval_every, n + 1, eval_every)),
              val_loss=val, train_loss=curve(start * 1.1, end * 0.8, n, wiggle=0.2, phase=seed),
              test_loss=end, test_accuracy=0.9)
    threshold = training.loss_threshold
    if threshold is not None and val[-1] < threshold:
        run.reached = n
    return run


def no_bn_vs_bn():
    """(a): BN crosses the 0.12 threshold after 60 iterations, no BN after 90."""
    training = replace(experiments.BN_VS_NONE, steps=120)
    runs = {"no BN": [make_run("no BN", s, training, 2.4, 0.118, 90) for s in (0, 1)],
            "BN": [make_run("BN", s, training, 2.3, 0.115, 60) for s in (0, 1)]}
    return Comparison("no BN vs BN", training, (Norm("none"), Norm("BN")), runs)


def bn_vs_brn(ends=((0.09, 0.08), (0.15, 0.12), (0.45, 0.15))):
    """(b): one comparison per batch setting, each ending at its own losses, so panels
    scaled on their own would differ."""
    out = []
    for (name, training), (bn_end, brn_end) in zip(experiments.RENORM_SETTINGS, ends):
        training = replace(training, steps=80, eval_every=4)
        runs = {"BN": [make_run("BN", s, training, 2.3, bn_end, 80, eval_every=4) for s in (0, 1)],
                "BRN": [make_run("BRN", s, training, 2.3, brn_end, 80, eval_every=4) for s in (0, 1)]}
        out.append(Comparison(name, training, (Norm("BN"), Norm("BRN")), runs))
    return out


def legend_texts(ax):
    legend = ax.get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def check_log_axis(ax):
    """A log y-axis whose shown tick labels are plain numbers (no 2 x 10^-1), at least
    two of them in view, and no minor tick labels."""
    assert ax.get_yscale() == "log"
    low, high = ax.get_ylim()
    shown = [(tick.get_loc(), tick.label1.get_text()) for tick in ax.yaxis.get_major_ticks()
             if tick.label1.get_visible() and low <= tick.get_loc() <= high]
    if ax.yaxis.get_tick_params()["labelleft"]:
        assert len(shown) >= 2, shown
    for loc, text in shown:
        assert PLAIN_NUMBER.fullmatch(text), (loc, text)
        assert float(text) == pytest.approx(loc, rel=1e-6)
    minor = [tick.label1.get_text() for tick in ax.yaxis.get_minor_ticks()
             if tick.label1.get_visible() and tick.label1.get_text()]
    assert minor == [], minor


def test_bn_vs_no_bn_has_y_labels_and_the_threshold_in_the_legend():
    comparison = no_bn_vs_bn()
    fig = plots.bn_vs_none(comparison)
    fig.canvas.draw()
    left, right = fig.axes
    for ax in (left, right):
        assert ax.get_ylabel().strip() and ax.get_xlabel() == "iteration"
        check_log_axis(ax)
        assert {"no BN", "BN"} <= set(legend_texts(ax))
    threshold = comparison.training.loss_threshold
    labels = [t for t in legend_texts(left) if "threshold" in t]
    assert labels == [f"threshold {threshold:g} (run stops)"]
    line, = [line for line in left.get_lines() if line.get_label() == labels[0]]
    assert set(np.asarray(line.get_ydata(), dtype=float)) == {threshold}
    # the y-range reaches down to the threshold: the line is in view
    assert left.get_ylim()[0] <= threshold <= left.get_ylim()[1]


def test_bn_vs_brn_panels_share_one_y_scale():
    comparisons = bn_vs_brn()
    fig = plots.bn_vs_brn(comparisons)
    fig.canvas.draw()
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == [name for name, _ in experiments.RENORM_SETTINGS]
    for ax in axes:
        assert axes[0].get_shared_y_axes().joined(axes[0], ax)
        assert ax.get_ylim() == axes[0].get_ylim()
        assert ax.get_xlabel() == "SGD step"
        check_log_axis(ax)
    # every panel's curves are in view: down to the lowest loss of all, up to the highest
    losses = [v for c in comparisons for runs in c.runs.values() for r in runs for v in r.val_loss]
    low, high = axes[0].get_ylim()
    assert low <= min(losses) and max(losses) <= high
    assert axes[0].get_ylabel().strip()
    # the panels past the first share its tick labels rather than repeat them
    assert not any(t.get_visible() and t.get_text() for ax in axes[1:] for t in ax.get_yticklabels())
    assert legend_texts(axes[0]) == ["BN", "BRN"]


def test_a_narrow_loss_range_still_gets_plain_labels():
    """Losses within one 1-2-5 step (2.0 to 2.3) get linear-spaced plain labels."""
    comparisons = bn_vs_brn(ends=((2.0, 2.05),) * 3)
    fig = plots.bn_vs_brn(comparisons)
    fig.canvas.draw()
    check_log_axis(fig.axes[0])


def test_write_all_writes_both_pngs(tmp_path):
    paths = plots.write_all(no_bn_vs_bn(), bn_vs_brn(), tmp_path / "plots")
    assert [p.rsplit("/", 1)[-1] for p in map(str, paths)] == ["bn_vs_no_bn.png", "bn_vs_brn.png"]
    for path in paths:
        with open(path, "rb") as png:
            assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_made_up_runs_look_like_the_demo_records():
    """The runs above hold what experiments.train records: eval steps and losses in
    step, the reached step where the threshold was crossed."""
    comparison = no_bn_vs_bn()
    for runs in comparison.runs.values():
        for run in runs:
            assert len(run.val_loss) == len(run.eval_steps) and run.eval_steps[-1] == run.steps
            threshold = comparison.training.loss_threshold
            assert run.reached == run.steps and run.val_loss[-1] < threshold
            assert all(v >= threshold for v in run.val_loss[:-1])
            assert all(math.isfinite(v) for v in run.train_loss)
