"""Composite Hypothesis strategies for BN/BRN inputs.

Arrays come from a NumPy generator seeded by Hypothesis, shaped by drawn regimes
(per-channel offsets and scales); Hypothesis shrinks the shape, the regime and the seed.
"""
import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from hypothesis import strategies as st

DTYPES = (np.float32, np.float64)


@dataclass
class Case:
    x: np.ndarray
    dy: np.ndarray
    axis: int
    gamma: Optional[np.ndarray]
    beta: Optional[np.ndarray]
    running_mean: np.ndarray
    running_second: np.ndarray  # running_var for BN, running_std for BRN
    momentum: float
    eps: float

    @property
    def reduce_axes(self):
        axis = self.axis % self.x.ndim
        return tuple(i for i in range(self.x.ndim) if i != axis)

    @property
    def m(self):
        return self.x.size // self.x.shape[self.axis]

    def bc(self, v):
        """Per-channel vector -> broadcastable against x."""
        shape = [1] * self.x.ndim
        shape[self.axis] = -1
        return np.asarray(v).reshape(shape)

    def batch_mean_var(self):
        x = self.x.astype(np.float64)
        mean = x.mean(axis=self.reduce_axes)
        return mean, ((x - self.bc(mean)) ** 2).mean(axis=self.reduce_axes)

    def running(self):
        """Fresh copies of the running statistics (they are updated in place)."""
        return self.running_mean.copy(), self.running_second.copy()

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def as_renorm(self):
        """The case with its running spread usable as BRN's running std (positive)."""
        return self.replace(running_second=np.abs(self.running_second) + 0.5)


@st.composite
def layouts(draw, min_ndim=2, max_ndim=5, max_size=240, training=True):
    """(shape, axis): any ndim in range, any channel axis (negative too), and at least
    two values per channel when ``training``."""
    ndim = draw(st.integers(min_ndim, max_ndim))
    axis = draw(st.integers(-ndim, ndim - 1))
    per_dim = max(1, int(max_size ** (1.0 / ndim)))
    shape = draw(st.lists(st.integers(1, max(per_dim, 2)), min_size=ndim, max_size=ndim))
    channel = axis % ndim
    if training and math.prod(shape) // shape[channel] == 1:
        shape[(channel + 1) % ndim] = 2
    return tuple(shape), axis


@st.composite
def cases(draw, dtypes=DTYPES, training=True, renorm=False, affine=None, max_size=240,
          max_ndim=5):
    """A full argument set for batch_norm (or batch_renorm when ``renorm``)."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape, axis = draw(layouts(max_size=max_size, max_ndim=max_ndim, training=training))
    channels = shape[axis]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    offset = draw(st.floats(-10.0, 10.0))
    log_scale = draw(st.floats(-1.5, 1.5))
    cshape = [1] * len(shape)
    cshape[axis] = channels
    # per-channel offsets and scales around the drawn regime
    chan_offset = offset + rng.normal(0.0, 1.0, channels)
    chan_scale = 10.0 ** (log_scale + rng.uniform(-0.5, 0.5, channels))
    x = rng.normal(size=shape) * chan_scale.reshape(cshape) + chan_offset.reshape(cshape)
    dy = rng.normal(size=shape)
    with_gamma = draw(st.booleans()) if affine is None else affine
    with_beta = draw(st.booleans()) if affine is None else affine
    gamma = rng.uniform(0.5, 2.0, channels) * rng.choice([-1.0, 1.0], channels) if with_gamma else None
    beta = rng.normal(size=channels) if with_beta else None
    running_mean = chan_offset + rng.normal(0.0, 0.5, channels) * chan_scale
    spread = rng.uniform(0.5, 2.0, channels) * chan_scale
    running_second = spread if renorm else spread ** 2
    momentum = draw(st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0]))
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]))

    def cast(v):
        return None if v is None else np.asarray(v, dtype=dtype)

    return Case(cast(x), cast(dy), axis, cast(gamma), cast(beta), cast(running_mean),
                cast(running_second), momentum, eps)
