"""Fold an eval-mode BN/BRN layer into the linear or conv layer before it: with
bn(z) = scale * z + shift per output channel and z = W x + b, the folded layer has
W' = scale * W (along W's output axis) and b' = scale * b + shift."""
from typing import Optional, TypeAlias, Union

import numpy as np

from . import _arrays as arrays
from . import _validation as check
from ._typing import Array, ArrayLike
from .layers import BatchNorm, BatchRenorm, is_layer

#: A layer that folds into the layer before it.
Layer: TypeAlias = Union[BatchNorm, BatchRenorm]


def _fold(W: ArrayLike, b: Optional[ArrayLike], bn: Layer, out_axis: int, min_ndim: int,
          max_ndim: int, kind: str) -> tuple[Array, Array]:
    """fold_into_linear and fold_into_conv, for W of ``min_ndim`` to ``max_ndim``
    dimensions (``kind``: what the messages call the layer)."""
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


def _layer_array(bn: Layer, value: object, name: str) -> Array:
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


def fold_into_linear(W: ArrayLike, b: Optional[ArrayLike], bn: Layer, *,
                     out_axis: int = 0) -> tuple[Array, Array]:
    """``(W', b')`` of a linear layer followed by ``bn`` in eval mode, as one linear layer.

    With bn(z) = scale * z + shift per output channel and z = W x + b, the folded layer
    has W' = scale * W (along W's output axis) and b' = scale * b + shift.

    Parameters
    ----------
    W : array_like
        The 2-D weights. For a layer of another array library than NumPy, an array of
        that library on the layer's device.
    b : array_like or None
        The bias, of shape (out,), or None (no bias); for a layer of another library,
        as W.
    bn : BatchNorm or BatchRenorm
        The layer after it, which folds in its eval-mode map (its running statistics,
        gamma and beta).
    out_axis : int, default 0
        The axis of W that indexes the outputs (the channels bn normalizes): 0 for
        PyTorch's (out, in) with y = x @ W.T + b, 1 for y = x @ W + b with W (in, out).

    Returns
    -------
    W_folded : Array
        The folded weights W', of W's shape and dtype.
    b_folded : Array
        The folded bias b', of shape (out,), in W's dtype (also without b: then it is
        bn's shift).

    Raises
    ------
    TypeError
        If ``bn`` is not a BatchNorm or BatchRenorm layer, W is not floating-point, b
        does not hold real numbers, ``out_axis`` is not an int, or (for a layer of
        another library than NumPy) W or b is not an array of the layer's library.
    ValueError
        If W has the wrong number of dimensions, ``out_axis`` is out of range, W's
        outputs are not bn's channels, b's shape is not (out,), W or b is on another
        device than the layer, or bn tracks no running statistics (in eval mode it
        normalizes with each batch's, which no fixed affine map matches).

    Notes
    -----
    Computed in float64 (float32 on a device without float64), returned in W's dtype;
    W and b are not modified. For a layer of another array library than NumPy, W and b
    are arrays of that library on the layer's device, and so are the results.
    """
    return _fold(W, b, bn, out_axis, 2, 2, "linear")


def fold_into_conv(W: ArrayLike, b: Optional[ArrayLike], bn: Layer, *,
                   out_axis: int = 0) -> tuple[Array, Array]:
    """``(W', b')`` of a convolution followed by ``bn`` in eval mode, as one convolution.

    Parameters
    ----------
    W : array_like
        The ``(out, in/groups, *kernel)`` weights (PyTorch's layout, ``out_axis=0``), 3-D
        or more. For a layer of another array library than NumPy, an array of that
        library on the layer's device.
    b : array_like or None
        The bias, of shape (out,), or None (no bias); for a layer of another library,
        as W.
    bn : BatchNorm or BatchRenorm
        The layer after it, which folds in its eval-mode map (its running statistics,
        gamma and beta).
    out_axis : int, default 0
        The axis of W that indexes the output channels: 0 for PyTorch's layout, 1 for
        the ``(in, out, *kernel)`` weights of a transposed convolution without groups
        (grouped ones are not supported).

    Returns
    -------
    W_folded : Array
        The folded weights W', of W's shape and dtype.
    b_folded : Array
        The folded bias b', of shape (out,), in W's dtype (also without b: then it is
        bn's shift).

    Raises
    ------
    TypeError
        If ``bn`` is not a BatchNorm or BatchRenorm layer, W is not floating-point, b
        does not hold real numbers, ``out_axis`` is not an int, or (for a layer of
        another library than NumPy) W or b is not an array of the layer's library.
    ValueError
        If W has the wrong number of dimensions, ``out_axis`` is out of range, W's
        outputs are not bn's channels, b's shape is not (out,), W or b is on another
        device than the layer, or bn tracks no running statistics (in eval mode it
        normalizes with each batch's, which no fixed affine map matches).

    Notes
    -----
    As fold_into_linear otherwise: computed in float64 (float32 on a device without
    float64), returned in W's dtype; W and b are not modified.
    """
    return _fold(W, b, bn, out_axis, 3, 32, "convolution")
