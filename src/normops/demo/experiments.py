"""The demo's two experiments on the digits MLP, each over several seeds.

(a) no BN vs BN (seed 001's table): SGD until the validation loss falls below a threshold;
    iterations and training time to get there, test accuracy when stopped.
(b) BN vs BRN where BN is known to suffer (the Batch Renormalization paper's settings):
    i.i.d. batches of 32 as the reference, microbatches of 4, and non-i.i.d. batches that
    hold few classes each; a fixed number of steps, then the test accuracy in eval mode.

Within a seed every method starts from the same Linear weights and sees the same batches.
"""
import math
import time
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

import normops
from normops.schedules import renorm_paper

from .data import few_class_batches, iid_batches
from .nn import evaluate, mlp, train_step

# the paper's run: rmax/dmax relaxed from step 5k, rmax = 3 at 40k, dmax = 5 at 25k, of 160k
PAPER_STEPS = 160_000
PAPER_SCHEDULE = {"warmup_steps": 5_000, "rmax_steps": 40_000, "dmax_steps": 25_000}


@dataclass(frozen=True)
class Training:
    """One training setup. ``steps``: optimizer steps (the most, with a threshold);
    ``microbatch``: examples per normalization group (None: the whole batch);
    ``classes_per_batch``: non-i.i.d. batches of this many classes (None: i.i.d.);
    ``loss_threshold``: stop once the validation loss is below it, checked every
    ``eval_every`` steps."""

    steps: int
    batch_size: int = 64
    lr: float = 0.1
    hidden: tuple = (64, 16)
    microbatch: Optional[int] = None
    classes_per_batch: Optional[int] = None
    loss_threshold: Optional[float] = None
    eval_every: int = 1

    @property
    def forwards_per_step(self):
        return 1 if self.microbatch is None else math.ceil(self.batch_size / self.microbatch)


@dataclass(frozen=True)
class Norm:
    """How the hidden layers are normalized: "none", "BN" or "BRN", with the layers' momentum."""

    kind: str
    momentum: float = 0.1

    @property
    def label(self):
        return "no BN" if self.kind == "none" else self.kind

    def factory(self, training):
        """``num_features -> layer`` for mlp(), or None. BRN gets the paper's rmax/dmax
        schedule scaled to this run's length (in the layer's steps: one per forward)."""
        if self.kind == "none":
            return None
        if self.kind == "BN":
            return lambda c: normops.BatchNorm(c, momentum=self.momentum)
        if self.kind == "BRN":
            schedule = scaled_paper_schedule(training.steps, training.forwards_per_step)._asdict()
            return lambda c: normops.BatchRenorm(c, momentum=self.momentum, **schedule)
        raise ValueError(f"unknown normalization {self.kind!r}")


def scaled_paper_schedule(steps, forwards_per_step=1):
    """renorm_paper() with the paper's step counts scaled by steps / 160k, counted in
    layer forwards (``forwards_per_step`` of them per optimizer step)."""
    scale = steps / PAPER_STEPS
    return renorm_paper(**{k: max(1, round(v * scale)) * forwards_per_step for k, v in PAPER_SCHEDULE.items()})


@dataclass
class Run:
    """One training run's record. ``reached``: the step at which the validation loss first
    fell below the threshold (None: not reached); ``seconds``: time spent in training steps
    (evaluations excluded) up to the stop."""

    label: str
    seed: int
    steps: int = 0
    reached: Optional[int] = None
    diverged: bool = False
    seconds: float = 0.0
    eval_steps: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    test_loss: float = math.nan
    test_accuracy: float = math.nan

    @property
    def ms_per_step(self):
        return 1e3 * self.seconds / self.steps if self.steps else math.nan


def batch_order(split, training, rng):
    if training.classes_per_batch is None:
        return iid_batches(len(split.y_train), training.batch_size, rng)
    return few_class_batches(split.y_train, training.batch_size, training.classes_per_batch, rng)


def train(split, training, norm, seed):
    """Train one MLP; returns its Run. Seed -> (Linear init, batch order), shared by methods."""
    init_rng, batch_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))
    sizes = (split.num_features, *training.hidden, split.num_classes)
    net = mlp(sizes, rng=init_rng, norm=norm.factory(training), dtype=split.x_train.dtype)
    batches = batch_order(split, training, batch_rng)
    run = Run(norm.label, seed)
    for step in range(1, training.steps + 1):
        idx = next(batches)
        start = time.perf_counter()
        loss = train_step(net, split.x_train[idx], split.y_train[idx], training.lr,
                          microbatch=training.microbatch)
        run.seconds += time.perf_counter() - start
        run.steps = step
        run.train_loss.append(loss)
        if not math.isfinite(loss):
            run.diverged = True
            break
        if step % training.eval_every == 0 or step == training.steps:
            val_loss, _ = evaluate(net, split.x_val, split.y_val)
            run.eval_steps.append(step)
            run.val_loss.append(val_loss)
            if training.loss_threshold is not None and val_loss < training.loss_threshold:
                run.reached = step
                break
    run.test_loss, run.test_accuracy = evaluate(net, split.x_test, split.y_test)
    return run


@dataclass
class Comparison:
    """Runs of several methods in one setting: ``runs[label]`` lists one Run per seed."""

    name: str
    training: Training
    norms: tuple
    runs: dict


def compare(name, split, training, norms, seeds, log=None):
    """Every norm on every seed, methods alternating within a seed (so a slow spell of the
    machine falls on both)."""
    runs = {norm.label: [] for norm in norms}
    for seed in seeds:
        for norm in norms:
            run = train(split, training, norm, seed)
            runs[norm.label].append(run)
            if log is not None:
                log(f"  {name}, seed {seed}, {run.label}: {describe(run, training)}")
    return Comparison(name, training, tuple(norms), runs)


def describe(run, training):
    """One line for the progress log."""
    if run.diverged:
        stop = f"diverged at step {run.steps}"
    elif run.reached is not None:
        stop = f"val loss < {training.loss_threshold:g} at step {run.reached}"
    else:
        stop = f"{run.steps} steps"
    return f"{stop}, {run.seconds:.2f} s, test accuracy {100 * run.test_accuracy:.1f}%"


# -- the two experiments ----------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """Seeds and run lengths: the full demo, or --quick."""

    seeds: tuple
    max_iterations: int      # (a): the most SGD iterations before giving up on the threshold
    renorm_steps: int        # (b): SGD steps per run

    @classmethod
    def full(cls, seeds=5):
        return cls(tuple(range(seeds)), max_iterations=2000, renorm_steps=1500)

    @classmethod
    def quick(cls, seeds=3):
        return cls(tuple(range(seeds)), max_iterations=1000, renorm_steps=400)


# seed 001: SGD, learning rate 0.1, batches of 64, He init, stop when the loss is below 0.12
BN_VS_NONE = Training(steps=2000, batch_size=64, lr=0.1, loss_threshold=0.12, eval_every=1)
BN_MOMENTUM = 0.1   # the layer's default (PyTorch's); seed 001's 0.9 in its own convention
# the renorm paper: batches of 32 per worker, microbatches of 4, 16 labels x 2 per non-i.i.d.
# batch (here 2 classes x 16, a digits data set having 10 classes), moving averages alpha 0.01
RENORM_MOMENTUM = 0.01
RENORM_SETTINGS = (
    ("i.i.d. batches of 32", Training(steps=1500, batch_size=32, lr=0.1)),
    ("microbatches of 4", Training(steps=1500, batch_size=32, lr=0.1, microbatch=4)),
    ("2 classes per batch of 32", Training(steps=1500, batch_size=32, lr=0.1, classes_per_batch=2)),
)


def bn_vs_none(split, plan, log=None):
    training = replace(BN_VS_NONE, steps=plan.max_iterations)
    return compare("no BN vs BN", split, training, (Norm("none"), Norm("BN", BN_MOMENTUM)), plan.seeds, log)


def bn_vs_brn(split, plan, log=None):
    norms = (Norm("BN", RENORM_MOMENTUM), Norm("BRN", RENORM_MOMENTUM))
    out = []
    for name, training in RENORM_SETTINGS:
        training = replace(training, steps=plan.renorm_steps, eval_every=max(1, plan.renorm_steps // 50))
        out.append(compare(name, split, training, norms, plan.seeds, log))
    return out
