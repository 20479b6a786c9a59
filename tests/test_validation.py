"""Bad input gets a clear exception before any backend runs; good edge cases work."""
import numpy as np
import pytest

import normops
from memory import unaligned

C = 3


def arrays(shape=(4, C, 2), dtype=np.float64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(dtype)
    return x, np.ones(C, dtype), np.zeros(C, dtype), np.zeros(C, dtype), np.ones(C, dtype)


def bn(x, *args, **kwargs):
    return normops.batch_norm(x, *args, **kwargs)


@pytest.mark.parametrize("x, error, match", [
    (np.ones(4), ValueError, "at least 2 dimensions"),
    (np.float64(1.0), ValueError, "at least 2 dimensions"),
    (np.ones((0, 3)), ValueError, "empty"),
    (np.ones((4, 0)), ValueError, "empty"),
    (np.ones((4, 3), np.int64), TypeError, "float32, float64, float16 or bfloat16, got int64"),
    (np.ones((4, 3), np.uint16), TypeError, "float32, float64, float16 or bfloat16, got uint16"),
    (np.ones((4, 3), np.complex128), TypeError, "float32, float64, float16 or bfloat16, got complex128"),
    ([[1, 2], [3, 4]], TypeError, "float32, float64, float16 or bfloat16, got int64"),
])
def test_bad_x(x, error, match):
    with pytest.raises(error, match=match):
        bn(x)


@pytest.mark.parametrize("axis, error, match", [
    (2, ValueError, r"axis=2 is out of range .* 2 dimensions \(valid: -2 to 1\)"),
    (-3, ValueError, "axis=-3 is out of range"),
    (1.0, TypeError, "axis must be an int"),
    (True, TypeError, "axis must be an int"),
    (None, TypeError, "axis must be an int"),
])
def test_bad_axis(axis, error, match):
    with pytest.raises(error, match=match):
        bn(np.ones((4, 3)), axis=axis)


def test_per_channel_parameter_shapes_and_dtypes():
    x, g, b, rm, rv = arrays()
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\).*got shape \(4,\)"):
        bn(x, np.ones(4), b)
    with pytest.raises(ValueError, match=r"beta must have shape \(3,\) \(one value per channel\), got shape \(1, 3\)"):
        bn(x, g, np.zeros((1, 3)))
    with pytest.raises(TypeError, match=r"gamma has dtype float32 but x has dtype float64; with float64 x, gamma must be float64 \(allowed: "):
        bn(x, g.astype(np.float32), b)
    with pytest.raises(ValueError, match=r"running_var must have shape \(3,\)"):
        bn(x, g, b, rm, np.ones(2))
    with pytest.raises(TypeError, match="running_mean has dtype float32 but x has dtype float64"):
        bn(x, g, b, rm.astype(np.float32), rv)
    with pytest.raises(TypeError, match="running_mean has dtype float64 but x has dtype float32"):
        bn(x.astype(np.float32), g.astype(np.float32), b.astype(np.float32), rm, rv.astype(np.float32))


def test_running_stats_are_checked_for_in_place_updates():
    x, g, b, rm, rv = arrays()
    rm.flags.writeable = False
    with pytest.raises(ValueError, match="running_mean is read-only"):
        bn(x, g, b, rm, rv)
    # eval mode only reads them: read-only running stats are fine there
    y, _ = bn(x, g, b, rm, rv, training=False)
    assert y.shape == x.shape
    odd = unaligned(rv)
    y_odd, _ = bn(x, g, b, rm, odd, training=False)   # only read: fine
    assert np.array_equal(y_odd, bn(x, g, b, rm, rv, training=False)[0])
    # written: updated in an aligned copy, which is written back into it
    expected = rv.copy()
    bn(x, g, b, np.zeros(C), expected)
    bn(x, g, b, np.zeros(C), odd)
    assert not odd.flags.aligned and np.array_equal(odd, expected)
    with pytest.raises(ValueError, match="running_var steps 0 bytes between its 8-byte values"):
        bn(x, g, b, np.zeros(C), np.lib.stride_tricks.as_strided(np.ones(1), (C,), (0,)))
    with pytest.raises(TypeError, match=r"running_var must be a numpy.ndarray \(it is updated in place\), got list"):
        bn(x, g, b, np.zeros(C), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="running_mean and running_var must be given together"):
        bn(x, g, b, np.zeros(C), None)
    shared = np.zeros(C)
    with pytest.raises(ValueError, match="running_mean shares memory with running_var"):
        bn(x, g, b, shared, shared)
    # interleaved views of one buffer share no element: allowed, and updated in place
    buf = np.zeros(2 * C)
    buf[1::2] = 1.0
    bn(x, g, b, buf[0::2], buf[1::2], momentum=1.0)
    mean = x.mean(axis=(0, 2))
    np.testing.assert_allclose(buf[0::2], mean, rtol=1e-12)
    np.testing.assert_allclose(buf[1::2], x.var(axis=(0, 2), ddof=1), rtol=1e-12)
    x2 = np.random.default_rng(1).normal(size=(4, C))
    with pytest.raises(ValueError, match="running_mean shares memory with x"):
        bn(x2, None, None, x2[0], np.ones(C))
    with pytest.raises(ValueError, match="running_var shares memory with x"):
        bn(x2, None, None, np.zeros(C), x2[1])
    with pytest.raises(ValueError, match="running_var shares memory with gamma"):
        bn(x2, g, None, np.zeros(C), g)
    # the backend gets copies of a byte-swapped x and running statistic; the caller's
    # arrays still share memory, and the update written back would change x
    swapped = x2.astype(">f8")
    with pytest.raises(ValueError, match="running_mean shares memory with x"):
        bn(swapped, None, None, swapped[0], np.ones(C, ">f8"))


def test_eval_needs_running_stats():
    x = arrays()[0]
    with pytest.raises(ValueError, match="training=False normalizes with the running statistics"):
        bn(x, training=False)


@pytest.mark.parametrize("shape, axis", [((1, 3), 1), ((1, 3, 1, 1), 1), ((5, 1), 0), ((1, 1, 4), -1)])
def test_one_value_per_channel_is_refused_in_training(shape, axis):
    x = np.ones(shape)
    channels = shape[axis]
    with pytest.raises(ValueError, match="expected more than 1 value per channel when training"):
        bn(x, axis=axis)
    with pytest.raises(ValueError, match="expected more than 1 value per channel when training"):
        normops.batch_renorm(x, None, None, np.zeros(channels), np.ones(channels), axis=axis)
    # eval mode normalizes single values with the running statistics
    y, _ = bn(x + 1, None, None, np.full(channels, 2.0), np.ones(channels), training=False, axis=axis)
    np.testing.assert_array_equal(y, 0.0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(momentum=1.5), ValueError, r"momentum must be in \[0.0, 1.0\], got 1.5"),
    (dict(momentum=-0.1), ValueError, "momentum must be in"),
    (dict(momentum=float("nan")), ValueError, "momentum must be in"),
    (dict(momentum=None), TypeError, "momentum must be a real number"),
    (dict(momentum=np.complex128(0.1)), TypeError, "momentum must be a real number"),
    (dict(momentum=10**400), ValueError, r"momentum must be in \[0.0, 1.0\], got inf"),
    # the message states the interval eps is taken from: inf is not in it
    (dict(eps=0.0), ValueError, r"eps must be a finite number > 0.0, got 0.0"),
    (dict(eps=float("inf")), ValueError, r"eps must be a finite number > 0.0, got inf"),
    (dict(eps=-1e-5), ValueError, "eps must be a finite number > 0.0"),
    (dict(eps="1e-5"), TypeError, "eps must be a real number"),
    (dict(convention="tf"), ValueError, "convention must be one of 'pytorch', 'keras', got 'tf'"),
    (dict(training=1), TypeError, "training must be a bool"),
    (dict(training="False"), TypeError, "training must be a bool"),
])
def test_bad_scalars(kwargs, error, match):
    x, g, b, rm, rv = arrays()
    with pytest.raises(error, match=match):
        bn(x, g, b, rm, rv, **kwargs)


def test_batch_renorm_arguments():
    x, g, b, rm, rs = arrays()
    with pytest.raises(ValueError, match="running_mean and running_std are required"):
        normops.batch_renorm(x, g, b, None, None)
    with pytest.raises(ValueError, match=r"rmax must be in \[1.0, inf\], got 0.5"):
        normops.batch_renorm(x, g, b, rm, rs, rmax=0.5)
    with pytest.raises(ValueError, match=r"dmax must be in \[0.0, inf\], got -1.0"):
        normops.batch_renorm(x, g, b, rm, rs, dmax=-1.0)
    with pytest.raises(ValueError, match="running_std must have shape"):
        normops.batch_renorm(x, g, b, rm, np.ones(4))


def test_backward_arguments():
    x, g, b, rm, rv = arrays()
    y, saved = bn(x, g, b, rm, rv)
    dy = np.ones_like(x)
    with pytest.raises(ValueError, match=r"dy must have the shape of x \(4, 3, 2\), got \(4, 3\)"):
        normops.batch_norm_backward(dy[..., 0], x, saved, g)
    with pytest.raises(TypeError, match="dy has dtype float32 but x has dtype float64"):
        normops.batch_norm_backward(dy.astype(np.float32), x, saved, g)
    with pytest.raises(TypeError, match="saved must be the BatchNormSaved returned by the forward op batch_norm"):
        normops.batch_norm_backward(dy, x, (saved.mean, saved.invstd), g)
    _, brn_saved = normops.batch_renorm(x, g, b, np.zeros(C), np.ones(C))
    with pytest.raises(TypeError, match="saved must be the BatchRenormSaved"):
        normops.batch_renorm_backward(dy, x, saved, g)
    with pytest.raises(TypeError, match="saved must be the BatchNormSaved"):
        normops.batch_norm_backward(dy, x, brn_saved, g)
    with pytest.raises(ValueError, match="axis=2 differs from the forward call's channel axis 1"):
        normops.batch_norm_backward(dy, x, saved, g, axis=2)
    with pytest.raises(ValueError, match=r"x has shape \(4, 5, 2\) but the forward call's x had shape \(4, 3, 2\)"):
        normops.batch_norm_backward(np.ones((4, 5, 2)), np.ones((4, 5, 2)), saved, None)
    # same channels, another batch: the gradient would silently use the wrong statistics
    with pytest.raises(ValueError, match=r"x has shape \(6, 3, 2\) but the forward call's x had shape \(4, 3, 2\)"):
        normops.batch_norm_backward(np.ones((6, 3, 2)), np.ones((6, 3, 2)), saved, g)
    forged = normops.BatchNormSaved(saved.mean, saved.invstd, True, -1, saved.shape)
    with pytest.raises(ValueError, match=r"saved.axis=-1 is not a channel axis"):
        normops.batch_norm_backward(dy, x, forged, g)
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        normops.batch_norm_backward(dy, x, saved, np.ones(2))
    # the forward's axis is the default, and naming it again (even negatively) is fine
    dx_default = normops.batch_norm_backward(dy, x, saved, g)[0]
    dx_named = normops.batch_norm_backward(dy, x, saved, g, axis=-2)[0]
    np.testing.assert_array_equal(dx_default, dx_named)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_array_likes_and_subclasses_are_accepted_as_inputs():
    x = [[1.0, 2.0], [3.0, 5.0], [4.0, 4.5]]
    y, saved = bn(x, [1.0, 2.0], None)
    assert isinstance(y, np.ndarray) and y.dtype == np.float64
    ym, _ = bn(np.asmatrix(x), [1.0, 2.0], None)
    assert type(ym) is np.ndarray
    np.testing.assert_array_equal(ym, y)


def test_output_dtype_follows_input_dtype():
    for dtype in (np.float32, np.float64):
        x, g, b, rm, rv = arrays(dtype=dtype)
        y, saved = bn(x, g, b, rm, rv)
        dx, dg, db = normops.batch_norm_backward(np.ones_like(x), x, saved, g)
        assert y.dtype == dx.dtype == dg.dtype == db.dtype == dtype
        assert saved.mean.dtype == saved.invstd.dtype == np.float64


def test_running_spreads_must_not_be_negative_where_they_are_used():
    x, g, b, rm, rv = arrays()
    with pytest.raises(ValueError, match=r"running_var must be non-negative; channels \[1\] hold \[-1.0\]"):
        bn(x, g, b, rm, np.array([1.0, -1.0, 1.0]), training=False)
    # training only writes running_var; zero is a valid eval variance (eps keeps it finite)
    bn(x, g, b, rm.copy(), np.array([1.0, -1.0, 1.0]))
    bn(x, g, b, rm, np.array([1.0, 0.0, 1.0]), training=False)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="running_std must be positive"):
            normops.batch_renorm(x, g, b, rm.copy(), np.array([1.0, bad, 1.0]))
        with pytest.raises(ValueError, match="running_std must be positive"):
            normops.batch_renorm(x, g, b, rm.copy(), np.array([1.0, bad, 1.0]), training=False)
    # NaN is not refused: it propagates, visibly; nor does it hide a bad value beside it
    y, _ = normops.batch_renorm(x, g, b, rm.copy(), np.array([1.0, np.nan, 1.0]), training=False)
    assert np.isnan(y[:, 1]).all() and np.isfinite(y[:, 0]).all()
    with pytest.raises(ValueError, match=r"channels \[2\] hold \[-1.0\]"):
        bn(x, g, b, rm, np.array([np.nan, 1.0, -1.0]), training=False)
    with pytest.raises(ValueError, match=r"running_std must be positive; channels \[2\] hold \[0.0\]"):
        normops.batch_renorm(x, g, b, rm.copy(), np.array([np.nan, 1.0, 0.0]))


def test_masked_arrays_are_refused():
    x, g, b, rm, rv = arrays()
    with pytest.raises(TypeError, match="x is a masked array"):
        bn(np.ma.masked_less(x, 0.0))
    with pytest.raises(TypeError, match="gamma is a masked array"):
        bn(x, np.ma.masked_array(g), b)


def test_scalars_may_be_numpy_scalars_or_0d_arrays():
    x, g, b, rm, rv = arrays()
    bn(x, g, b, rm, rv, momentum=np.array(0.5), eps=np.float32(1e-3))
    expected = 0.5 * x.mean(axis=(0, 2))
    np.testing.assert_allclose(rm, expected, rtol=1e-12)


def test_list_parameters_take_x_dtype_but_arrays_must_match():
    x = arrays(dtype=np.float32)[0]
    y_list, _ = bn(x, [1.0, 2.0, 3.0], [0.0, 0.5, 1.0])
    y_arr, _ = bn(x, np.array([1, 2, 3], np.float32), np.array([0, 0.5, 1], np.float32))
    np.testing.assert_array_equal(y_list, y_arr)
    with pytest.raises(TypeError, match="gamma has dtype float64 but x has dtype float32"):
        bn(x, np.array([1.0, 2.0, 3.0]))


def test_saved_state_is_hashable_and_compares_by_identity():
    x, g, b, rm, rv = arrays()
    _, saved = bn(x, g, b, rm, rv)
    _, again = bn(x, g, b, rm, rv)
    assert len({saved, again}) == 2 and saved == saved and saved != again


def test_saved_state_fields_are_checked_converted_or_passed_on_as_they_are():
    from normops import _validation
    x, g, b, rm, rv = arrays()
    dy = np.cos(x)
    _, saved = bn(x, g, b, rm, rv)
    # as the forward made it: the backend gets the very object, nothing copied
    same, axis = _validation.saved_state(np, saved, normops.BatchNormSaved, "batch_norm", x, None)
    assert same is saved and axis == 1
    # valid, but not float64: converted in a copy of the state, the caller's left alone
    narrow = normops.BatchNormSaved(saved.mean.astype(np.float32), saved.invstd.astype(">f8"),
                                    True, np.int64(1), saved.shape)
    checked, _ = _validation.saved_state(np, narrow, normops.BatchNormSaved, "batch_norm", x, None)
    assert checked is not narrow and narrow.mean.dtype == np.float32 and narrow.axis.dtype == np.int64
    assert checked.mean.dtype == checked.invstd.dtype == np.float64 and type(checked.axis) is int
    for backend in ("cpu", "reference"):
        np.testing.assert_allclose(
            normops.batch_norm_backward(dy, x, narrow, g, backend=backend)[0],
            normops.batch_norm_backward(dy, x, checked, g, backend=backend)[0], rtol=1e-12)
    for field, value, error, match in [
        ("mean", saved.mean.tolist(), TypeError, r"saved.mean must be a numpy.ndarray"),
        ("invstd", np.ones(C + 1), ValueError, r"saved.invstd must have shape \(3,\)"),
        ("invstd", np.ones(C, int), TypeError, r"saved.invstd must have a float dtype"),
        ("axis", 1.0, TypeError, "saved.axis must be an int"),
        ("training", 1, TypeError, "saved.training must be a bool"),
        ("shape", list(x.shape), TypeError, "saved.shape must be a tuple of ints"),
    ]:
        forged = normops.BatchNormSaved(**{**saved.__dict__, field: value})
        for backend in ("cpu", "reference"):
            with pytest.raises(error, match=match):
                normops.batch_norm_backward(dy, x, forged, g, backend=backend)
