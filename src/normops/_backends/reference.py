"""The "reference" backend: the formulas of Ioffe & Szegedy (2015) and Ioffe (2017)
transcribed literally in NumPy, in float64 whatever the input dtype, then rounded once
to each output's dtype (_halves.round_to: y and dx x's, dgamma and dbeta gamma's, or
float32 for half x without gamma; running statistics their own).

It is the oracle every other backend is tested against, so it favours being obviously
right over being fast: the whole ops below follow the papers' forward equations and
their chain-rule backward term by term, and do not use the four-kernel split. The four
kernels are provided too (plain NumPy, float64) so that the composition can be tested
against these whole ops.

The fused epilogue is transcribed the same way: y = relu(BN(x) + z) in float64,
rounded once (the other backends round BN(x) to x's dtype before adding z, as the
unfused composition does); the backward multiplies dy by relu'(y), 0 where y <= 0.
"""
import math

import numpy as np

from .._halves import grad_dtype, round_to
from .._saved import BatchNormSaved, BatchRenormSaved
from ._base import BuiltinBackend

F64 = np.float64


def _power_of_two_near(v):
    """2^k with v / 2^k in [1, 2) for positive finite v (1 elsewhere): dividing by it is
    exact, and 2^k is finite even for v near the largest double."""
    ok = np.isfinite(v) & (v > 0)
    return np.where(ok, np.ldexp(1.0, np.frexp(np.where(ok, v, 1.0))[1] - 1), 1.0)


def moments(x, axis):
    """mu_B = 1/m sum x_i and sigma_B^2 = 1/m sum (x_i - mu_B)^2 of each channel of x (the
    channel axis ``axis``), in float64 and as exactly as it allows: each channel's values
    are laid out contiguously, so NumPy sums them pairwise (along a strided axis it adds
    them one by one, 4e-13 of the variance lost over 4096 values); the sums are of
    deviations from the channel's first value, so a common offset does not swamp them
    (np.mean of 4096 values at 1e12 missed the mean by 8e-4, and the variance by 6e-7),
    divided by a power of two of their size, so no sum overflows (a channel of 1e307s);
    the variance is the corrected two-pass one. Statistics that are not finite (a NaN or
    inf in the channel, or a spread whose sum of squared deviations overflows) are NaN,
    mean included: one rule on every backend."""
    v = np.ascontiguousarray(np.moveaxis(x, axis, 0), dtype=F64).reshape(x.shape[axis], -1)
    first = v[:, :1]
    with np.errstate(invalid="ignore", over="ignore"):
        dev = v - first
        scale = _power_of_two_near(np.abs(dev).max(axis=1, keepdims=True))
        scaled = dev / scale
        centre = scaled.mean(axis=1, keepdims=True)
        e = scaled - centre
        shift = e.mean(axis=1, keepdims=True)
        var = np.maximum((e * e).mean(axis=1, keepdims=True) - shift * shift, 0.0) * scale ** 2
        mu = first + (centre + shift) * scale
        # the rule's "overflows": the sum of squared deviations (m var) is beyond a double
        bad = ~(np.isfinite(mu) & np.isfinite(var * v.shape[1]))
    return np.where(bad, np.nan, mu)[:, 0], np.where(bad, np.nan, var)[:, 0]


class _Channels:
    """Reductions over every axis but the channel axis, and per-channel broadcasting."""

    def __init__(self, x, axis):
        self.axis = axis
        self.axes = tuple(i for i in range(x.ndim) if i != axis)
        self.shape = tuple(n if i == axis else 1 for i, n in enumerate(x.shape))
        self.m = math.prod(x.shape) // x.shape[axis]

    def sum(self, v):
        return v.sum(axis=self.axes)

    def moments(self, x):
        """The batch mean and (biased) variance of each channel (see ``moments``)."""
        return moments(x, self.axis)

    def deviations(self, x, mu_B, training):
        """x_i - mu_B. In training mu_B is the batch mean rounded to a double, off by up to
        offset 2^-53 (1e-4 spreads at an offset of 1e12 spreads); the mean of x_i - mu_B is
        that rounding, and taking it away leaves x_i minus the exact batch mean."""
        dev = x - self.bc(mu_B)
        return dev - self.bc(self.mean(dev)) if training else dev

    def mean(self, v):
        return v.mean(axis=self.axes)

    def bc(self, v, default=None):
        """A per-channel vector shaped to broadcast against x (``default`` when None)."""
        return default if v is None else np.asarray(v, dtype=F64).reshape(self.shape)


def _epilogue(y, residual, activation):
    """relu(y + z), in float64: relu(v) = 0 where v < 0, else v (-0.0 and NaN stay)."""
    if residual is not None:
        y = y + residual.astype(F64)
    return np.where(y < 0, 0.0, y) if activation == "relu" else y


def _through_relu(dy, y, activation):
    """dL/d(BN(x) + z) from dL/dy: dy relu'(y), relu'(y) = 0 where y <= 0 (and 1 where y
    is NaN, as PyTorch's, so a NaN is not hidden)."""
    return np.where(y <= 0, 0.0, dy) if activation == "relu" else dy


def _with_dz(grads, dz, saved, dtype):
    """The backward's result: dz = dL/dz = dL/d(BN(x) + z), after a forward with a residual."""
    return grads + (round_to(dz, dtype),) if saved.residual else grads


def _update(running, batch, momentum):
    running[...] = round_to((1 - momentum) * running.astype(F64) + momentum * batch, running.dtype)


def _grads(dx, dgamma, dbeta, x_dtype, gamma):
    """(dx, dgamma, dbeta) from their float64 values, each rounded once to its dtype."""
    g = grad_dtype(x_dtype, gamma)
    return round_to(dx, x_dtype), round_to(dgamma, g), round_to(dbeta, g)


class ReferenceBackend(BuiltinBackend):
    xp = np
    device = "cpu"
    epilogue = True   # its ops and kernels take residual/activation, and y for the mask

    # --- whole ops: literal transcriptions -------------------------------------------

    def batch_norm(self, x, gamma, beta, running_mean, running_var, *, training, momentum,
                   eps, axis, convention, residual=None, activation=None):
        ch = _Channels(x, axis)
        dtype, x = x.dtype, x.astype(F64)
        if training:
            mu_B, var_B = ch.moments(x)     # mu_B = 1/m sum x_i, sigma_B^2 = 1/m sum (x_i - mu_B)^2
        else:
            mu_B, var_B = running_mean.astype(F64), running_var.astype(F64)
        x_hat = ch.deviations(x, mu_B, training) / np.sqrt(ch.bc(var_B) + eps)
        y = ch.bc(gamma, 1.0) * x_hat + ch.bc(beta, 0.0)     # y_i = gamma x_hat_i + beta
        y = _epilogue(y, residual, activation)               # y_i = relu(y_i + z_i)
        if training and running_mean is not None:
            # test-time variance: the unbiased m/(m-1) sigma_B^2 (PyTorch) or sigma_B^2 (Keras)
            var_running = var_B * ch.m / (ch.m - 1) if convention == "pytorch" else var_B
            _update(running_mean, mu_B, momentum)
            _update(running_var, var_running, momentum)
        saved = BatchNormSaved(mu_B, 1.0 / np.sqrt(var_B + eps), training, axis, x.shape,
                               activation=activation, residual=residual is not None)
        return round_to(y, dtype), saved

    def batch_norm_backward(self, dy, x, saved, gamma, y=None):
        ch = _Channels(x, saved.axis)
        dtype, x = x.dtype, x.astype(F64)
        dy = _through_relu(dy.astype(F64), y, saved.activation)   # dL/d(BN(x) + z)
        return _with_dz(self._bn_backward(ch, dtype, dy, x, saved, gamma), dy, saved, dtype)

    def _bn_backward(self, ch, dtype, dy, x, saved, gamma):
        invstd = ch.bc(saved.invstd)                           # 1 / sqrt(sigma_B^2 + eps)
        x_hat = ch.deviations(x, saved.mean, saved.training) * invstd
        dgamma = ch.sum(dy * x_hat)                            # dL/dgamma = sum dy_i x_hat_i
        dbeta = ch.sum(dy)                                     # dL/dbeta = sum dy_i
        dx_hat = dy * ch.bc(gamma, 1.0)                        # dL/dx_hat_i = dy_i gamma
        if not saved.training:
            dx = dx_hat * invstd
        else:
            # The paper's chain rule, each term written as (sigma_B^2 + eps)^(-1/2) times one of
            # the size of dy: (x_i - mu_B) (sigma_B^2 + eps)^(-3/2) is x_hat_i (sigma_B^2 + eps)^-1,
            # and (sigma_B^2 + eps)^(-3/2) alone underflows at sigma_B = 1e104.
            m = ch.m
            # dL/dsigma_B^2 = sum dx_hat_i (x_i - mu_B) (-1/2) (sigma_B^2 + eps)^(-3/2), times (sigma_B^2 + eps)
            dvar_n = ch.bc(ch.sum(dx_hat * x_hat * -0.5))
            # dL/dmu_B = sum dx_hat_i (-1) / sqrt(sigma_B^2 + eps) + dL/dsigma_B^2 sum -2 (x_i - mu_B) / m,
            # times sqrt(sigma_B^2 + eps)
            dmu_n = ch.bc(ch.sum(-dx_hat)) + dvar_n * ch.bc(ch.sum(-2.0 * x_hat)) / m
            # dL/dx_i = dx_hat_i / sqrt(.) + dL/dsigma_B^2 2 (x_i - mu_B) / m + dL/dmu_B / m
            dx = (dx_hat + dvar_n * 2.0 * x_hat / m + dmu_n / m) * invstd
        return _grads(dx, dgamma, dbeta, dtype, gamma)

    def batch_renorm(self, x, gamma, beta, running_mean, running_std, *, training, rmax, dmax,
                     momentum, eps, axis, residual=None, activation=None):
        ch = _Channels(x, axis)
        dtype, x = x.dtype, x.astype(F64)
        mu, sigma = running_mean.astype(F64), running_std.astype(F64)
        g, b = ch.bc(gamma, 1.0), ch.bc(beta, 0.0)
        fused = dict(activation=activation, residual=residual is not None)
        if not training:
            y = g * (x - ch.bc(mu)) / ch.bc(sigma) + b         # y = gamma (x - mu) / sigma + beta
            y = _epilogue(y, residual, activation)             # y = relu(y + z)
            return round_to(y, dtype), BatchRenormSaved(mu, 1.0 / sigma, None, None, False, axis,
                                                        x.shape, **fused)
        mu_B, var_B = ch.moments(x)                            # mu_B = 1/m sum x_i
        sigma_B = np.sqrt(eps + var_B)                         # sqrt(eps + 1/m sum (x_i - mu_B)^2)
        r = np.clip(sigma_B / sigma, 1.0 / rmax, rmax)          # stop_gradient(clip(sigma_B / sigma))
        d = np.clip((mu_B - mu) / sigma, -dmax, dmax)           # stop_gradient(clip((mu_B - mu) / sigma))
        x_hat = ch.deviations(x, mu_B, True) / ch.bc(sigma_B) * ch.bc(r) + ch.bc(d)
        y = _epilogue(g * x_hat + b, residual, activation)    # y = relu(gamma x_hat + beta + z)
        _update(running_mean, mu_B, momentum)                  # mu += alpha (mu_B - mu)
        _update(running_std, sigma_B, momentum)                # sigma += alpha (sigma_B - sigma)
        return round_to(y, dtype), BatchRenormSaved(mu_B, 1.0 / sigma_B, r, d, True, axis,
                                                    x.shape, **fused)

    def batch_renorm_backward(self, dy, x, saved, gamma, y=None):
        ch = _Channels(x, saved.axis)
        dtype, x = x.dtype, x.astype(F64)
        dy = _through_relu(dy.astype(F64), y, saved.activation)   # dL/d(BN(x) + z)
        return _with_dz(self._brn_backward(ch, dtype, dy, x, saved, gamma), dy, saved, dtype)

    def _brn_backward(self, ch, dtype, dy, x, saved, gamma):
        sigma_B = ch.bc(1.0 / saved.invstd)
        dx_hat = dy * ch.bc(gamma, 1.0)                        # dL/dx_hat_i = dy_i gamma
        dbeta = ch.sum(dy)
        x_norm = ch.deviations(x, saved.mean, saved.training) / sigma_B   # (x_i - mu_B) / sigma_B
        if not saved.training:
            dgamma = ch.sum(dy * x_norm)
            return _grads(dx_hat / sigma_B, dgamma, dbeta, dtype, gamma)
        r, d, m = ch.bc(saved.r), ch.bc(saved.d), ch.m
        dgamma = ch.sum(dy * (x_norm * r + d))
        # the chain rule with each term written as 1 / sigma_B times one of the size of dy
        # (1 / sigma_B^2 alone overflows or underflows first), as for batch_norm_backward:
        # dL/dsigma_B = sum dx_hat_i (-r) (x_i - mu_B) / sigma_B^2, times sigma_B
        dsigma_n = ch.bc(ch.sum(dx_hat * -r * x_norm))
        dmu_n = ch.bc(ch.sum(dx_hat * -r))                     # dL/dmu_B = sum dx_hat_i (-r) / sigma_B, times sigma_B
        # dL/dx_i = dx_hat_i r / sigma_B + dL/dsigma_B (x_i - mu_B) / (m sigma_B) + dL/dmu_B / m
        dx = (dx_hat * r + dsigma_n * x_norm / m + dmu_n / m) / sigma_B
        return _grads(dx, dgamma, dbeta, dtype, gamma)

    # --- the four kernels, on the (outer, C, inner) view, in float64 ------------------

    @staticmethod
    def _col(v):
        return np.asarray(v, dtype=F64)[None, :, None]

    def batch_stats(self, x):
        count = x.shape[0] * x.shape[2]
        mean, var = moments(x, 1)
        return count, mean, var * count

    def scale_shift(self, x, a, b, residual=None, activation=None):
        y = _epilogue(self._col(a) * x.astype(F64) + self._col(b), residual, activation)
        return round_to(y, x.dtype)

    def grad_stats(self, dy, x, mean, y=None):
        dy = _through_relu(dy.astype(F64), y, None if y is None else "relu")
        return dy.sum(axis=(0, 2)), (dy * (x.astype(F64) - self._col(mean))).sum(axis=(0, 2))

    def grad_input(self, dy, x, p, q, s, y=None):
        dy = _through_relu(dy.astype(F64), y, None if y is None else "relu")
        out = self._col(p) * dy + self._col(q) * x.astype(F64) + self._col(s)
        return round_to(out, x.dtype)
