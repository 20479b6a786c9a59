"""The "array-api" backend: the four kernels written once against the Python array API
standard, in the namespace of x's library (through array-api-compat), on x's device.

Every op is the composition of these kernels (_composed), so the lines that run here
on NumPy, array-api-strict and PyTorch CPU tensors in CI are the lines a GPU runs on
CuPy arrays and CUDA tensors (the "cupy" and "torch" backends are this class).

Sums are kept in float64, or float32 on a device without float64, without a widened
copy of x (``sum(..., dtype=)``). Statistics are two-pass and shifted: deviations from
the mean rounded to x's dtype are taken in x's dtype (exact for values near it) and
their own sum corrects the mean and M2, so a common offset does not swamp the variance.

float16 and bfloat16 x are widened first (a half has 8 or 11 bits: deviations and
products in it would be far from exact): every kernel computes in the wide dtype, and
the elementwise ones round their result once to x's dtype (_halves.cast).
"""
import numpy

from .. import _arrays as arrays
from .. import _composed
from .. import _halves as halves
from ._base import BuiltinBackend

REDUCED = (0, 2)   # the (outer, C, inner) axes a per-channel sum runs over


class ArrayApiBackend(BuiltinBackend):
    device = "any"

    def __init__(self):
        arrays.compat()   # ImportError (with the install line) makes it unavailable

    def namespace(self, x):
        """The array-API namespace of x's library. NumPy arrays, and values that are no
        library's arrays (lists), are NumPy's: they get NumPy's checks and conversions,
        as on the cpu backend."""
        if isinstance(x, numpy.ndarray):
            return numpy
        return arrays.namespace_or_none(x) or numpy

    # --- whole ops: the composition, without an autograd graph ------------------------

    def batch_norm(self, x, *args, **options):
        with arrays.no_autograd(x):
            return _composed.batch_norm(self, x, *args, **options)

    def batch_renorm(self, x, *args, **options):
        with arrays.no_autograd(x):
            return _composed.batch_renorm(self, x, *args, **options)

    # y: the forward's output, for the mask of a fused relu (given to a backend whose
    # kernels take the epilogue, as the fused cupy one's do; see _interface)
    def batch_norm_backward(self, dy, x, saved, gamma, y=None):
        with arrays.no_autograd(x):
            return _composed.batch_norm_backward(self, dy, x, saved, gamma, y=y)

    def batch_renorm_backward(self, dy, x, saved, gamma, y=None):
        with arrays.no_autograd(x):
            return _composed.batch_renorm_backward(self, dy, x, saved, gamma, y=y)

    # --- the four kernels -----------------------------------------------------------

    def batch_stats(self, x):
        xp, wide, m = self._setup(x)
        x = self._widened(xp, x, wide)
        centre, dev = self._deviations(xp, x, xp.sum(x, axis=REDUCED, dtype=wide) / m)
        s1 = xp.sum(dev, axis=REDUCED, dtype=wide)
        mean = arrays.astype(xp, centre, wide) + s1 / m
        # the corrected two-pass M2
        m2 = xp.maximum(xp.sum(dev * dev, axis=REDUCED, dtype=wide) - s1 * (s1 / m), 0.0)
        # one rule on every backend: a channel with a NaN or inf, or whose M2 overflows,
        # gets NaN statistics
        bad = ~(xp.isfinite(mean) & xp.isfinite(m2))
        nan = xp.full_like(mean, float("nan"))
        return m, xp.where(bad, nan, mean), xp.where(bad, nan, m2)

    def scale_shift(self, x, a, b):
        xp = self.namespace(x)
        if halves.is_half(x.dtype):
            wide = arrays.wide_dtype(xp, arrays.device(x))
            return halves.cast(xp, self.scale_shift(arrays.astype(xp, x, wide), a, b), x.dtype)
        centre, shift = self._centred(xp, x, a, b)
        return (x - centre) * self._column(xp, a, x) + shift

    def grad_stats(self, dy, x, mean):
        xp, wide, _ = self._setup(x)
        dy, x = self._widened(xp, dy, wide), self._widened(xp, x, wide)
        centre, dev = self._deviations(xp, x, mean)
        sum_dy = xp.sum(dy, axis=REDUCED, dtype=wide)
        # sum dy (x - mean) = sum dy (x - centre) + (centre - mean) sum dy
        correction = (arrays.astype(xp, centre, wide) - mean) * sum_dy
        return sum_dy, xp.sum(dy * dev, axis=REDUCED, dtype=wide) + correction

    def grad_input(self, dy, x, p, q, s):
        xp = self.namespace(x)
        if halves.is_half(x.dtype):
            wide = arrays.wide_dtype(xp, arrays.device(x))
            dx = self.grad_input(arrays.astype(xp, dy, wide), arrays.astype(xp, x, wide), p, q, s)
            return halves.cast(xp, dx, x.dtype)
        centre, shift = self._centred(xp, x, q, s)
        return dy * self._column(xp, p, x) + ((x - centre) * self._column(xp, q, x) + shift)

    # --- helpers ----------------------------------------------------------------------

    def _setup(self, x):
        xp = self.namespace(x)
        return xp, arrays.wide_dtype(xp, arrays.device(x)), x.shape[0] * x.shape[2]

    @staticmethod
    def _widened(xp, x, wide):
        """x, or a copy of it in the wide dtype when it is half (see the module docstring)."""
        return arrays.astype(xp, x, wide) if halves.is_half(x.dtype) else x

    @staticmethod
    def _column(xp, v, x):
        """A per-channel vector as x's dtype, shaped (1, C, 1) to broadcast against x."""
        return xp.reshape(arrays.astype(xp, v, x.dtype), (1, x.shape[1], 1))

    def _centred(self, xp, x, a, b):
        """a x + b as (x - c) a + (b + a c), as (1, C, 1) columns in x's dtype (see
        centred)."""
        centre, shift = centred(xp, x.dtype, a, b)
        return (xp.reshape(arrays.astype(xp, centre, x.dtype), (1, x.shape[1], 1)),
                self._column(xp, shift, x))

    def _deviations(self, xp, x, mean):
        """(centre, x - centre): ``mean`` rounded to x's dtype, and the deviations from
        it in x's dtype, exact for values near it."""
        centre = arrays.astype(xp, mean, x.dtype)
        return centre, x - self._column(xp, centre, x)


def centred(xp, dtype, a, b):
    """a x + b as a (x - c) + (b + a c), per channel, with c = -b/a rounded to ``dtype``
    (x's): the point where the map is 0, near the channel's values, so that x - c is
    exact where a common offset would make a x and b cancel (y of float32 data at 1e4
    spreads was 1e-3 off, is 1e-7). c is 0 where -b/a is not finite. Returns c (holding
    values of ``dtype``) and b + a c, both in a's dtype."""
    ratio = -b / xp.where(a == 0, xp.ones_like(a), a)
    info = xp.finfo(dtype)
    usable = xp.isfinite(ratio) & (xp.abs(ratio) <= info.max) & (a != 0)
    zero = xp.zeros_like(ratio)
    centre = arrays.astype(xp, arrays.astype(xp, xp.where(usable, ratio, zero), dtype), a.dtype)
    return centre, b + xp.where(usable, a * centre, zero)
