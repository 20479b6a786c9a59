"""fold_into_linear / fold_into_conv: the folded layer's output equals the linear or conv
layer followed by BN (or BRN) in eval mode."""
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import normops


def trained(layer, shape, rng, steps=5):
    """A layer with non-trivial parameters and running statistics."""
    for name, p in layer.params().items():
        p[...] = rng.uniform(0.5, 2.0, p.shape) if name == "gamma" else rng.normal(size=p.shape)
    for _ in range(steps):
        layer(rng.normal(1.5, 2.0, shape).astype(layer.dtype))
    return layer.eval()


def conv2d(x, W, b):
    """Valid cross-correlation, NCHW input, (out, in, kh, kw) weights (PyTorch's layout)."""
    windows = sliding_window_view(x, W.shape[2:], axis=(2, 3))     # (N, in, H', W', kh, kw)
    y = np.einsum("nihwkl,oikl->nohw", windows, W)
    return y if b is None else y + b[:, None, None]


LAYERS = [
    pytest.param(lambda c, dtype: normops.BatchNorm(c, dtype=dtype), id="bn"),
    pytest.param(lambda c, dtype: normops.BatchNorm(c, affine=False, dtype=dtype), id="bn-no-affine"),
    pytest.param(lambda c, dtype: normops.BatchNorm(c, center=False, eps=1e-3, dtype=dtype), id="bn-no-center"),
    pytest.param(lambda c, dtype: normops.BatchRenorm(c, momentum=0.3, dtype=dtype), id="brn"),
]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.mark.parametrize("make", LAYERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("out_axis", [0, 1])
def test_folded_linear_equals_linear_then_bn(make, dtype, with_bias, out_axis):
    rng = np.random.default_rng(0)
    n_in, n_out = 7, 5
    bn = trained(make(n_out, dtype), (16, n_out), rng)
    W = rng.normal(size=(n_out, n_in) if out_axis == 0 else (n_in, n_out)).astype(dtype)
    b = rng.normal(size=n_out).astype(dtype) if with_bias else None
    x = rng.normal(size=(9, n_in)).astype(dtype)

    def linear(W, b):
        y = x @ (W.T if out_axis == 0 else W)
        return y if b is None else y + b

    W_copy = W.copy()
    Wf, bf = normops.fold_into_linear(W, b, bn, out_axis=out_axis)
    assert Wf.dtype == dtype and bf.dtype == dtype and bf.shape == (n_out,)
    np.testing.assert_array_equal(W, W_copy)
    expected = bn(linear(W, b).astype(dtype))
    np.testing.assert_allclose(linear(Wf, bf), expected, rtol=TOL[dtype], atol=TOL[dtype] * 10)


@pytest.mark.parametrize("make", LAYERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_folded_conv_equals_conv_then_bn(make, dtype):
    rng = np.random.default_rng(1)
    bn = trained(make(6, dtype), (4, 6, 5, 5), rng)
    W = rng.normal(size=(6, 3, 3, 3)).astype(dtype)
    b = rng.normal(size=6).astype(dtype)
    x = rng.normal(size=(2, 3, 8, 7)).astype(dtype)
    Wf, bf = normops.fold_into_conv(W, b, bn)
    expected = bn(conv2d(x, W, b).astype(dtype))
    np.testing.assert_allclose(conv2d(x, Wf, bf), expected, rtol=TOL[dtype] * 5, atol=TOL[dtype] * 50)


def test_folded_conv_with_output_channels_on_axis_1():
    """(in, out, kh, kw): the layout of an ungrouped transposed convolution's weights."""
    rng = np.random.default_rng(3)
    bn = trained(normops.BatchNorm(4, dtype=np.float64), (4, 4, 3, 3), rng)
    W = rng.normal(size=(3, 4, 2, 2))
    Wf, bf = normops.fold_into_conv(W, None, bn, out_axis=1)
    x = rng.normal(size=(2, 3, 5, 5))
    as_out_in = (1, 0, 2, 3)
    expected = bn(conv2d(x, W.transpose(as_out_in), None))
    np.testing.assert_allclose(conv2d(x, Wf.transpose(as_out_in), bf), expected, rtol=1e-12, atol=1e-12)


def test_folding_is_independent_of_the_layer_mode():
    rng = np.random.default_rng(2)
    bn = trained(normops.BatchNorm(3), (8, 3), rng)
    W = rng.normal(size=(3, 4))
    folded_eval = normops.fold_into_linear(W, None, bn)
    folded_train = normops.fold_into_linear(W, None, bn.train())
    for a, b in zip(folded_eval, folded_train):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call, error, match", [
    (lambda bn: normops.fold_into_linear(np.ones((3, 4)), None, bn), ValueError, "W has 3 outputs"),
    (lambda bn: normops.fold_into_linear(np.ones((4, 3)), np.ones(3), bn), ValueError, r"b must have shape \(4,\)"),
    (lambda bn: normops.fold_into_linear(np.ones((4, 3, 1)), None, bn), ValueError, "linear weights W must have 2"),
    (lambda bn: normops.fold_into_conv(np.ones((4, 3)), None, bn), ValueError, "convolution weights W must have 3"),
    (lambda bn: normops.fold_into_linear(np.ones((4, 3), int), None, bn), TypeError, "floating-point"),
    (lambda bn: normops.fold_into_linear(np.ones((4, 3)), None, bn, out_axis=2), ValueError, "out_axis=2"),
    (lambda bn: normops.fold_into_linear(np.ones((4, 3)), None, bn, out_axis=0.0), TypeError, "out_axis must be an int"),
    (lambda bn: normops.fold_into_linear(np.ones((4, 3)), np.ones(4, complex), bn), TypeError, "b must hold real"),
    (lambda bn: normops.fold_into_linear(np.ones((4, 3)), None, "bn"), TypeError, "BatchNorm or BatchRenorm"),
    (lambda bn: normops.fold_into_linear(np.ones((4, 3)), None, normops.BatchNorm(4, track_running_stats=False)),
     ValueError, "tracks no running statistics"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(normops.BatchNorm(4))
