"""Extreme but finite scales: wherever the exact result is representable in the dtype,
both backends are within 1e-5 (float32) / 1e-9 (float64) of it, on every layout; a
constant channel gives exactly beta at any magnitude; non-finite statistics follow one
rule. The oracle computes in extended precision (np.longdouble: a 64-bit mantissa and
exponents to 1e4932, so none of these scales over- or underflows there), on each
channel's values less its first one (exact), so that a common offset costs it nothing."""
import numpy as np
import pytest

import normops
from normops import testing

BACKENDS = ("cpu", "reference")
TOL = {np.float32: 1e-5, np.float64: 1e-9}
LD = np.longdouble
# (shape, axis): NC, NCHW planes (the planes path), NCHW short planes (the rows path,
# 8 planes a row), channels-last, and a 5-D batch
LAYOUTS = [((64, 3), 1), ((4, 3, 6, 6), 1), ((16, 3, 2, 2), 1), ((4, 5, 5, 3), -1),
           ((2, 3, 2, 3, 4), 1)]

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def channel_view(a, axis):
    """a with the channel axis first and every other axis flattened: (C, m)."""
    return np.moveaxis(np.asarray(a), axis, 0).reshape(a.shape[axis], -1)


def exact_step(x, dy, gamma, beta, eps, axis):
    """y, dx, dgamma of a BN training step, in extended precision (per channel: (C, m))."""
    xs, dys = channel_view(x, axis).astype(LD), channel_view(dy, axis).astype(LD)
    xs = xs - xs[:, :1]   # y and the gradients depend on x - mean only
    g = np.ones(len(xs), LD) if gamma is None else gamma.astype(LD)
    b = np.zeros(len(xs), LD) if beta is None else beta.astype(LD)
    mean = xs.mean(axis=1, keepdims=True)
    var = ((xs - mean) ** 2).mean(axis=1, keepdims=True)
    invstd = 1 / np.sqrt(var + LD(eps))
    x_hat = (xs - mean) * invstd
    y = g[:, None] * x_hat + b[:, None]
    dgamma = (dys * x_hat).sum(axis=1)
    dx = g[:, None] * invstd * (dys - dys.mean(axis=1, keepdims=True)
                                - x_hat * (dys * x_hat).mean(axis=1, keepdims=True))
    return y, dx, dgamma


def assert_near(actual, exact, dtype, what):
    """Each channel's values within tol of the exact ones, relative to the channel's
    largest exact value (where the dtype can hold it)."""
    exact = np.asarray(exact, LD)
    size = np.abs(exact).max(axis=-1, keepdims=True)
    assert np.all(np.isfinite(actual)), f"{what}: not finite: {actual}"
    error = np.abs(np.asarray(actual, LD) - exact)
    assert np.all(error <= TOL[dtype] * size), (
        f"{what}: worst relative error {float((error / size).max()):.3g}")


def check_training_step(name, x, dy, gamma=None, beta=None, eps=1e-5, axis=1):
    dtype = x.dtype.type
    y, saved = normops.batch_norm(x, gamma, beta, eps=eps, axis=axis, backend=name)
    dx, dgamma, _ = normops.batch_norm_backward(dy, x, saved, gamma, backend=name)
    y_exact, dx_exact, dgamma_exact = exact_step(x, dy, gamma, beta, eps, axis % x.ndim)
    assert_near(channel_view(y, axis % x.ndim), y_exact, dtype, "y")
    assert_near(channel_view(dx, axis % x.ndim), dx_exact, dtype, "dx")
    assert_near(dgamma[:, None], dgamma_exact[:, None], dtype, "dgamma")


def values(shape, axis, spread, offset=0.0, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (offset + spread * rng.normal(size=shape)).astype(dtype), rng.normal(size=shape).astype(dtype)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape, axis", LAYOUTS)
@pytest.mark.parametrize("spread", [1e20, 1e25, 1e30, 1e-20, 1e-30])
def test_float32_gradient_at_extreme_spreads(name, shape, axis, spread):
    # at std 1e25 the gradient's q (gamma dy / sigma^2) underflowed float32: dx 3 % off
    x, dy = values(shape, axis, spread)
    check_training_step(name, x, dy, eps=1e-5 * spread ** 2, axis=axis)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape, axis", LAYOUTS)
@pytest.mark.parametrize("spread", [1e140, 1e-140])
def test_float64_gradient_at_extreme_spreads(name, shape, axis, spread):
    # invstd^3 underflows double past std 1e104, and q = gamma dy / sigma^2 with gamma
    # 1e38 overflows it at std 1e-140
    x, dy = values(shape, axis, spread, dtype=np.float64)
    gamma = np.full(x.shape[axis], 1e38)
    check_training_step(name, x, dy, gamma, eps=1e-5 * spread ** 2, axis=axis)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape, axis", LAYOUTS)
@pytest.mark.parametrize("dtype, value", [(np.float64, 1.34e154), (np.float64, 1e300),
                                          (np.float64, -1.7e308), (np.float32, 3.4e38),
                                          (np.float64, 1e307), (np.float32, 1e-40)])
def test_constant_channel_gives_exactly_beta_at_any_magnitude(name, shape, axis, dtype, value):
    x = np.full(shape, value, dtype)
    beta = np.linspace(-1.0, 1.0, shape[axis]).astype(dtype)
    gamma = np.full(shape[axis], 3.0, dtype)
    y, saved = normops.batch_norm(x, gamma, beta, axis=axis, backend=name)
    np.testing.assert_array_equal(channel_view(y, axis % x.ndim),
                                  np.broadcast_to(beta[:, None], channel_view(y, axis % x.ndim).shape))
    np.testing.assert_array_equal(saved.mean, np.full(shape[axis], float(dtype(value))))
    dx, dgamma, dbeta = normops.batch_norm_backward(np.ones_like(x), x, saved, gamma, backend=name)
    # x_hat = 0 and dy is constant: dx = gamma invstd (dy - mean(dy)) = 0
    np.testing.assert_array_equal(dx, np.zeros_like(dx))
    np.testing.assert_array_equal(dgamma, np.zeros_like(dgamma))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape, axis", LAYOUTS + [((4096, 2), 1), ((512, 8, 2), -1)])
@pytest.mark.parametrize("offset", [1e8, 1e12])
def test_float64_variance_survives_an_offset_on_every_layout(name, shape, axis, offset):
    x, _ = values(shape, axis, 1.0, offset, np.float64, seed=1)
    _, saved = normops.batch_norm(x, axis=axis, backend=name)
    xs = channel_view(x, axis % x.ndim)
    dev = (xs - xs[:, :1]).astype(LD)   # exact: values within a factor 2 of each other
    var = ((dev - dev.mean(axis=1, keepdims=True)) ** 2).mean(axis=1)
    got = 1 / np.asarray(saved.invstd, LD) ** 2 - LD(1e-5)
    assert np.all(np.abs(got - var) <= 1e-12 * var), (got - var) / var


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape, axis", LAYOUTS)
@pytest.mark.parametrize("offset", [1e8, 1e12])
def test_float64_outputs_at_an_offset_on_every_layout(name, shape, axis, offset):
    # the batch mean rounded to one double is offset * 2^-53 off: y was 2e-5 and dx 5e-6
    # off at an offset of 1e12 spreads, before the mean was carried as hi + lo
    x, dy = values(shape, axis, 1.0, offset, np.float64, seed=6)
    gamma = np.linspace(0.5, 2.0, shape[axis])
    check_training_step(name, x, dy, gamma, np.full(shape[axis], 0.25), axis=axis)
    rm, rs = np.full(shape[axis], offset), np.ones(shape[axis])
    y, saved = normops.batch_renorm(x, gamma, None, rm, rs, rmax=1.0, dmax=0.0, axis=axis,
                                    backend=name)
    dx, dgamma, _ = normops.batch_renorm_backward(dy, x, saved, gamma, backend=name)
    y_exact, dx_exact, dgamma_exact = exact_step(x, dy, gamma, None, 1e-5, axis % x.ndim)
    assert_near(channel_view(y, axis % x.ndim), y_exact, np.float64, "BRN y")
    assert_near(channel_view(dx, axis % x.ndim), dx_exact, np.float64, "BRN dx")
    assert_near(dgamma[:, None], dgamma_exact[:, None], np.float64, "BRN dgamma")


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape, axis", LAYOUTS)
def test_float32_values_near_the_largest_float(name, shape, axis):
    # x - mean overflows float32 for [3.4e38, 3.4e38, -3.4e38]; y is about +-1
    rng = np.random.default_rng(2)
    x = (rng.choice([-1.0, 1.0], shape) * 3.4e38 * rng.uniform(0.9, 1.0, shape)).astype(np.float32)
    dy = rng.normal(size=shape).astype(np.float32)
    check_training_step(name, x, dy, axis=axis)


@pytest.mark.parametrize("name", BACKENDS)
def test_float32_issue_channel_near_flt_max(name):
    x = np.array([3.4e38, 3.4e38, -3.4e38], np.float32).reshape(3, 1)
    y, _ = normops.batch_norm(x, backend=name)
    np.testing.assert_allclose(y.ravel(), [2 ** -0.5, 2 ** -0.5, -2 ** 0.5], rtol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape, axis", LAYOUTS)
def test_float32_coefficients_beyond_the_dtype(name, shape, axis):
    # gamma 1e37 over a spread of 0.01: a = gamma invstd = 1e39 overflows float32, y ~ 1e37
    x, dy = values(shape, axis, 0.01)
    gamma = np.full(shape[axis], 1e37, np.float32)
    beta = np.full(shape[axis], -1e37, np.float32)
    y, saved = normops.batch_norm(x, gamma, beta, eps=1e-12, axis=axis, backend=name)
    y_exact, _, _ = exact_step(x, dy, gamma, beta, 1e-12, axis % x.ndim)
    assert_near(channel_view(y, axis % x.ndim), y_exact, np.float32, "y")
    # denormal data with eps = 1e-80: invstd = 1e40 overflows float32, y ~ 1
    x = (np.random.default_rng(3).normal(size=shape) * 1e-40).astype(np.float32)
    check_training_step(name, x, dy * np.float32(1e-30), eps=1e-80, axis=axis)


@pytest.mark.parametrize("name", BACKENDS)
def test_float32_gamma_1e38_over_a_spread_of_001(name):
    x = np.array([[0.01, 0.0], [-0.01, 0.5]], np.float32)   # x_hat = +-1 (eps 1e-12)
    gamma = np.array([1e38, 1e38], np.float32)
    y, _ = normops.batch_norm(x, gamma, None, eps=1e-12, backend=name)
    np.testing.assert_allclose(y, [[1e38, -1e38], [-1e38, 1e38]], rtol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
def test_eval_with_zero_running_variance_and_tiny_eps(name):
    # invstd = 1e150: x equal to the running mean gives beta, any other x overflows, as
    # the exact gamma (x - mean) 1e150 + beta does
    x = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 0.5]], np.float32)
    beta = np.array([0.25, -0.5], np.float32)
    y, _ = normops.batch_norm(x, None, beta, np.ones(2, np.float32), np.zeros(2, np.float32),
                              training=False, eps=1e-300, backend=name)
    np.testing.assert_array_equal(y, [[0.25, -0.5], [0.25, np.inf], [0.25, -np.inf]])


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis", LAYOUTS)
def test_eval_gradient_does_not_depend_on_x(name, dtype, shape, axis):
    rng = np.random.default_rng(4)
    x = rng.normal(size=shape).astype(dtype)
    x[(0,) * x.ndim] = np.nan   # channel 0
    np.moveaxis(x, axis, 0)[1].flat[-1] = np.inf
    dy = rng.normal(size=shape).astype(dtype)
    gamma = rng.uniform(0.5, 2.0, shape[axis]).astype(dtype)
    running_var = rng.uniform(0.5, 2.0, shape[axis]).astype(dtype)
    _, saved = normops.batch_norm(x, gamma, None, np.zeros(shape[axis], dtype), running_var,
                                  training=False, axis=axis, backend=name)
    dx, dgamma, dbeta = normops.batch_norm_backward(dy, x, saved, gamma, backend=name)
    invstd = 1 / np.sqrt(running_var.astype(np.float64) + 1e-5)
    expected = channel_view(dy, axis % x.ndim) * (gamma * invstd)[:, None]
    np.testing.assert_allclose(channel_view(dx, axis % x.ndim), expected, rtol=TOL[dtype])
    assert np.isnan(dgamma[0]) and np.isinf(dgamma[1]) and np.isfinite(dgamma[2:]).all()
    assert np.isfinite(dbeta).all()
    _, saved = normops.batch_renorm(x, gamma, None, np.zeros(shape[axis], dtype), running_var,
                                    training=False, axis=axis, backend=name)
    dx, _, _ = normops.batch_renorm_backward(dy, x, saved, gamma, backend=name)
    assert np.isfinite(dx).all()


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("shape, axis", LAYOUTS)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan, "both"])
def test_non_finite_channel_gets_nan_statistics(name, shape, axis, bad):
    rng = np.random.default_rng(5)
    x = rng.normal(size=shape)
    channel = np.moveaxis(x, axis, 0)[1]   # a view of channel 1's values
    if bad == "both":
        channel.flat[0], channel.flat[-1] = np.inf, -np.inf
    else:
        channel.flat[1] = bad
    channels = shape[axis]
    rm, rs = np.zeros(channels), np.ones(channels)
    y, saved = normops.batch_renorm(x, None, None, rm, rs, axis=axis, backend=name)
    for field in ("mean", "invstd", "r", "d"):
        got = getattr(saved, field)
        assert np.isnan(got[1]), (field, got)
        assert np.isfinite(np.delete(got, 1)).all(), (field, got)
    assert np.isnan(rm[1]) and np.isnan(rs[1]) and np.isfinite(np.delete(rm, 1)).all()
    assert np.isnan(np.moveaxis(y, axis, 0)[1]).all()
    assert np.isfinite(np.delete(channel_view(y, axis % x.ndim), 1, axis=0)).all()
    rm, rv = np.zeros(channels), np.ones(channels)
    _, saved = normops.batch_norm(x, None, None, rm, rv, axis=axis, backend=name)
    assert np.isnan(saved.mean[1]) and np.isnan(saved.invstd[1]) and np.isnan(rv[1])


@pytest.mark.parametrize("name", BACKENDS)
def test_extreme_scales_regime_of_the_kit(name):
    report = testing.run(testing.backend_implementation(name), regimes=testing.EXTREME_REGIMES)
    assert report.passed, str(report)
