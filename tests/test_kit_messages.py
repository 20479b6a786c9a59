"""The kit's failure messages print plain numbers: no NumPy scalar reprs (NumPy 2's
``np.float64(...)``), dtypes by their names, and the shrunk input as a ``make_case`` call
that rebuilds the same case (valid Python without NumPy in scope)."""
import re

import numpy as np
import pytest

from normops import testing
from test_kit import unbiased_batch_norm   # BN with the biased/unbiased mix-up

REFERENCE = testing.backend_implementation("reference")
NUMPY_REPR = re.compile(r"\bnp\.\w+\(|\bdtype\(")
RECIPE = re.compile(r"case=(make_case\(.*?renorm=(?:True|False)\))")


def steep_backward(dy, x, saved, gamma, *, axis):
    """The reference backward with dx 10% too large."""
    dx, dgamma, dbeta = REFERENCE.batch_norm_backward(dy, x, saved, gamma, axis=axis)
    return (dx * 1.1).astype(dx.dtype), dgamma, dbeta


def half_arithmetic_batch_norm(x, gamma, beta, running_mean, running_var, *, training, momentum,
                               eps, axis, convention):
    """The reference forward with y scaled by 1 + 2^-7 in x's dtype: a few ulps off in
    float16, the error of arithmetic in the half dtype."""
    y, saved = REFERENCE.batch_norm(x, gamma, beta, running_mean, running_var,
                                    training=training, momentum=momentum, eps=eps, axis=axis,
                                    convention=convention)
    return (y * y.dtype.type(1 + 2.0 ** -7)).astype(y.dtype), saved


UNBIASED = testing.Implementation("unbiased", unbiased_batch_norm, REFERENCE.batch_norm_backward)
STEEP = testing.Implementation("steep-dx", REFERENCE.batch_norm, steep_backward)
HALF_ARITHMETIC = testing.Implementation(
    "half-arithmetic", half_arithmetic_batch_norm, REFERENCE.batch_norm_backward,
    dtypes=(np.dtype(np.float16),))


def failure(impl, name):
    prop = testing.properties([name])[0]
    result = testing.run_property(prop, impl, profile="ci")
    assert result.failed, result
    return prop, result.message


def assert_plain(message):
    for scalar in ("np.float64(", "np.float32(", "np.float16(", "np.int64(", "np.bool"):
        assert scalar not in message, message
    assert not NUMPY_REPR.search(message), message


def assert_same_case(case, rebuilt):
    assert repr(rebuilt) == repr(case)
    for name in ("x", "dy", "gamma", "beta", "running_mean", "running_second"):
        a, b = getattr(case, name), getattr(rebuilt, name)
        if a is None:
            assert b is None, name
            continue
        assert a.dtype == b.dtype and a.shape == b.shape and a.strides == b.strides, name
        assert np.array_equal(a, b, equal_nan=True), name
    assert (case.axis, case.momentum, case.eps) == (rebuilt.axis, rebuilt.momentum, rebuilt.eps)
    assert case.parameters_dtype == rebuilt.parameters_dtype


def rebuild(message):
    """The case of the ``make_case`` call in ``message``, evaluated with nothing but
    make_case in scope."""
    recipe = RECIPE.search(message).group(1)
    rebuilt = eval(recipe, {"__builtins__": {}, "make_case": testing.make_case})
    assert repr(rebuilt) == recipe
    return rebuilt


@pytest.mark.parametrize("impl, name, expected", [
    (UNBIASED, "bn_zero_mean_unit_variance", r"variance of y: worst error [\d.e+-]+ at \(\d+,\) "
     r"\(actual -?[\d.e+-]+, expected -?[\d.e+-]+\) against a tolerance of [\d.e+-]+ = "),
    (STEEP, "bn_gradients_finite_differences", r"dx: worst error [\d.e+-]+ at \(\d+(, \d+)+\) "
     r"\(analytic -?[\d.e+-]+, finite differences -?[\d.e+-]+\) against a tolerance of "),
    (HALF_ARITHMETIC, "half_outputs_within_one_ulp", r"y: [\d.e+-]+ ulps of float16 from the "
     r"float64 result at \(\d+(, \d+)+\) \(actual -?[\d.e+-]+, float64 result -?[\d.e+-]+, "
     r"rounded -?[\d.e+-]+\)"),
], ids=["assert_close", "finite_differences", "ulps"])
def test_a_failure_message_prints_plain_numbers_and_a_case_that_rebuilds(impl, name, expected):
    prop, message = failure(impl, name)
    assert_plain(message)
    assert re.search(expected, message), message
    rebuilt = rebuild(message)
    # the rebuilt case is the one that failed: the property fails on it again, with the
    # same message (the other drawn values are plain Python too)
    drawn = eval("dict(" + message.split("; ", 1)[1].split(":\n", 1)[0] + ")",
                 {"__builtins__": {"dict": dict}, "make_case": testing.make_case,
                  "inf": float("inf")})
    assert_same_case(drawn["case"], rebuilt)
    with pytest.raises(AssertionError) as again:
        prop.check(impl, **drawn)
    assert str(again.value) in message


def test_a_case_made_from_numpy_scalars_prints_plain_python_that_rebuilds_it():
    case = testing.make_case(
        (np.int64(3), np.int64(4)), np.int64(-1), np.dtype(np.float16),
        regime=np.str_("large_offset"), memory=np.str_("strided"), seed=np.uint32(7),
        gamma=np.bool_(True), beta=np.bool_(False), momentum=np.float32(0.25),
        eps=np.float64(1e-3), params=np.float32, running=np.dtype(np.float32),
        renorm=np.bool_(True))
    assert_plain(repr(case))
    assert repr(case) == ("make_case((3, 4), axis=-1, dtype='float16', regime='large_offset', "
                          "memory='strided', seed=7, gamma=True, beta=False, momentum=0.25, "
                          "eps=0.001, params='float32', running='float32', renorm=True)")
    assert_same_case(case, eval(repr(case), {"__builtins__": {}, "make_case": testing.make_case}))


def test_a_drawn_dtype_prints_as_its_name():
    from normops.testing._runner import _describe
    drawn = dict(case=testing.make_case((4, 3)), dtype=np.dtype(np.float32), seed=np.int64(5),
                 clip=(np.float64(3.0), float("inf")))
    described = _describe(drawn)
    assert_plain(described)
    assert described.endswith("dtype='float32', seed=5, clip=(3.0, inf)"), described
