"""An example normops backend: the four kernels in plain NumPy.

normops hands every kernel a 3-D (outer, C, inner) view of x, so a reduction over
axes (0, 2) is a per-channel reduction whatever the layout, and a per-channel float64
vector broadcasts as ``v[None, :, None]``. Everything else (validation, the O(C)
per-channel math, running statistics) is normops' job.
"""
import numpy as np

__all__ = ["NumpyKernels"]

F64 = np.float64


def _col(v):
    """A per-channel vector shaped to broadcast against an (outer, C, inner) array."""
    return np.asarray(v, dtype=F64)[None, :, None]


class NumpyKernels:
    """The four kernels; sums are taken in float64 whatever x's dtype, as float32
    accumulators lose digits over the millions of values one channel may hold."""

    xp = np  # the array namespace normops uses for the per-channel math (the default)
    device = "cpu"

    def batch_stats(self, x):
        """Two passes (mean, then squared deviations from it): E[x^2] - E[x]^2 cancels
        catastrophically when the mean is large next to the spread (1e8 + N(0, 1))."""
        x = x.astype(F64)
        count = x.shape[0] * x.shape[2]
        mean = x.sum(axis=(0, 2)) / count
        m2 = np.square(x - _col(mean)).sum(axis=(0, 2))
        return count, mean, m2

    def scale_shift(self, x, a, b):
        """Computed in float64 and rounded once to x's dtype."""
        return (_col(a) * x.astype(F64) + _col(b)).astype(x.dtype)

    def grad_stats(self, dy, x, mean):
        """sum(dy * (x - mean)) rather than sum(dy * x) - mean * sum(dy), which would
        cancel in the same way as the variance above."""
        dy = dy.astype(F64)
        return dy.sum(axis=(0, 2)), (dy * (x.astype(F64) - _col(mean))).sum(axis=(0, 2))

    def grad_input(self, dy, x, p, q, s):
        """Computed in float64 and rounded once to x's dtype."""
        out = _col(p) * dy.astype(F64) + _col(q) * x.astype(F64) + _col(s)
        return out.astype(x.dtype)
