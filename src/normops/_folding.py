"""Fold an eval-mode BN/BRN layer into the linear or conv layer before it: with
bn(z) = scale * z + shift per output channel and z = W x + b, the folded layer has
W' = scale * W (along W's output axis) and b' = scale * b + shift."""
import numpy as np

from . import _arrays as arrays
from . import _validation as check
from .layers import is_layer


def _fold(W, b, bn, out_axis, min_ndim, max_ndim, kind):
    if not is_layer(bn):
        raise TypeError(f"bn must be a BatchNorm or BatchRenorm layer, got {type(bn).__name__}")
    xp = bn.xp
    if xp is np:
        W = np.asarray(W)
        if not np.issubdtype(W.dtype, np.floating):
            raise TypeError(f"W must be a floating-point array, got dtype {W.dtype}")
    else:
        W = _layer_array(bn, W, "W")
        if not xp.isdtype(W.dtype, "real floating"):
            raise TypeError(f"W must be a floating-point array, got dtype {arrays.dtype_name(W.dtype)}")
    if not min_ndim <= W.ndim <= max_ndim:
        raise ValueError(f"{kind} weights W must have {min_ndim}"
                         f"{' or more' if max_ndim > min_ndim else ''} dimensions, got shape {tuple(W.shape)}")
    out_axis = check.channel_axis(out_axis, W.ndim, "out_axis")
    if W.shape[out_axis] != bn.num_features:
        raise ValueError(f"W has {W.shape[out_axis]} outputs on axis {out_axis} but {bn!r} "
                         f"normalizes {bn.num_features} channels")
    if b is not None:
        if xp is np:
            b = np.asarray(b)
            real = np.issubdtype(b.dtype, np.floating) or np.issubdtype(b.dtype, np.integer)
        else:
            b = _layer_array(bn, b, "b")
            real = xp.isdtype(b.dtype, ("real floating", "integral"))
        if not real:
            raise TypeError(f"b must hold real numbers, got dtype {arrays.dtype_name(b.dtype)}")
        if tuple(b.shape) != (bn.num_features,):
            raise ValueError(f"b must have shape ({bn.num_features},), got {tuple(b.shape)}")
    scale, shift = bn.eval_affine()
    wide = scale.dtype
    along = [1] * W.ndim
    along[out_axis] = bn.num_features
    W_folded = arrays.astype(xp, arrays.astype(xp, W, wide) * xp.reshape(scale, tuple(along)), W.dtype)
    b_folded = shift if b is None else scale * arrays.astype(xp, b, wide) + shift
    return W_folded, arrays.astype(xp, b_folded, W.dtype)


def _layer_array(bn, value, name):
    """W or b of a non-NumPy layer's folding: an array of its library on its device."""
    xp = bn.xp
    if not arrays.is_array(xp, value):
        raise TypeError(f"{name} must be a {check.library(xp)} array, as {bn!r} holds its "
                        f"parameters in {check.library(xp)}, got {type(value).__module__}."
                        f"{type(value).__qualname__}")
    if arrays.device(value) != bn.device:
        raise ValueError(f"{name} is on device {arrays.device(value)} but {bn!r} is on "
                         f"device {bn.device}; move {name} there")
    return value


def fold_into_linear(W, b, bn, *, out_axis=0):
    """``(W', b')`` of a linear layer followed by ``bn`` in eval mode, as one linear layer.

    ``W``: 2-D weights; ``out_axis`` is the axis of W that indexes the outputs (the
    channels bn normalizes): 0 for PyTorch's (out, in) with y = x @ W.T + b, 1 for
    y = x @ W + b with W (in, out). ``b``: (out,) or None (no bias). Computed in float64,
    returned in W's dtype; W and b are not modified. For a layer of another array
    library than NumPy, W and b are arrays of that library on the layer's device, and so
    are the results.
    """
    return _fold(W, b, bn, out_axis, 2, 2, "linear")


def fold_into_conv(W, b, bn, *, out_axis=0):
    """``(W', b')`` of a convolution followed by ``bn`` in eval mode, as one convolution.

    ``W``: (out, in/groups, *kernel) weights (PyTorch's layout, ``out_axis=0``); pass the
    axis of the output channels for other layouts (1 for the (in, out, *kernel) weights of
    a transposed convolution without groups; grouped ones are not supported). ``b``: (out,) or None. As fold_into_linear otherwise.
    """
    return _fold(W, b, bn, out_axis, 3, 32, "convolution")
