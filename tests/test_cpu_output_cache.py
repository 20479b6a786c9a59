"""The cpu backend's cache of large output buffers: an output of 4 MiB or more reuses the
memory of an earlier one only once that array and every view of it are gone; the cache
keeps at most its limit of idle memory."""
import numpy as np
import pytest

import normops
from normops._backends import _buffers
from normops._backends.cpu import POOLED_BYTES

ROWS, CHANNELS = POOLED_BYTES // (4 * 512), 512   # one float32 output of exactly POOLED_BYTES


@pytest.fixture
def cache():
    """A clean cache with the default limit, restored afterwards."""
    limit = _buffers.idle_limit_bytes()
    _buffers.set_idle_limit(0)
    _buffers.set_idle_limit(limit)
    yield
    _buffers.set_idle_limit(0)
    _buffers.set_idle_limit(limit)


def data(seed):
    x = np.random.default_rng(seed).normal(size=(ROWS, CHANNELS)).astype(np.float32)
    return x * (seed + 1) + seed


def expected(x):
    mean, var = x.mean(axis=0, dtype=np.float64), x.var(axis=0, dtype=np.float64)
    return (x - mean) / np.sqrt(var + 1e-5)


def test_a_freed_output_is_reused_for_the_next_one(cache):
    y, saved = normops.batch_norm(data(0))
    address = y.ctypes.data
    del y, saved
    assert _buffers.idle_bytes_now() == POOLED_BYTES
    x = data(1)
    y, _ = normops.batch_norm(x)
    assert y.ctypes.data == address and _buffers.idle_bytes_now() == 0
    np.testing.assert_allclose(y, expected(x), rtol=1e-4, atol=1e-4)


def test_a_live_output_or_view_is_never_reused(cache):
    x0, x1 = data(0), data(1)
    y0, _ = normops.batch_norm(x0)
    rows = y0[::3]              # a view keeps the memory alive after y0 is gone
    want = expected(x0)[::3]
    del y0, _
    y1, _ = normops.batch_norm(x1)
    dx, _, _ = normops.batch_norm_backward(x1, x1, normops.batch_norm(x1)[1])
    assert len({rows.ctypes.data, y1.ctypes.data, dx.ctypes.data}) == 3
    np.testing.assert_allclose(rows, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y1, expected(x1), rtol=1e-4, atol=1e-4)


def test_the_limit_bounds_the_idle_memory(cache):
    normops.set_output_cache(POOLED_BYTES)
    outputs = [normops.batch_norm(data(i))[0] for i in range(3)]
    del outputs
    assert _buffers.idle_bytes_now() == POOLED_BYTES
    normops.set_output_cache(0)
    assert _buffers.idle_bytes_now() == 0
    y, _ = normops.batch_norm(data(3))
    del y, _
    assert _buffers.idle_bytes_now() == 0
    assert "output cache: 0 MiB idle, limit 0 MiB" in "\n".join(
        f"{k}: {v}" for k, v in normops._config.config().items())


def test_small_outputs_are_plain_numpy_arrays():
    y, _ = normops.batch_norm(np.ones((4, 3), np.float32) * np.arange(4, dtype=np.float32)[:, None])
    assert y.base is None or isinstance(y.base, np.ndarray) and y.base.base is None


@pytest.mark.parametrize("bad,error", [(-1, ValueError), (True, TypeError), (1.5, TypeError),
                                       ("256", TypeError)])
def test_set_output_cache_refuses_bad_limits(bad, error):
    with pytest.raises(error):
        normops.set_output_cache(bad)
