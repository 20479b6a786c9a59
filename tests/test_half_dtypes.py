"""float16 and bfloat16 inputs: which per-channel dtypes go with which x (PyTorch's mixed
rule), the dtype of every output, and that every half output is the float64 result
rounded once (compared bit for bit with an independent float64 BN written here).

HALF_BACKENDS: the backends these run on. The cpu backend's C kernels take no halves
yet; once they do, add "cpu" here (every test below is written for any backend)."""
import numpy as np
import pytest

import normops
from normops._halves import round_to

ml_dtypes = pytest.importorskip("ml_dtypes")

# reference: the oracle; reference-kernels: the four-kernel composition (conftest);
# array-api: the array-API kernels on NumPy arrays (the lines CuPy and torch run)
HALF_BACKENDS = ["reference", "reference-kernels", "array-api"]

F16, BF16 = np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
# x dtype -> the dtypes each per-channel array may have
ALLOWED = {F32: [F32], F64: [F64], F16: [F16, F32], BF16: [BF16, F32]}
PAIRS = [(x, p) for x, ps in ALLOWED.items() for p in ps]
LAYOUTS = {"NC": ((12, 3), 1), "NCHW": ((4, 3, 2, 3), 1), "NHWC": ((4, 2, 3, 3), -1)}


def _data(shape, dtype, seed=0, scale=2.0, offset=1.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + offset).astype(dtype)


def _per_channel(dtype, C=3, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.random(C) + 0.5).astype(dtype), rng.standard_normal(C).astype(dtype),
            rng.standard_normal(C).astype(dtype) * 0.1, (rng.random(C) + 0.5).astype(dtype)]


def _ids(pairs):
    return [f"x{x.name}-p{p.name}" for x, p in pairs]


# -- refused combinations ------------------------------------------------------------

BAD = [  # (x dtype, argument, its dtype)
    (F16, "gamma", F64), (BF16, "gamma", F64), (BF16, "running_mean", F16),
    (F16, "running_var", BF16), (F16, "beta", F64), (F32, "gamma", F16), (F32, "beta", BF16),
    (F64, "running_mean", F32), (F32, "running_var", F64), (BF16, "beta", F16),
]


@pytest.mark.parametrize("be", HALF_BACKENDS)
@pytest.mark.parametrize("x_dtype, name, dtype", BAD, ids=[f"x{x.name}-{n}-{d.name}" for x, n, d in BAD])
def test_a_per_channel_dtype_that_does_not_go_with_x_is_refused(be, x_dtype, name, dtype):
    x = _data((6, 3), x_dtype)
    ok = ALLOWED[x_dtype][0]
    args = dict(zip(("gamma", "beta", "running_mean", "running_var"), _per_channel(ok)))
    args[name] = args[name].astype(dtype)
    wanted = f"float32 or {x_dtype.name}" if x_dtype.itemsize == 2 else x_dtype.name
    match = (rf"{name} has dtype {dtype.name} but x has dtype {x_dtype.name}; with {x_dtype.name} "
             rf"x, {name} must be {wanted} \(allowed: float32 x with float32, .*bfloat16 with "
             rf"bfloat16 or float32\)")
    for training in (True, False):
        with pytest.raises(TypeError, match=match):
            normops.batch_norm(x, **args, training=training, backend=be)
    brn = dict(args, running_std=args.pop("running_var"))
    name = "running_std" if name == "running_var" else name
    with pytest.raises(TypeError, match=f"{name} has dtype {dtype.name}"):
        normops.batch_renorm(x, **brn, backend=be)


@pytest.mark.parametrize("be", HALF_BACKENDS)
@pytest.mark.parametrize("x_dtype, p_dtype", PAIRS, ids=_ids(PAIRS))
def test_dy_must_have_x_dtype(be, x_dtype, p_dtype):
    x = _data((6, 3), x_dtype)
    g = _per_channel(p_dtype)[0]
    y, saved = normops.batch_norm(x, g, backend=be)
    for other in {F16, BF16, F32, F64} - {x_dtype}:
        with pytest.raises(TypeError, match=f"dy has dtype {other.name} but x has dtype {x_dtype.name}"):
            normops.batch_norm_backward(x.astype(other), x, saved, g, backend=be)
    wrong = F64 if x_dtype != F64 else F32
    with pytest.raises(TypeError, match=f"gamma has dtype {wrong.name} but x has dtype {x_dtype.name}"):
        normops.batch_norm_backward(x, x, saved, g.astype(wrong), backend=be)


def test_other_input_dtypes_are_refused_with_the_list():
    with pytest.raises(TypeError, match="x must have dtype float32, float64, float16 or bfloat16, got int16"):
        normops.batch_norm(np.ones((4, 3), np.int16), backend="reference")


# -- output dtypes -------------------------------------------------------------------

def _grad_dtype(x_dtype, gamma):
    if gamma is not None:
        return gamma.dtype
    return F32 if x_dtype.itemsize == 2 else x_dtype


@pytest.mark.parametrize("be", HALF_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("x_dtype, p_dtype", PAIRS, ids=_ids(PAIRS))
@pytest.mark.parametrize("op", ["bn", "brn"])
def test_output_dtypes(be, layout, x_dtype, p_dtype, op):
    shape, axis = LAYOUTS[layout]
    x, dy = _data(shape, x_dtype), _data(shape, x_dtype, seed=5)
    # mixed: the statistics may differ from gamma/beta (each array chooses for itself)
    stat_dtype = ([d for d in ALLOWED[x_dtype] if d != p_dtype] or [p_dtype])[0]
    for affine in (True, False):
        for training in (True, False):
            g, b, rm, rv = _per_channel(p_dtype)
            rm, rv = rm.astype(stat_dtype), rv.astype(stat_dtype)
            if not affine:
                g = b = None
            if op == "bn":
                y, saved = normops.batch_norm(x, g, b, rm, rv, training=training, axis=axis, backend=be)
                grads = normops.batch_norm_backward(dy, x, saved, g, backend=be)
            else:
                y, saved = normops.batch_renorm(x, g, b, rm, rv, training=training, axis=axis, backend=be)
                grads = normops.batch_renorm_backward(dy, x, saved, g, backend=be)
            dx, dgamma, dbeta = grads
            want = _grad_dtype(x_dtype, g)
            assert (y.dtype, dx.dtype, dgamma.dtype, dbeta.dtype) == (x_dtype, x_dtype, want, want)
            assert (rm.dtype, rv.dtype) == (stat_dtype, stat_dtype)
            assert saved.mean.dtype == saved.invstd.dtype == F64
            assert np.isfinite(y.astype(F64)).all() and np.isfinite(dx.astype(F64)).all()


@pytest.mark.parametrize("be", HALF_BACKENDS)
@pytest.mark.parametrize("x_dtype", [F16, BF16], ids=["float16", "bfloat16"])
def test_lists_become_float32_for_half_x(be, x_dtype):
    x = _data((6, 3), x_dtype)
    y, saved = normops.batch_norm(x, [1.0, 2.0, 0.5], [0.0, 0.1, 0.2], backend=be)
    _, dgamma, dbeta = normops.batch_norm_backward(x, x, saved, [1.0, 2.0, 0.5], backend=be)
    assert y.dtype == x_dtype and dgamma.dtype == dbeta.dtype == F32


# -- exactness: an independent float64 BN, rounded once ------------------------------

def _bits(a):
    """The bit patterns of a float array (so that -0 differs from 0, and NaN equals NaN)."""
    return a.view(np.uint16 if a.itemsize == 2 else np.uint32)


def _bn64(x, g, b, axis, eps=1e-5):
    """BN in float64 with NumPy's mean and var (plain data: no offsets to guard
    against): y, the batch mean and biased variance, and the backward for dy."""
    red = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    bc = [1] * x.ndim
    bc[axis] = -1
    mean, var = x.mean(axis=red), x.var(axis=red)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(bc)) * invstd.reshape(bc)
    return xhat, mean, var, invstd, red, bc


@pytest.mark.parametrize("be", HALF_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("x_dtype, p_dtype", PAIRS[2:], ids=_ids(PAIRS[2:]))
def test_bn_half_outputs_are_the_float64_result_rounded_once(be, layout, x_dtype, p_dtype):
    shape, axis = LAYOUTS[layout]
    x, dy = _data(shape, x_dtype), _data(shape, x_dtype, seed=7)
    g, b, rm, rv = _per_channel(p_dtype)
    rm0, rv0, m = rm.astype(F64), rv.astype(F64), x.size // 3
    y, saved = normops.batch_norm(x, g, b, rm, rv, momentum=0.3, axis=axis, backend=be)
    dx, dgamma, dbeta = normops.batch_norm_backward(dy, x, saved, g, backend=be)

    x64, dy64, g64, b64 = (a.astype(F64) for a in (x, dy, g, b))
    xhat, mean, var, invstd, red, bc = _bn64(x64, g64, b64, axis)
    y64 = g64.reshape(bc) * xhat + b64.reshape(bc)
    dbeta64 = dy64.sum(axis=red)
    dgamma64 = (dy64 * xhat).sum(axis=red)
    dx64 = (g64 * invstd).reshape(bc) * (dy64 - (dbeta64 / m).reshape(bc)
                                         - xhat * (dgamma64 / m).reshape(bc))
    expected = {"y": (y, round_to(y64, x_dtype)), "dx": (dx, round_to(dx64, x_dtype)),
                "dgamma": (dgamma, round_to(dgamma64, p_dtype)),
                "dbeta": (dbeta, round_to(dbeta64, p_dtype)),
                "running_mean": (rm, round_to(0.7 * rm0 + 0.3 * mean, p_dtype)),
                "running_var": (rv, round_to(0.7 * rv0 + 0.3 * var * m / (m - 1), p_dtype))}
    for name, (got, want) in expected.items():
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(_bits(got), _bits(want), err_msg=name)


@pytest.mark.parametrize("be", HALF_BACKENDS)
@pytest.mark.parametrize("x_dtype, p_dtype", PAIRS[2:], ids=_ids(PAIRS[2:]))
def test_brn_half_outputs_are_the_float64_result_rounded_once(be, x_dtype, p_dtype):
    shape, axis = LAYOUTS["NCHW"]
    x = _data(shape, x_dtype)
    g, b, mu, sigma = _per_channel(p_dtype)
    mu0, sigma0 = mu.astype(F64), sigma.astype(F64)
    y, _ = normops.batch_renorm(x, g, b, mu, sigma, rmax=1.5, dmax=0.5, momentum=0.25, backend=be)
    x64, g64, b64 = (a.astype(F64) for a in (x, g, b))
    xhat, mean, var, invstd, red, bc = _bn64(x64, g64, b64, axis)
    sigma_b = np.sqrt(var + 1e-5)
    r = np.clip(sigma_b / sigma0, 1 / 1.5, 1.5)
    d = np.clip((mean - mu0) / sigma0, -0.5, 0.5)
    y64 = g64.reshape(bc) * (xhat * r.reshape(bc) + d.reshape(bc)) + b64.reshape(bc)
    np.testing.assert_array_equal(_bits(y), _bits(round_to(y64, x_dtype)))
    for got, want in ((mu, 0.75 * mu0 + 0.25 * mean), (sigma, 0.75 * sigma0 + 0.25 * sigma_b)):
        np.testing.assert_array_equal(_bits(got), _bits(round_to(want, p_dtype)))


@pytest.mark.parametrize("be", HALF_BACKENDS)
def test_nan_and_inf_propagate_in_half(be):
    x = _data((6, 2), BF16)
    x[0, 0] = np.inf
    with np.errstate(invalid="ignore"):   # inf - inf, on purpose
        y, _ = normops.batch_norm(x, backend=be)
    assert np.isnan(y[:, 0].astype(F64)).all() and np.isfinite(y[:, 1].astype(F64)).all()


def test_composition_equals_the_reference_bit_for_bit():
    # the composition computes a x + b per channel, the reference gamma x_hat + beta: both
    # float64, rounded once to bfloat16, so they agree but for a float64 rounding at a tie
    x = _data((32, 4, 5), BF16, scale=30.0, offset=500.0)
    outs = []
    for be in HALF_BACKENDS:
        g, b = np.array([1.0, 0.5, 2.0, 3.0], F32), np.array([0.0, 1.0, -1.0, 2.0], BF16)
        outs.append(normops.batch_norm(x, g, b, backend=be)[0].view(np.uint16))
    for other in outs[1:]:
        np.testing.assert_array_equal(other, outs[0])


# -- ml_dtypes is optional ----------------------------------------------------------

def test_without_ml_dtypes_normops_runs_float16(tmp_path):
    import subprocess
    import sys
    code = ("import sys; sys.modules['ml_dtypes'] = None\n"
            "import numpy as np, normops\n"
            "from normops import _halves\n"
            "y, s = normops.batch_norm(np.ones((4, 2), np.float16), np.ones(2, np.float32), backend='reference')\n"
            "assert y.dtype == np.float16\n"
            "try:\n    _halves.bfloat16()\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'pip install "normops[bf16]"' in out.stdout
