"""python -m normops demo and its pieces: the network's gradients against finite
differences, the batch orders, the experiments' records against their tables, the plots
and the command line. No test asserts which method wins."""
import argparse
import importlib.util
import math
import os
import re
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import normops
from normops import demo
from normops.demo import data, experiments, plots, report
from normops.demo.nn import Linear, ReLU, evaluate, mlp, softmax_cross_entropy, train_step

ROOT = Path(__file__).resolve().parents[1]


def numeric_grad(f, arr, h=1e-6):
    """Central differences of the scalar f() with respect to each entry of arr (in place)."""
    grad = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
        old = arr[idx]
        arr[idx] = old + h
        up = f()
        arr[idx] = old - h
        down = f()
        arr[idx] = old
        grad[idx] = (up - down) / (2 * h)
    return grad


def small_net(rng, norm=True):
    bn = (lambda c: normops.BatchNorm(c, dtype=np.float64)) if norm else None
    return mlp((5, 7, 6, 4), rng=rng, norm=bn, dtype=np.float64)


@pytest.mark.parametrize("norm", [False, True], ids=["plain", "batchnorm"])
def test_network_gradients_match_finite_differences(norm):
    rng = np.random.default_rng(1)
    net = small_net(rng, norm)
    x = rng.standard_normal((9, 5))
    labels = rng.integers(0, 4, 9)

    def loss():
        return softmax_cross_entropy(net(x), labels)[0]

    _, dlogits = softmax_cross_entropy(net(x), labels)
    dx = net.backward(dlogits)
    grads = net.layer_grads()
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-5, atol=1e-8)
    checked = 0
    for layer, layer_grads in zip(net.layers, grads):
        assert set(layer_grads) == set(layer.params())
        for name, p in layer.params().items():
            np.testing.assert_allclose(layer_grads[name], numeric_grad(loss, p), rtol=1e-5, atol=1e-8,
                                       err_msg=f"{layer!r} {name}")
            checked += 1
    assert checked == (10 if norm else 6)   # 3 Linear x (weight, bias) [+ 2 BN x (gamma, beta)]


def test_softmax_cross_entropy_value_and_gradient():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((6, 3)) * 10
    labels = np.array([0, 1, 2, 2, 1, 0])
    loss, grad = softmax_cross_entropy(logits, labels)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(probs[np.arange(6), labels])), rel=1e-12)
    np.testing.assert_allclose(grad, numeric_grad(lambda: softmax_cross_entropy(logits, labels)[0], logits),
                               rtol=1e-5, atol=1e-9)
    assert softmax_cross_entropy(np.array([[1000.0, 0.0]]), np.array([1]))[0] == pytest.approx(1000.0)


def test_linear_and_relu_follow_the_layers_convention():
    rng = np.random.default_rng(3)
    lin = Linear(64, 256, rng=rng)
    assert lin.weight.dtype == np.float32 and set(lin.params()) == {"weight", "bias"}
    assert np.std(lin.weight) == pytest.approx(math.sqrt(2 / 64), rel=0.05)   # He init
    with pytest.raises(RuntimeError):
        lin.grads()
    relu = ReLU()
    y = relu(np.array([[-1.0, 2.0]]))
    assert relu.params() == {} and relu.grads() == {}
    np.testing.assert_array_equal(relu.backward(np.ones_like(y)), [[0.0, 1.0]])


def test_microbatches_give_the_full_batch_gradient_without_normalization():
    """The mean loss over 8 microbatches of 4 is the mean over the batch of 32: without
    BN one accumulated step equals one full-batch step; with BN it must differ."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((32, 5))
    labels = rng.integers(0, 4, 32)
    for norm in (False, True):
        nets = [small_net(np.random.default_rng(5), norm) for _ in range(2)]
        losses = [train_step(nets[0], x, labels, 0.5), train_step(nets[1], x, labels, 0.5, microbatch=4)]
        params = [[p for layer in net.layers for p in layer.params().values()] for net in nets]
        same = all(np.allclose(a, b, rtol=1e-12, atol=1e-14) for a, b in zip(*params))
        assert same is not norm
        if not norm:
            assert losses[0] == pytest.approx(losses[1], rel=1e-12)
        else:
            assert nets[1].layers[1].num_batches_tracked == 8   # one update per microbatch


def test_evaluate_uses_running_statistics_and_restores_training_mode():
    rng = np.random.default_rng(6)
    net = small_net(rng)
    x = rng.standard_normal((10, 5)) + 3
    labels = rng.integers(0, 4, 10)
    loss, acc = evaluate(net, x, labels)   # running stats 0 / 1: eval output differs from training
    assert net.training and all(layer.training for layer in net.layers)
    train_loss, _ = softmax_cross_entropy(net(x), labels)
    assert loss != pytest.approx(train_loss)
    assert 0 <= acc <= 1


def test_few_class_batches_draw_few_classes():
    labels = np.repeat(np.arange(10), 40)
    batches = data.few_class_batches(labels, 32, 2, np.random.default_rng(7))
    seen = set()
    for _ in range(200):
        idx = next(batches)
        assert len(idx) == 32 and len(set(idx.tolist())) == 32
        classes, counts = np.unique(labels[idx], return_counts=True)
        assert len(classes) == 2 and counts.tolist() == [16, 16]
        seen.update(classes.tolist())
    assert seen == set(range(10))
    with pytest.raises(ValueError):
        next(data.few_class_batches(labels, 30, 4, np.random.default_rng(0)))
    with pytest.raises(ValueError):
        next(data.few_class_batches(labels, 32, 2 * 11, np.random.default_rng(0)))


def test_iid_batches_cover_each_epoch_once():
    batches = data.iid_batches(100, 32, np.random.default_rng(8))
    for _ in range(3):   # epochs: 3 batches of 32 each, the last 4 examples left out
        epoch = np.concatenate([next(batches) for _ in range(3)])
        assert len(set(epoch.tolist())) == 96


def test_stratified_split_is_fixed_by_seed_and_keeps_class_shares():
    labels = np.repeat(np.arange(4), [50, 100, 30, 20])
    test, val, train = data.stratified_split(labels, (0.2, 0.1), seed=0)
    assert sorted(np.concatenate([test, val, train]).tolist()) == list(range(200))
    assert np.bincount(labels[test]).tolist() == [10, 20, 6, 4]
    assert np.bincount(labels[val]).tolist() == [5, 10, 3, 2]
    again = data.stratified_split(labels, (0.2, 0.1), seed=0)
    other = data.stratified_split(labels, (0.2, 0.1), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(again, (test, val, train)))
    assert not np.array_equal(other[0], test)


def test_load_digits_split():
    pytest.importorskip("sklearn")
    split = data.load_digits()
    sizes = [len(split.y_train), len(split.y_val), len(split.y_test)]
    assert sum(sizes) == 1797 and sizes[2] == pytest.approx(0.2 * 1797, abs=10)
    assert split.x_train.dtype == np.float32 and split.num_features == 64 and split.num_classes == 10
    assert 0 <= split.x_train.min() and split.x_train.max() <= 1
    for y in (split.y_train, split.y_val, split.y_test):
        assert set(y.tolist()) == set(range(10))


def test_missing_scikit_learn_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r'scikit-learn.*pip install "normops\[demo\]"'):
        data.load_digits()
    args = argparse.Namespace(quick=True, out="unused", seeds=None)
    assert demo.main(args) == 2
    assert 'pip install "normops[demo]"' in capsys.readouterr().err


def test_missing_matplotlib_skips_plots(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"matplotlib.*normops\[demo\]"):
        plots.write_all(None, None, tmp_path / "plots")
    assert not (tmp_path / "plots").exists()


def tiny_plan():
    return experiments.Plan(seeds=(0, 1), max_iterations=25, renorm_steps=16)


def check_run(run, training):
    assert 1 <= run.steps <= training.steps and len(run.train_loss) == run.steps
    assert run.eval_steps[-1] == run.steps and len(run.val_loss) == len(run.eval_steps)
    assert run.seconds > 0 and 0 <= run.test_accuracy <= 1 and run.test_loss > 0
    if run.reached is not None:
        assert run.reached == run.steps and run.val_loss[-1] < training.loss_threshold
        assert all(v >= training.loss_threshold for v in run.val_loss[:-1])
    elif not run.diverged:
        assert run.steps == training.steps


@pytest.mark.parametrize("threshold", [None, 1.5], ids=["demo-threshold", "reachable-threshold"])
def test_bn_vs_none_table_matches_the_runs(threshold):
    pytest.importorskip("sklearn")
    split = data.load_digits()
    comparison = experiments.bn_vs_none(split, tiny_plan())
    if threshold is not None:   # a threshold a few iterations reach, for the "reached" path
        training = replace(comparison.training, loss_threshold=threshold)
        comparison = experiments.compare("no BN vs BN", split, training, comparison.norms, (0, 1))
    training = comparison.training
    header, rows = report.bn_vs_none_rows(comparison)
    assert [row[0] for row in rows] == ["no BN", "BN"] and all(len(row) == len(header) for row in rows)
    for row, (label, runs) in zip(rows, comparison.runs.items()):
        assert [r.seed for r in runs] == [0, 1]
        for run in runs:
            check_run(run, training)
        reached = [r.reached for r in runs if r.reached is not None]
        assert row[1] == f"{len(reached)}/2"
        assert row[3].split() == [str(r.reached) if r.reached is not None else f">{training.steps}"
                                  for r in runs]
        accuracy = statistics.median(100 * r.test_accuracy for r in runs)
        assert row[6].startswith(f"{accuracy:.1f} (")
        if len(reached) == 2:
            assert row[2].startswith(f"{statistics.median(reached):g} (")
            assert row[4] == f"{statistics.median(r.seconds for r in runs):.2f}"
    if threshold is not None:
        assert any(r.reached for runs in comparison.runs.values() for r in runs)
    text = report.bn_vs_none_table(comparison)
    assert text.startswith("(a) no BN vs BN") and "iterations to val loss" in text


def test_bn_vs_brn_table_matches_the_runs_and_plots_are_written(tmp_path):
    pytest.importorskip("sklearn")
    split = data.load_digits()
    plan = tiny_plan()
    log = []
    a = experiments.bn_vs_none(split, plan, log=log.append)
    b = experiments.bn_vs_brn(split, plan, log=log.append)
    assert len(log) == 2 * 2 + 3 * 2 * 2   # one line per run
    header, rows = report.bn_vs_brn_rows(b)
    assert [(row[0], row[1]) for row in rows] == [(name, label) for name, _ in experiments.RENORM_SETTINGS
                                                  for label in ("BN", "BRN")]
    for row, (comparison, label) in zip(rows, [(c, lbl) for c in b for lbl in ("BN", "BRN")]):
        runs = comparison.runs[label]
        for run in runs:
            check_run(run, comparison.training)
            assert run.steps == plan.renorm_steps
        assert row[3].split() == [f"{100 * r.test_accuracy:.1f}" for r in runs]
        assert row[4] == f"{statistics.median(r.test_loss for r in runs):.3f}"
    micro = b[1]
    assert micro.training.microbatch == 4 and micro.training.forwards_per_step == 8
    non_iid = b[2]
    assert non_iid.training.classes_per_batch == 2
    assert report.bn_vs_brn_table(b).startswith("(b) BN vs BRN")

    pytest.importorskip("matplotlib")
    paths = plots.write_all(a, b, tmp_path / "out")
    assert [os.path.basename(p) for p in paths] == ["bn_vs_no_bn.png", "bn_vs_brn.png"]
    for path in paths:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scaled_paper_schedule():
    schedule = experiments.scaled_paper_schedule(1600, forwards_per_step=8)
    assert schedule.rmax(0) == 1 and schedule.dmax(0) == 0
    assert schedule.rmax.begin == 50 * 8 and schedule.rmax.finish == 400 * 8 and schedule.dmax.finish == 250 * 8
    assert schedule.rmax(400 * 8) == 3 and schedule.dmax(250 * 8) == 5


def test_example_script_trains():
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("digits_mlp", ROOT / "examples" / "digits_mlp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for renorm in (False, True):
        assert 0 <= module.main(steps=20, renorm=renorm) <= 1


def test_cli_quick(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "normops", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "(a) no BN vs BN: SGD" in text and "iterations to val loss < 0.12" in text
    assert "(b) BN vs BRN:" in text and "test accuracy %" in text
    for name, _ in experiments.RENORM_SETTINGS:
        for label in ("BN", "BRN"):
            assert re.search(rf"^{re.escape(name)}\s+{label}\s+\d+\.\d \(", text, re.M), (name, label)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "plots skipped" in text
    else:
        assert (out / "bn_vs_no_bn.png").is_file() and (out / "bn_vs_brn.png").is_file()
