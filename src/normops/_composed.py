"""BN and BRN built from a backend's four kernels; the O(C) per-channel math lives here once.

Every op is an affine map per channel. Forward: y = a * x + b. Backward:
dx = p * dy + q * x + s, with the sums S0 = sum(dy) and S1 = sum(dy * (x - mean)).
With scale = r * invstd (r = 1 for BN, d = 0) and g = gamma (1 when None):

    a = g * scale                b = beta + g * (d - scale * mean)
    p = g * scale                q = -p * invstd * (invstd * S1 / m)   (0 in eval mode)
    s = -p * S0 / m - q * mean   (0 in eval mode)
    dgamma = scale * S1 + d * S0                dbeta = S0
"""
import math

from ._interface import array_namespace
from ._saved import BatchNormSaved, BatchRenormSaved


def canonical_view(x, axis):
    """x as (outer, C, inner): every axis before the channel axis folded into outer, every
    axis after it into inner (a view when x's layout allows, else a copy)."""
    shape = x.shape
    return x.reshape(math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))


def _f64(xp, arr):
    return None if arr is None else arr.astype(xp.float64)


def _forward_affine(xp, gamma, beta, mean, invstd, r=None, d=None):
    scale = invstd if r is None else r * invstd
    shift = -scale * mean if d is None else d - scale * mean
    if gamma is not None:
        g = _f64(xp, gamma)
        scale, shift = g * scale, g * shift
    if beta is not None:
        shift = shift + _f64(xp, beta)
    return scale, shift


def _blend(running, batch, momentum):
    """running <- (1 - momentum) * running + momentum * batch, in float64, in place."""
    running[...] = (1.0 - momentum) * running.astype(batch.dtype) + momentum * batch


def _batch_moments(backend, xp, x3, eps):
    count, mean, m2 = backend.batch_stats(x3)
    return count, mean, m2, 1.0 / xp.sqrt(m2 / count + eps)


def batch_norm(backend, x, gamma, beta, running_mean, running_var, *, training, momentum,
               eps, axis, convention):
    xp = array_namespace(backend)
    x3 = canonical_view(x, axis)
    if training:
        count, mean, m2, invstd = _batch_moments(backend, xp, x3, eps)
    else:
        mean = _f64(xp, running_mean)
        invstd = 1.0 / xp.sqrt(_f64(xp, running_var) + eps)
    a, b = _forward_affine(xp, gamma, beta, mean, invstd)
    y = backend.scale_shift(x3, a, b).reshape(x.shape)
    if training and running_mean is not None:
        _blend(running_mean, mean, momentum)
        _blend(running_var, m2 / (count - 1 if convention == "pytorch" else count), momentum)
    return y, BatchNormSaved(mean, invstd, training, axis, x.shape)


def batch_renorm(backend, x, gamma, beta, running_mean, running_std, *, training, rmax, dmax,
                 momentum, eps, axis):
    xp = array_namespace(backend)
    x3 = canonical_view(x, axis)
    mu, sigma = _f64(xp, running_mean), _f64(xp, running_std)
    if not training:
        a, b = _forward_affine(xp, gamma, beta, mu, 1.0 / sigma)
        y = backend.scale_shift(x3, a, b).reshape(x.shape)
        return y, BatchRenormSaved(mu, 1.0 / sigma, None, None, False, axis, x.shape)
    count, mean, m2, invstd = _batch_moments(backend, xp, x3, eps)
    sigma_batch = xp.sqrt(m2 / count + eps)
    # r and d are constants for the gradient, taken from the running stats before the update
    r = xp.clip(sigma_batch / sigma, 1.0 / rmax, rmax)
    d = xp.clip((mean - mu) / sigma, -dmax, dmax)
    a, b = _forward_affine(xp, gamma, beta, mean, invstd, r, d)
    y = backend.scale_shift(x3, a, b).reshape(x.shape)
    _blend(running_mean, mean, momentum)
    _blend(running_std, sigma_batch, momentum)
    return y, BatchRenormSaved(mean, invstd, r, d, True, axis, x.shape)


def _backward(backend, dy, x, gamma, saved, r=None, d=None):
    xp = array_namespace(backend)
    x3, dy3 = canonical_view(x, saved.axis), canonical_view(dy, saved.axis)
    mean, invstd = saved.mean, saved.invstd
    sum_dy, sum_dy_xmu = backend.grad_stats(dy3, x3, mean)
    scale = invstd if r is None else r * invstd
    dgamma = scale * sum_dy_xmu if d is None else scale * sum_dy_xmu + d * sum_dy
    p = scale if gamma is None else _f64(xp, gamma) * scale
    if saved.training:
        m = x3.shape[0] * x3.shape[2]
        # -invstd (invstd S1 / m) is of the size of dy / sigma: invstd^3 alone underflows at
        # sigma = 1e104
        q = p * -(invstd * (invstd * sum_dy_xmu / m))
        s = -p * sum_dy / m - q * mean
    else:
        q = s = xp.zeros_like(p)
    dx = backend.grad_input(dy3, x3, p, q, s).reshape(x.shape)
    return dx, dgamma.astype(x.dtype), sum_dy.astype(x.dtype)


def batch_norm_backward(backend, dy, x, saved, gamma):
    return _backward(backend, dy, x, gamma, saved)


def batch_renorm_backward(backend, dy, x, saved, gamma):
    return _backward(backend, dy, x, gamma, saved, saved.r, saved.d)
