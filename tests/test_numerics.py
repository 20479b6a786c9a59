"""What every backend's statistics must survive: a large common offset (no
E[x^2] - E[x]^2 in working precision), float32 data accumulated in double, constant
channels; and NaN or inf, which propagate to their channel without an exception."""
import numpy as np
import pytest

import normops
from normops.testing import assert_close


def two_pass(x, axes):
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    return mean.squeeze(axes), ((x - mean) ** 2).mean(axis=axes)


@pytest.mark.parametrize("offset", [1e4, 1e6, 1e8])
def test_variance_survives_a_large_common_offset(backend, offset):
    x = offset + np.random.default_rng(0).normal(size=(256, 3, 8))
    mean, var = two_pass(x, (0, 2))
    m = x.size // 3
    rm, rv = np.zeros(3), np.ones(3)
    y, saved = normops.batch_norm(x, None, None, rm, rv, momentum=1.0, backend=backend)
    np.testing.assert_allclose(1 / saved.invstd ** 2 - 1e-5, var, rtol=1e-6)
    np.testing.assert_allclose(rv, var * m / (m - 1), rtol=1e-6)
    np.testing.assert_allclose(rm, mean, rtol=1e-12)
    # y = a*x + b at an offset of 1e8 keeps about 1e-8 absolute
    np.testing.assert_allclose(y.var(axis=(0, 2)), var / (var + 1e-5), rtol=1e-6)


def test_float32_statistics_are_accumulated_in_double(backend):
    # 65536 values near 1000 per channel: float32 accumulation loses ~1e-4 of the mean
    x = (1000 + np.random.default_rng(1).normal(size=(65536, 2))).astype(np.float32)
    mean, var = two_pass(x, (0,))
    _, saved = normops.batch_norm(x, backend=backend)
    assert np.all(np.abs(saved.mean - mean) <= 1e-9 * np.sqrt(var)), saved.mean - mean
    np.testing.assert_allclose(1 / saved.invstd ** 2 - 1e-5, var, rtol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [7.25, 1e4 + 0.1, -3.3e-3])
def test_constant_channel_normalizes_to_beta(backend, dtype, value):
    x = np.full((5, 2, 3), value, dtype)
    x[:, 1] = np.arange(15.0).reshape(5, 3)
    gamma, beta = np.array([2.0, 3.0], dtype), np.array([0.5, -1.0], dtype)
    y, saved = normops.batch_norm(x, gamma, beta, backend=backend)
    # y = gamma * invstd * (x - mean) + beta; the terms are gamma * invstd * |x| in size
    term = 2.0 * saved.invstd[0] * abs(value)
    assert_close(y[:, 0], np.full_like(y[:, 0], 0.5), dtype, scale=term, what="constant channel")
    dx, dgamma, dbeta = normops.batch_norm_backward(np.ones_like(x), x, saved, gamma,
                                                    backend=backend)
    assert np.all(np.isfinite(dx)) and np.isfinite(dgamma).all() and np.isfinite(dbeta).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_and_inf_propagate_to_their_channel(backend):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 5))
    x[1, 1, 2] = np.nan
    x[2, 2, 0] = np.inf
    rm, rv = np.zeros(3), np.ones(3)
    y, _ = normops.batch_norm(x, None, None, rm, rv, backend=backend)
    assert np.all(np.isfinite(y[:, 0]))
    assert np.all(np.isnan(y[:, 1])) and np.all(np.isnan(y[:, 2]))
    assert np.isfinite(rm[0]) and np.isnan(rm[1]) and not np.isfinite(rm[2])
    y_eval, _ = normops.batch_norm(x, None, None, np.zeros(3), np.ones(3), training=False,
                                   backend=backend)
    assert np.isnan(y_eval[1, 1, 2]) and np.isinf(y_eval[2, 2, 0])
    assert np.isfinite(np.delete(y_eval.ravel(), [1 * 15 + 1 * 5 + 2, 2 * 15 + 2 * 5 + 0])).all()
