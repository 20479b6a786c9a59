"""BN and BRN built from a backend's four kernels; the O(C) per-channel math lives here once.

Every op is an affine map per channel. Forward: y = a * x + b. Backward:
dx = p * dy + q * x + s, with the sums S0 = sum(dy) and S1 = sum(dy * (x - mean)).
With scale = r * invstd (r = 1 for BN, d = 0) and g = gamma (1 when None):

    a = g * scale                b = beta + g * (d - scale * mean)
    p = g * scale                q = -p * invstd * (invstd * S1 / m)   (0 in eval mode)
    s = -p * S0 / m - q * mean   (0 in eval mode)
    dgamma = scale * S1 + d * S0                dbeta = S0

It is written against the array API standard (the namespace of x's library, see
_interface), so the same lines run on NumPy, PyTorch tensors and CuPy arrays. The
per-channel vectors are in the kernels' wide dtype: float64, or float32 on a device
without float64.

Dtypes: y and dx have x's; dgamma and dbeta gamma's (float32 for float16/bfloat16 x
without gamma, x's otherwise); the running statistics keep theirs. Each is computed
in the wide dtype and rounded once (_halves.cast: correctly, also to bfloat16).

The fused epilogue (``residual`` z, ``activation`` "relu"): y = relu(a * x + b + z),
where the map's result rounded to x's dtype is added to z and rounded once. A backend
whose kernels take it (``epilogue = True``, see _interface) runs it inside scale_shift,
and masks dy with the forward's y inside grad_stats and grad_input; on any other the
same lines apply it with elementwise array ops. The backward masks dy where y <= 0
(NaN y lets dy through, as PyTorch does), and returns dz, the masked dy, after a
forward with a residual.

``sync`` (a _distributed.Step, or None for a local call) makes the statistics those of
every rank's batch together: the local kernel's partial sums meet the other ranks' in
its one collective, and m is the global count. Everything else stays local.
"""
import math

from . import _arrays as arrays
from . import _halves as halves
from ._distributed import digest, holds_no_values
from ._interface import array_namespace
from ._saved import BatchNormSaved, BatchRenormSaved


def canonical_view(xp, x, axis):
    """x as (outer, C, inner): every axis before the channel axis folded into outer, every
    axis after it into inner (a view when x's layout allows, else a copy)."""
    shape = x.shape
    return xp.reshape(x, (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])))


def _wide(xp, arr, wide):
    return None if arr is None else arrays.astype(xp, arr, wide)


def _forward_affine(xp, gamma, beta, mean, invstd, r=None, d=None):
    scale = invstd if r is None else r * invstd
    shift = -scale * mean if d is None else d - scale * mean
    if gamma is not None:
        g = _wide(xp, gamma, mean.dtype)
        scale, shift = g * scale, g * shift
    if beta is not None:
        shift = shift + _wide(xp, beta, mean.dtype)
    return scale, shift


def _blend(xp, running, batch, momentum):
    """running <- (1 - momentum) * running + momentum * batch, in the wide dtype, in place."""
    blended = (1.0 - momentum) * arrays.astype(xp, running, batch.dtype) + momentum * batch
    running[...] = halves.cast(xp, blended, running.dtype)


def _elementwise(xp, kernel, first, *args):
    """kernel(first, *args), an elementwise map; an empty array (no kernel call) for a
    rank whose part of a synchronized batch holds no values."""
    if holds_no_values(first):
        return xp.empty_like(first)
    return kernel(first, *args)


def _with_epilogue(backend):
    return getattr(backend, "epilogue", False)


def _mapped(backend, xp, x3, a, b, x, axis, residual, activation):
    """y = act(a x + b + z) in x's shape: the epilogue in the backend's scale_shift where
    it takes one, else after it, with array ops (the same sum and rounding)."""
    if residual is None and activation is None:
        return xp.reshape(_elementwise(xp, backend.scale_shift, x3, a, b), x.shape)
    z3 = None if residual is None else canonical_view(xp, residual, axis)
    if _with_epilogue(backend):
        def kernel(x3, a, b):
            return backend.scale_shift(x3, a, b, residual=z3, activation=activation)
        return xp.reshape(_elementwise(xp, kernel, x3, a, b), x.shape)
    y3 = epilogue(xp, _elementwise(xp, backend.scale_shift, x3, a, b), z3, activation)
    return xp.reshape(y3, x.shape)


def epilogue(xp, y, z, activation):
    """act(y + z) with array ops: z added when given (one rounding to y's dtype), then
    relu when ``activation`` is "relu"."""
    if z is not None:
        y = y + z
    return relu(xp, y) if activation == "relu" else y


def relu(xp, v):
    """0 where v < 0, else v: -0.0 and NaN stay, as torch.relu gives them."""
    return xp.where(v < 0, xp.zeros_like(v), v)


def relu_mask(backend, xp, dy, y):
    """dy where y > 0 or y is NaN, else 0: the gradient through relu, as PyTorch's
    (not y <= 0). The backend's own ``relu_mask`` where it has one."""
    own = getattr(backend, "relu_mask", None)
    if own is not None:
        return own(dy, y)
    return xp.where(y <= 0, xp.zeros_like(dy), dy)


def _running_wide(xp, x, running):
    """The running statistics read in eval mode, in the wide dtype of x's device."""
    wide = arrays.wide_dtype(xp, arrays.device(x))
    return tuple(_wide(xp, v, wide) for v in running)


def _batch_moments(backend, xp, x3, eps, sync, meta):
    if sync is None:
        count, mean, m2 = backend.batch_stats(x3)
    else:
        count, mean, m2 = sync.batch_stats(backend, xp, x3, meta)
    return count, mean, m2, 1.0 / xp.sqrt(m2 / count + eps)


def _meta(x, axis, training, eps, running, residual=None, activation=None, **training_options):
    """What the ranks of a synchronized forward must agree on (besides channels and
    dtype): the options of the training step only in training, where they matter, the
    epilogue, and the running statistics (through a fingerprint; None when not given),
    since replicas holding different ones have diverged."""
    meta = {"channel axis": axis, "dimensions": len(x.shape), "training": training,
            "eps": eps, "residual": residual is not None, "activation": activation,
            "running statistics (fingerprint)":
                None if running[0] is None else digest(*running)}
    if training:
        meta.update(training_options)
    return meta


def _backward_meta(x, saved):
    """What the ranks of a synchronized backward must agree on: the same forward call
    (its global count and statistics, through a fingerprint)."""
    return {"channel axis": saved.axis, "dimensions": len(x.shape), "training": saved.training,
            "global count": saved.count,
            "forward call (fingerprint of saved.mean, saved.invstd)": digest(saved.mean, saved.invstd)}


def _saved_extra(sync, count, residual, activation):
    """The saved fields that make the backward synchronized too, and its epilogue's."""
    extra = {} if sync is None else {"comm": sync.comm, "count": count}
    return dict(extra, activation=activation, residual=residual is not None)


def batch_norm(backend, x, gamma, beta, running_mean, running_var, *, training, momentum,
               eps, axis, convention, residual=None, activation=None, sync=None):
    xp = array_namespace(backend, x)
    x3 = canonical_view(xp, x, axis)
    meta = None if sync is None else _meta(x, axis, training, eps, (running_mean, running_var),
                                           residual, activation, momentum=momentum,
                                           convention=convention)
    count = None
    if training:
        count, mean, m2, invstd = _batch_moments(backend, xp, x3, eps, sync, meta)
    else:
        if sync is not None:
            sync.agree(x3, meta)
        mean, var = _running_wide(xp, x, (running_mean, running_var))
        invstd = 1.0 / xp.sqrt(var + eps)
    a, b = _forward_affine(xp, gamma, beta, mean, invstd)
    y = _mapped(backend, xp, x3, a, b, x, axis, residual, activation)
    if training and running_mean is not None:
        _blend(xp, running_mean, mean, momentum)
        _blend(xp, running_var, m2 / (count - 1 if convention == "pytorch" else count), momentum)
    return y, BatchNormSaved(mean, invstd, training, axis, tuple(x.shape),
                             **_saved_extra(sync, count, residual, activation))


def batch_renorm(backend, x, gamma, beta, running_mean, running_std, *, training, rmax, dmax,
                 momentum, eps, axis, residual=None, activation=None, sync=None):
    xp = array_namespace(backend, x)
    x3 = canonical_view(xp, x, axis)
    meta = None if sync is None else _meta(x, axis, training, eps, (running_mean, running_std),
                                           residual, activation, momentum=momentum, rmax=rmax,
                                           dmax=dmax)
    mu, sigma = _running_wide(xp, x, (running_mean, running_std))
    if not training:
        if sync is not None:
            sync.agree(x3, meta)
        a, b = _forward_affine(xp, gamma, beta, mu, 1.0 / sigma)
        y = _mapped(backend, xp, x3, a, b, x, axis, residual, activation)
        return y, BatchRenormSaved(mu, 1.0 / sigma, None, None, False, axis, tuple(x.shape),
                                   **_saved_extra(sync, None, residual, activation))
    count, mean, m2, invstd = _batch_moments(backend, xp, x3, eps, sync, meta)
    sigma_batch = xp.sqrt(m2 / count + eps)
    # r and d are constants for the gradient, taken from the running stats before the update
    r = xp.clip(sigma_batch / sigma, 1.0 / rmax, rmax)
    d = xp.clip((mean - mu) / sigma, -dmax, dmax)
    a, b = _forward_affine(xp, gamma, beta, mean, invstd, r, d)
    y = _mapped(backend, xp, x3, a, b, x, axis, residual, activation)
    _blend(xp, running_mean, mean, momentum)
    _blend(xp, running_std, sigma_batch, momentum)
    return y, BatchRenormSaved(mean, invstd, r, d, True, axis, tuple(x.shape),
                               **_saved_extra(sync, count, residual, activation))


def through_epilogue(backend, xp, dy, saved, y):
    """(dL/d(BN(x) + z), dz or None) from dy: dy masked by y after a relu, and dz, that
    masked dy (a copy of dy without an activation), after a forward with a residual."""
    if saved.activation is None:
        return dy, (xp.asarray(dy, copy=True) if saved.residual else None)
    masked = relu_mask(backend, xp, dy, y)
    return masked, (masked if saved.residual else None)


def _backward(backend, dy, x, gamma, saved, sync, r=None, d=None, y=None):
    xp = array_namespace(backend, x)
    if _with_epilogue(backend) and saved.activation is not None and saved.training \
            and not saved.residual:
        dz, mask = None, y   # the kernels mask dy with y as they read it
    else:
        (dy, dz), mask = through_epilogue(backend, xp, dy, saved, y), None
    x3, dy3 = canonical_view(xp, x, saved.axis), canonical_view(xp, dy, saved.axis)
    masked = {} if mask is None else {"y": canonical_view(xp, mask, saved.axis)}
    mean, invstd = saved.mean, saved.invstd
    if sync is None:
        sum_dy, sum_dy_xmu = backend.grad_stats(dy3, x3, mean, **masked)
    else:
        sum_dy, sum_dy_xmu = sync.grad_stats(backend, xp, dy3, x3, mean, _backward_meta(x, saved),
                                             **masked)
    scale = invstd if r is None else r * invstd
    dgamma = scale * sum_dy_xmu if d is None else scale * sum_dy_xmu + d * sum_dy
    p = scale if gamma is None else _wide(xp, gamma, scale.dtype) * scale
    if saved.training:
        m = x3.shape[0] * x3.shape[2] if sync is None else saved.count
        # -invstd (invstd S1 / m) is of the size of dy / sigma: invstd^3 alone underflows at
        # sigma = 1e104
        q = p * -(invstd * (invstd * sum_dy_xmu / m))
        s = -p * sum_dy / m - q * mean
        dx3 = _elementwise(xp, lambda *args: backend.grad_input(*args, **masked), dy3, x3, p, q, s)
    else:
        # dx = p dy, an affine map of dy: without the term q x, which is NaN (0 * inf)
        # where x is infinite, while dx is finite there
        dx3 = _elementwise(xp, backend.scale_shift, dy3, p, xp.zeros_like(p))
    dx = xp.reshape(dx3, x.shape)
    grad = halves.grad_dtype(x.dtype, gamma, xp.float32)
    grads = dx, halves.cast(xp, dgamma, grad), halves.cast(xp, sum_dy, grad)
    return grads if dz is None else grads + (dz,)


def batch_norm_backward(backend, dy, x, saved, gamma, y=None, sync=None):
    return _backward(backend, dy, x, gamma, saved, sync, y=y)


def batch_renorm_backward(backend, dy, x, saved, gamma, y=None, sync=None):
    return _backward(backend, dy, x, gamma, saved, sync, saved.r, saved.d, y=y)
