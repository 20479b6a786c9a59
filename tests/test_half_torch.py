"""float16 and bfloat16 BN against PyTorch CPU: torch.nn.functional.batch_norm and autograd
(NativeBatchNormBackward0, i.e. aten.native_batch_norm_backward) with half input and
float32 weight, bias and running statistics (PyTorch's mixed-precision rule), or all of
x's dtype. Compared: y, dx, dgamma, dbeta and the running statistics after the update, on
NC, NCHW and channels-last (a NHWC NumPy array with axis=-1 against the same memory seen
by torch as an NCHW tensor in channels_last format), training and eval, backends cpu and
reference. BRN has no PyTorch counterpart (test_half_exactness.py checks it).

Tolerances, relative to the size of the terms each output is made of (as the float32
cross-check, test_torch_crosscheck.py): normops rounds the exact result once, PyTorch
computes in float32 and rounds once to the output dtype, so for a half output the two
differ by at most two roundings, eps/2 of the value each (eps = ml_dtypes.finfo's, the
spacing at 1: 2^-7 bfloat16, 2^-10 float16), plus PyTorch's float32 error (~1e-6 of the
terms on these small shapes): |normops - torch| <= eps * terms + the smallest subnormal.
The value is at most its terms' size, which keeps the bound meaningful where terms cancel.
With weights of x's half dtype PyTorch also keeps the batch statistics it saves for the
backward (save_mean, save_invstd) in that dtype, so in training its y and dx carry two
more roundings of eps/2 (of the mean's and of invstd's part of the terms; measured: up to
1.1 eps of the terms from the exact result, where with float32 weights it stays within
0.5): there the bound is 2 eps of the terms.
Float32 outputs (dgamma, dbeta and running statistics of float32 weights) take 1e-5 of
the terms, the float32 cross-check's tolerance (PyTorch's float32 sums)."""
import numpy as np
import pytest

import normops
import half_inputs
from half_inputs import draw
from optional_torch import import_torch
from torch_arrays import to_numpy, to_torch

torch = import_torch("this cross-check")
import torch.nn.functional as F  # noqa: E402

ml_dtypes = pytest.importorskip("ml_dtypes")

F16, BF16, F32 = np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float32)
TORCH_DTYPE = {F16: torch.float16, BF16: torch.bfloat16, F32: torch.float32}
BACKENDS = ["cpu", "reference"]
MOMENTUM, EPS = 0.1, 1e-5

# (name, normops shape, channel axis, permutation taking the normops array to torch's NC...)
LAYOUTS = [
    ("NC", (64, 16), 1, (0, 1)),
    ("NCHW", (8, 6, 5, 7), 1, (0, 1, 2, 3)),
    ("NHWC", (8, 5, 7, 6), -1, (0, 3, 1, 2)),  # torch sees a channels_last NCHW tensor
]



def torch_step(a, perm, training):
    inverse = tuple(np.argsort(perm))
    x = to_torch(a["x"]).permute(*perm)
    if perm == (0, 3, 1, 2):
        assert x.is_contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = to_torch(a["gamma"]).clone().requires_grad_(True)
    bias = to_torch(a["beta"]).clone().requires_grad_(True)
    rm, rv = to_torch(a["running_mean"].copy()), to_torch(a["running_var"].copy())
    y = F.batch_norm(x, rm, rv, weight, bias, training=training, momentum=MOMENTUM, eps=EPS)
    assert type(y.grad_fn).__name__ == "NativeBatchNormBackward0"
    y.backward(to_torch(a["dy"]).permute(*perm))
    return dict(y=to_numpy(y.permute(*inverse)), dx=to_numpy(x.grad.permute(*inverse)),
                dgamma=to_numpy(weight.grad), dbeta=to_numpy(bias.grad),
                running_mean=to_numpy(rm), running_var=to_numpy(rv))


def normops_step(a, axis, training, backend):
    return half_inputs.run_bn(a, axis, training, backend, MOMENTUM, EPS)


def term_sizes(a, axis, training):
    """The size of the terms each output is made of, per element (float64)."""
    ax = axis % a["x"].ndim
    axes = tuple(i for i in range(a["x"].ndim) if i != ax)
    bshape = [1] * a["x"].ndim
    bshape[ax] = -1
    x, dy = a["x"].astype(np.float64), a["dy"].astype(np.float64)
    g, b = a["gamma"].astype(np.float64), a["beta"].astype(np.float64)
    rm, rv = a["running_mean"].astype(np.float64), a["running_var"].astype(np.float64)
    m = x.size // x.shape[ax]
    mu, var = (x.mean(axis=axes), x.var(axis=axes)) if training else (rm, rv)
    invstd = 1 / np.sqrt(var + EPS)
    k = np.abs(g * invstd).reshape(bshape)
    spread = np.abs(x) + np.abs(mu).reshape(bshape)
    xhat = (x - mu.reshape(bshape)) * invstd.reshape(bshape)
    sizes = dict(y=k * spread + np.abs(b).reshape(bshape),
                 dgamma=(np.abs(dy) * spread).sum(axis=axes) * invstd,
                 dbeta=np.abs(dy).sum(axis=axes))
    if training:
        mdy = np.abs(dy.mean(axis=axes)).reshape(bshape)
        mdyx = np.abs((dy * xhat).mean(axis=axes)).reshape(bshape)
        sizes["dx"] = k * (np.abs(dy) + mdy + mdyx * spread * invstd.reshape(bshape))
        sizes["running_mean"] = np.abs(rm) + np.abs(mu)
        sizes["running_var"] = rv + var * m / (m - 1)
    else:
        sizes["dx"] = k * np.abs(dy)
        sizes["running_mean"], sizes["running_var"] = np.abs(rm), rv
    return sizes


def tolerance(dtype, sizes, half_statistics=False):
    """|normops - torch| allowed; half_statistics: PyTorch rounded its batch mean and
    invstd to the half dtype first (half weights, training)."""
    fi = ml_dtypes.finfo(dtype)
    if dtype == F32:
        return 1e-5 * sizes + float(fi.smallest_subnormal)
    return (2 if half_statistics else 1) * float(fi.eps) * sizes + float(fi.smallest_subnormal)


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("dtype", [BF16, F16], ids=lambda d: d.name)
@pytest.mark.parametrize("params", ["float32", "half"], ids=lambda p: f"params-{p}")
@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout[0] for layout in LAYOUTS])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_half_batch_norm_matches_torch(be, dtype, params, layout, training):
    _, shape, axis, perm = layout
    pdtype = F32 if params == "float32" else dtype
    a = draw(shape, axis, dtype, pdtype)
    expected = torch_step(a, perm, training)
    actual = normops_step(a, axis, training, be)
    sizes = term_sizes(a, axis, training)
    for key, value in expected.items():
        want = dtype if key in ("y", "dx") else pdtype
        assert actual[key].dtype == want, key
        # PyTorch's own dtypes, compared by value: its weight gradients for half x with
        # float32 weights are float32 too
        assert value.dtype == want, key
        diff = np.abs(actual[key].astype(np.float64) - value.astype(np.float64))
        bound = tolerance(want, sizes[key], half_statistics=training and pdtype != F32)
        bad = ~(diff <= bound)
        assert not bad.any(), (
            f"{key} ({want.name}) differs from torch in {int(bad.sum())} of {bad.size}: worst "
            f"{float(np.max(diff / bound)):.2f} x the tolerance")


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("dtype", [BF16, F16], ids=lambda d: d.name)
def test_half_running_statistics_follow_torch_over_steps(be, dtype):
    """Twenty training steps with float32 running statistics (momentum 0.3): normops' and
    PyTorch's stay within float32 sums' error of each other, as the steps compound."""
    rm_t, rv_t = torch.zeros(4), torch.ones(4)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.normal(2.0, 3.0, (16, 4, 3, 3)).astype(dtype)
        F.batch_norm(to_torch(x), rm_t, rv_t, training=True, momentum=0.3)
        normops.batch_norm(x, None, None, rm, rv, momentum=0.3, backend=be)
    np.testing.assert_allclose(rm, rm_t.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rv, rv_t.numpy(), rtol=1e-5, atol=1e-5)
