"""Fold an eval-mode BN/BRN layer into the linear or conv layer before it: with
bn(z) = scale * z + shift per output channel and z = W x + b, the folded layer has
W' = scale * W (along W's output axis) and b' = scale * b + shift."""
import numpy as np

from . import _validation as check
from .layers import is_layer


def _fold(W, b, bn, out_axis, min_ndim, max_ndim, kind):
    if not is_layer(bn):
        raise TypeError(f"bn must be a BatchNorm or BatchRenorm layer, got {type(bn).__name__}")
    W = np.asarray(W)
    if not np.issubdtype(W.dtype, np.floating):
        raise TypeError(f"W must be a floating-point array, got dtype {W.dtype}")
    if not min_ndim <= W.ndim <= max_ndim:
        raise ValueError(f"{kind} weights W must have {min_ndim}"
                         f"{' or more' if max_ndim > min_ndim else ''} dimensions, got shape {W.shape}")
    out_axis = check.channel_axis(out_axis, W.ndim, "out_axis")
    if W.shape[out_axis] != bn.num_features:
        raise ValueError(f"W has {W.shape[out_axis]} outputs on axis {out_axis} but {bn!r} "
                         f"normalizes {bn.num_features} channels")
    if b is not None:
        b = np.asarray(b)
        if not (np.issubdtype(b.dtype, np.floating) or np.issubdtype(b.dtype, np.integer)):
            raise TypeError(f"b must hold real numbers, got dtype {b.dtype}")
        if b.shape != (bn.num_features,):
            raise ValueError(f"b must have shape ({bn.num_features},), got {b.shape}")
    scale, shift = bn.eval_affine()
    along = [1] * W.ndim
    along[out_axis] = bn.num_features
    W_folded = (W.astype(np.float64) * scale.reshape(along)).astype(W.dtype)
    b_folded = shift if b is None else scale * b.astype(np.float64) + shift
    return W_folded, b_folded.astype(W.dtype)


def fold_into_linear(W, b, bn, *, out_axis=0):
    """``(W', b')`` of a linear layer followed by ``bn`` in eval mode, as one linear layer.

    ``W``: 2-D weights; ``out_axis`` is the axis of W that indexes the outputs (the
    channels bn normalizes): 0 for PyTorch's (out, in) with y = x @ W.T + b, 1 for
    y = x @ W + b with W (in, out). ``b``: (out,) or None (no bias). Computed in float64,
    returned in W's dtype; W and b are not modified.
    """
    return _fold(W, b, bn, out_axis, 2, 2, "linear")


def fold_into_conv(W, b, bn, *, out_axis=0):
    """``(W', b')`` of a convolution followed by ``bn`` in eval mode, as one convolution.

    ``W``: (out, in/groups, *kernel) weights (PyTorch's layout, ``out_axis=0``); pass the
    axis of the output channels for other layouts (1 for the (in, out, *kernel) weights of
    a transposed convolution without groups; grouped ones are not supported). ``b``: (out,) or None. As fold_into_linear otherwise.
    """
    return _fold(W, b, bn, out_axis, 3, 32, "convolution")
