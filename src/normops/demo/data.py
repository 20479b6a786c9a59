"""The handwritten digits that ship with scikit-learn (1797 8x8 images, 10 classes; no
download), split into train / validation / test, and the batch orders the demo trains on."""
from importlib import import_module
from typing import NamedTuple

import numpy as np

INSTALL_HINT = 'pip install "normops[demo]"'
DISTRIBUTIONS = {"sklearn": "scikit-learn"}   # import name -> what pip installs


def require(module, purpose):
    """Import ``module`` or raise an ImportError that says how to install the demo extra."""
    try:
        return import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise ImportError(f"{DISTRIBUTIONS.get(top, top)} is needed for {purpose} and is not "
                          f"installed ({exc}): {INSTALL_HINT}") from exc


class Split(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_features(self):
        return self.x_train.shape[1]

    @property
    def num_classes(self):
        return int(self.y_train.max()) + 1


def stratified_split(labels, fractions, seed):
    """Index arrays, one per fraction plus the rest, with each class split in the same
    proportions; the same seed gives the same split."""
    rng = np.random.default_rng(seed)
    parts = [[] for _ in range(len(fractions) + 1)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        cuts = np.cumsum([round(f * len(idx)) for f in fractions])
        for part, chunk in zip(parts, np.split(idx, cuts)):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def load_digits(*, seed=0, val_fraction=0.1, test_fraction=0.2, dtype=np.float32):
    """The digits data as float pixels in [0, 1] (raw values 0..16 divided by 16), in a
    stratified split fixed by ``seed``: test and validation fractions, the rest for training."""
    datasets = require("sklearn.datasets", "the digits data of python -m normops demo")
    digits = datasets.load_digits()
    x = (digits.data / 16.0).astype(dtype)
    y = digits.target.astype(np.int64)
    test, val, train = stratified_split(y, (test_fraction, val_fraction), seed)
    return Split(x[train], y[train], x[val], y[val], x[test], y[test])


def iid_batches(num_examples, batch_size, rng):
    """Endless index batches: a fresh permutation each epoch, cut into batches of
    ``batch_size``; the few examples left over at an epoch's end wait for the next one."""
    if not 1 <= batch_size <= num_examples:
        raise ValueError(f"need 1 <= batch_size <= {num_examples}, got {batch_size}")
    while True:
        perm = rng.permutation(num_examples)
        for start in range(0, num_examples - batch_size + 1, batch_size):
            yield perm[start:start + batch_size]


def few_class_batches(labels, batch_size, classes_per_batch, rng):
    """Endless non-i.i.d. index batches: each draws ``classes_per_batch`` distinct classes
    and ``batch_size / classes_per_batch`` examples of each (without repeats within a batch),
    the Batch Renormalization paper's setting of 16 labels x 2 examples per batch of 32
    scaled to a data set of 10 classes."""
    labels = np.asarray(labels)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    if batch_size % classes_per_batch:
        raise ValueError(f"batch_size {batch_size} is not a multiple of classes_per_batch {classes_per_batch}")
    per_class = batch_size // classes_per_batch
    if not 1 <= classes_per_batch <= len(by_class):
        raise ValueError(f"need 1 <= classes_per_batch <= {len(by_class)}, got {classes_per_batch}")
    if per_class > min(len(idx) for idx in by_class):
        raise ValueError(f"{per_class} examples per class exceed the smallest class")
    while True:
        chosen = rng.choice(len(by_class), classes_per_batch, replace=False)
        yield np.concatenate([rng.choice(by_class[c], per_class, replace=False) for c in chosen])
