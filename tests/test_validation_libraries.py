"""Every error path of the validation layer on arrays of array-api-strict (the array
API standard and nothing else: no strides, no flags, no NumPy calls), of PyTorch and
of NumPy: the same checks, the same messages, the library named where it matters."""
import numpy as np
import pytest

import normops

C = 3


class Library:
    """Arrays of one library from NumPy values; ``kind``: how messages name its arrays."""

    def __init__(self, name):
        self.name = name
        if name == "numpy":
            self.kind, self.convert = "a numpy.ndarray", np.asarray
        elif name == "array_api_strict":
            xps = pytest.importorskip("array_api_strict")
            self.xp, self.kind = xps, "an array_api_strict array"
            self.convert = lambda a, device=None: xps.asarray(a, device=device)
        else:
            torch = pytest.importorskip("torch")
            self.kind, self.convert = "a torch array", lambda a: torch.from_numpy(np.array(a))

    def __call__(self, values, dtype=np.float64, **options):
        return self.convert(np.asarray(values, dtype), **options)

    def arrays(self, shape=(4, C, 2), dtype=np.float64):
        x = np.random.default_rng(0).normal(size=shape)
        return (self(x, dtype), self(np.ones(C), dtype), self(np.zeros(C), dtype),
                self(np.zeros(C), dtype), self(np.ones(C), dtype))


@pytest.fixture(params=["numpy", "array_api_strict", "torch"])
def lib(request):
    return Library(request.param)


def bn(*args, **kwargs):
    return normops.batch_norm(*args, **kwargs)


def raises(error, match, fn, *args, **kwargs):
    with pytest.raises(error, match=match):
        fn(*args, **kwargs)


def test_bad_x(lib):
    raises(ValueError, "at least 2 dimensions", bn, lib(np.ones(4)))
    raises(ValueError, "x is empty", bn, lib(np.ones((0, 3))))
    raises(ValueError, "x is empty", bn, lib(np.ones((4, 0))))
    raises(TypeError, "float32, float64, float16 or bfloat16, got int64", bn, lib(np.ones((4, 3)), np.int64))
    raises(TypeError, "float32, float64, float16 or bfloat16, got int16", bn, lib(np.ones((4, 3)), np.int16))
    raises(ValueError, r"axis=2 is out of range .* \(valid: -2 to 1\)", bn, lib(np.ones((4, 3))), axis=2)
    raises(TypeError, "axis must be an int", bn, lib(np.ones((4, 3))), axis=1.0)


def test_per_channel_arrays(lib):
    x, g, b, rm, rv = lib.arrays()
    raises(ValueError, r"gamma must have shape \(3,\) \(one value per channel\), got shape \(4,\)",
           bn, x, lib(np.ones(4)), b)
    raises(ValueError, r"beta must have shape \(3,\).*got shape \(1, 3\)", bn, x, g, lib(np.zeros((1, 3))))
    raises(TypeError, "gamma has dtype float32 but x has dtype float64", bn, x, lib(np.ones(C), np.float32), b)
    raises(TypeError, "running_mean has dtype float32 but x has dtype float64",
           bn, x, g, b, lib(np.zeros(C), np.float32), rv)
    raises(ValueError, r"running_var must have shape \(3,\)", bn, x, g, b, rm, lib(np.ones(2)))
    # lists take x's dtype, on x's device
    y_list = bn(x, [1.0, 2.0, 3.0], None)[0]
    y_array = bn(x, lib(np.array([1.0, 2.0, 3.0])), None)[0]
    assert type(y_list) is type(x)
    np.testing.assert_array_equal(np.asarray(y_list), np.asarray(y_array))
    raises(ValueError, "gamma could not be converted to an array", bn, x, ["a", "b", "c"], None)


def test_running_statistics(lib):
    x, g, b, rm, rv = lib.arrays()
    raises(TypeError, rf"running_var must be {lib.kind} \(it is updated in place\), got list",
           bn, x, g, b, rm, [1.0, 1.0, 1.0])
    raises(ValueError, "running_mean and running_var must be given together", bn, x, g, b, rm, None)
    raises(ValueError, "running_mean shares memory with running_var", bn, x, g, b, rm, rm)
    raises(ValueError, "running_mean shares memory with gamma", bn, x, g, b, g, rv)
    raises(ValueError, "training=False normalizes with the running statistics", bn, x, g, b, training=False)
    raises(ValueError, "expected more than 1 value per channel when training", bn, lib(np.ones((1, C))))
    raises(ValueError, r"running_var must be non-negative; channels \[1\] hold \[-1.0\]",
           bn, x, g, b, rm, lib([1.0, -1.0, 1.0]), training=False)
    raises(ValueError, r"running_std must be positive; channels \[2\] hold \[0.0\]",
           normops.batch_renorm, x, g, b, rm, lib([np.nan, 1.0, 0.0]))
    raises(ValueError, "running_mean and running_std are required", normops.batch_renorm, x, g, b, None, None)
    # eval mode only reads them: a list is fine there
    y = bn(x, g, b, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], training=False)[0]
    np.testing.assert_array_equal(np.asarray(y), np.asarray(bn(x, g, b, rm, rv, training=False)[0]))


def test_scalars(lib):
    x, g, b, rm, rv = lib.arrays()
    raises(ValueError, r"momentum must be in \[0.0, 1.0\], got 1.5", bn, x, g, b, rm, rv, momentum=1.5)
    raises(ValueError, r"eps must be a finite number > 0.0, got 0.0", bn, x, g, b, rm, rv, eps=0.0)
    raises(ValueError, "convention must be one of", bn, x, g, b, rm, rv, convention="tf")
    raises(TypeError, "training must be a bool", bn, x, g, b, rm, rv, training=1)
    raises(ValueError, r"rmax must be in \[1.0, inf\], got 0.5", normops.batch_renorm, x, g, b, rm, rv, rmax=0.5)
    raises(ValueError, r"dmax must be in \[0.0, inf\], got -1.0", normops.batch_renorm, x, g, b, rm, rv, dmax=-1.0)


def test_backward(lib):
    x, g, b, rm, rv = lib.arrays()
    y, saved = bn(x, g, b, rm, rv)
    dy = lib(np.ones((4, C, 2)))
    back = normops.batch_norm_backward
    raises(ValueError, r"dy must have the shape of x \(4, 3, 2\), got \(4, 3\)", back, lib(np.ones((4, C))), x, saved, g)
    raises(TypeError, "dy has dtype float32 but x has dtype float64", back, lib(np.ones((4, C, 2)), np.float32), x, saved, g)
    raises(TypeError, "saved must be the BatchNormSaved returned by the forward op batch_norm",
           back, dy, x, (saved.mean, saved.invstd), g)
    raises(ValueError, "axis=2 differs from the forward call's channel axis 1", back, dy, x, saved, g, axis=2)
    raises(ValueError, r"x has shape \(6, 3, 2\) but the forward call's x had shape \(4, 3, 2\)",
           back, lib(np.ones((6, C, 2))), lib(np.ones((6, C, 2))), saved, g)
    raises(ValueError, r"gamma must have shape \(3,\)", back, dy, x, saved, lib(np.ones(2)))
    for field, value, error, match in [
        ("mean", [0.0] * C, TypeError, rf"saved.mean must be {lib.kind} as the forward op returned it"),
        ("invstd", lib(np.ones(C + 1)), ValueError, r"saved.invstd must have shape \(3,\)"),
        ("invstd", lib(np.ones(C), np.int64), TypeError, "saved.invstd must have a float dtype"),
        ("axis", 1.0, TypeError, "saved.axis must be an int"),
        ("training", 1, TypeError, "saved.training must be a bool"),
        ("shape", [4, C, 2], TypeError, "saved.shape must be a tuple of ints"),
    ]:
        forged = normops.BatchNormSaved(**{**saved.__dict__, field: value})
        raises(error, match, back, dy, x, forged, g)
    _, brn_saved = normops.batch_renorm(x, g, b, lib(np.zeros(C)), lib(np.ones(C)))
    raises(TypeError, "saved must be the BatchRenormSaved", normops.batch_renorm_backward, dy, x, saved, g)
    forged = normops.BatchRenormSaved(**{**brn_saved.__dict__, "r": None})
    raises(TypeError, r"saved.r must be .* \(a training BatchRenormSaved holds r and d\)",
           normops.batch_renorm_backward, dy, x, forged, g)
    # a narrower float is converted, as the NumPy path does
    narrow = normops.BatchNormSaved(**{**saved.__dict__, "mean": lib(np.asarray(saved.mean), np.float32)})
    back(dy, x, narrow, g)


def test_every_array_must_be_on_x_device():
    """array-api-strict has devices of its own: an array on another is refused, by name."""
    lib = Library("array_api_strict")
    other = lib.xp.Device("device1")
    x, g, b, rm, rv = lib.arrays()
    elsewhere = lambda v: lib(v, device=other)   # noqa: E731
    where = r"is on device array_api_strict.Device\('device1'\) but x is on device array_api_strict.Device\('CPU_DEVICE'\)"
    raises(ValueError, "gamma " + where, bn, x, elsewhere(np.ones(C)), b)
    raises(ValueError, "running_var " + where, bn, x, g, b, rm, elsewhere(np.ones(C)))
    raises(ValueError, "running_var " + where, bn, x, g, b, rm, elsewhere(np.ones(C)), training=False)
    y, saved = bn(x, g, b, rm, rv)
    raises(ValueError, "dy " + where, normops.batch_norm_backward, elsewhere(np.ones((4, C, 2))), x, saved, g)
    forged = normops.BatchNormSaved(**{**saved.__dict__, "invstd": elsewhere(np.ones(C))})
    raises(ValueError, "saved.invstd " + where, normops.batch_norm_backward, lib(np.ones((4, C, 2))), x, forged, g)
    # on device1 throughout: results stay there
    x1 = elsewhere(np.random.default_rng(1).normal(size=(4, C, 2)))
    y1, saved1 = bn(x1, elsewhere(np.ones(C)), None, elsewhere(np.zeros(C)), elsewhere(np.ones(C)))
    assert y1.device == saved1.mean.device == other


def test_a_device_without_float64_sums_in_float32():
    """array-api-strict's "no_float64" device: the statistics are float32 there."""
    lib = Library("array_api_strict")
    device = lib.xp.Device("no_float64")
    rng = np.random.default_rng(2)
    values = rng.normal(3.0, 2.0, (64, C, 5))
    x = lib(values, np.float32, device=device)
    rm, rv = lib(np.zeros(C), np.float32, device=device), lib(np.ones(C), np.float32, device=device)
    y, saved = bn(x, None, None, rm, rv)
    assert saved.mean.dtype == lib.xp.float32 and y.device == device
    dx = normops.batch_norm_backward(lib(np.ones_like(values), np.float32, device=device), x, saved)[0]
    expected, ref_saved = normops.batch_norm(values.astype(np.float32), backend="reference")
    np.testing.assert_allclose(np.from_dlpack(y), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.from_dlpack(saved.mean), ref_saved.mean, rtol=1e-6)
    np.testing.assert_allclose(np.from_dlpack(dx), 0.0, atol=1e-5)


def test_immutable_arrays_work_where_nothing_is_written():
    """JAX arrays cannot be written in place: training with running statistics says so;
    everything else runs, and returns JAX arrays."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    values = np.random.default_rng(3).normal(size=(8, C, 4)).astype(np.float32)
    x = jnp.asarray(values)
    with pytest.raises(ValueError, match=r"running_mean cannot be written in place \(jax.numpy arrays are immutable\)"):
        bn(x, None, None, jnp.zeros(C), jnp.ones(C))
    y, saved = bn(x, jnp.ones(C), jnp.zeros(C))
    dx, dgamma, dbeta = normops.batch_norm_backward(jnp.ones_like(x), x, saved, jnp.ones(C))
    y_eval, _ = bn(x, None, None, jnp.zeros(C), jnp.ones(C), training=False)
    for result in (y, dx, dgamma, y_eval):
        assert isinstance(result, jax.Array)
    np.testing.assert_allclose(np.asarray(y), normops.batch_norm(values, backend="reference")[0],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y_eval), values / np.sqrt(1 + 1e-5), rtol=1e-6)


def test_backward_per_channel_arrays_are_on_x_device():
    lib = Library("array_api_strict")
    other = lib.xp.Device("device1")
    x = lib(np.random.default_rng(4).normal(size=(4, C, 2)), device=other)
    y, saved = bn(x)
    dy = lib(np.ones((4, C, 2)), device=other)
    dx_list = normops.batch_norm_backward(dy, x, saved, [1.0, 2.0, 3.0])[0]
    assert dx_list.device == other
    where = r"is on device array_api_strict.Device\('CPU_DEVICE'\) but x is on device array_api_strict.Device\('device1'\)"
    raises(ValueError, "gamma " + where, normops.batch_norm_backward, dy, x, saved, lib(np.ones(C)))
    raises(TypeError, "dy is a numpy.ndarray but x is an array_api_strict array",
           normops.batch_norm_backward, np.ones((4, C, 2)), x, saved)


@pytest.mark.parametrize("library", ["array_api_strict", "torch"])
def test_the_array_api_path_keeps_float32_outputs_exact_at_an_offset(library):
    """float32 values at an offset of 1e4 spreads: y and dx within 1e-6 of the float64
    reference (y = a x + b in float32 would be 1e-3 off: a x and b cancel)."""
    lib = Library(library)
    rng = np.random.default_rng(5)
    values = (1e4 + rng.normal(size=(256, C, 4))).astype(np.float32)
    dy = rng.normal(size=values.shape).astype(np.float32)
    gamma, beta = np.float32([0.5, 1.0, 2.0]), np.float32([0.0, -1.0, 3.0])
    y, saved = normops.batch_norm(lib(values, np.float32), lib(gamma, np.float32), lib(beta, np.float32),
                                  backend="array-api")
    dx = normops.batch_norm_backward(lib(dy, np.float32), lib(values, np.float32), saved,
                                     lib(gamma, np.float32), backend="array-api")[0]
    y_ref, saved_ref = normops.batch_norm(values.astype(np.float64), gamma.astype(np.float64),
                                          beta.astype(np.float64), backend="reference")
    dx_ref = normops.batch_norm_backward(dy.astype(np.float64), values.astype(np.float64), saved_ref,
                                         gamma.astype(np.float64), backend="reference")[0]
    host = np.from_dlpack if library == "array_api_strict" else (lambda t: t.numpy())
    np.testing.assert_allclose(host(y), y_ref, rtol=0, atol=2e-6 * np.abs(y_ref).max())
    np.testing.assert_allclose(host(dx), dx_ref, rtol=0, atol=2e-6 * np.abs(dx_ref).max())
