"""The cpu kernels' float16 and bfloat16 loads and stores (cext/half.h and the AVX2 + F16C
loops of cext/simd.c): every one of the 65536 bit patterns of each half dtype goes
through the kernels' maps, whose double result must come back rounded once to the
nearest half value, ties to even (a brute-force search of the neighbours decides, not
another cast), NaN staying NaN, with the same bits from the AVX2 loops and the portable
ones, on both layout paths and on the pipelined one; and per-channel outputs (running
statistics, dgamma, dbeta) of a half dtype are rounded once too."""
import numpy as np
import pytest

import normops
from normops._backends import _cpu

ml_dtypes = pytest.importorskip("ml_dtypes")

F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16)
HALVES = [F16, BF16]


def half_value(bits, dtype):
    """The float64 values of half bit patterns, the largest finite value's successor (an
    infinity) counted as the power of two it stands for, so that distances to it decide
    overflow as rounding does."""
    with np.errstate(invalid="ignore"):   # NaN patterns
        values = np.asarray(bits, np.uint16).view(dtype).astype(np.float64)
    top = float(ml_dtypes.finfo(dtype).max)
    successor = 2.0 ** (np.floor(np.log2(top)) + 1)
    return np.where(np.isinf(values), np.copysign(successor, values), values)


def nearest(values, dtype):
    """Bit patterns of ``values`` (float64, finite or not) rounded to the nearest value
    of ``dtype``, ties to the even pattern: the best of the eight patterns around a first
    guess, measured exactly in float64 (every half value and every midpoint between two
    of them is a double)."""
    values = np.asarray(values, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        guess = values.astype(np.float32).view(np.uint32) >> 16 if dtype == BF16 \
            else values.astype(np.float16).view(np.uint16).astype(np.uint32)
    sign = guess & 0x8000
    magnitude = (guess & 0x7FFF).astype(np.int64)
    best, best_distance = None, None
    for step in range(-4, 4):
        m = np.clip(magnitude + step, 0, 0x7FFF)
        cand = (m | sign).astype(np.uint16)
        finite_or_inf = (m & 0x7FFF) <= (0x7C00 if dtype == F16 else 0x7F80)
        with np.errstate(invalid="ignore"):   # NaN and infinite values: decided below
            distance = np.abs(half_value(cand, dtype) - values)
        distance = np.where(finite_or_inf, distance, np.inf)
        if best is None:
            best, best_distance = cand, distance
            continue
        closer = (distance < best_distance) | ((distance == best_distance) & (cand % 2 == 0)
                                               & (best % 2 == 1))
        best = np.where(closer, cand, best)
        best_distance = np.where(closer, distance, best_distance)
    # zero and infinity keep the sign of the value, as IEEE rounding does
    signed = np.where(np.signbit(values), 0x8000, 0)
    best = np.where(values == 0, signed, best)
    # past the midpoint of the largest value and its successor (a tie goes to the
    # successor, as the largest value's pattern is odd), infinity
    top = half_value(0x7C00 if dtype == F16 else 0x7F80, dtype)
    overflow = np.abs(values) >= (top + half_value(0x7BFF if dtype == F16 else 0x7F7F, dtype)) / 2
    best = np.where(overflow, signed | (0x7C00 if dtype == F16 else 0x7F80), best)
    return best.astype(np.uint16)


def every_pattern(dtype, inner):
    """All 65536 bit patterns of a half dtype as an (outer, 4, inner) array (repeated
    to fill the last row)."""
    per_row = 4 * inner
    outer = -(-65536 // per_row)
    bits = np.resize(np.arange(65536, dtype=np.uint16), outer * per_row)
    return bits.view(dtype).reshape(outer, 4, inner)


def mapped(x3, a, b, simd):
    y = np.empty_like(x3)
    try:
        _cpu._set_simd(simd)
        _cpu.forward(x3, y, "affine", a=a, b=b)
    finally:
        _cpu._set_simd(True)
    return y


COEFFICIENTS = [
    (np.ones(4), np.zeros(4)),
    (np.array([0.3, -1.7, 1e-3, 3.0]), np.array([0.1, -2.5, 0.0, 1e-6])),
    # products beyond the half range, and below its subnormals
    (np.array([1e5, 1e-9, -7e30, 2.0 ** -30]), np.array([0.0, 1e-12, 0.5, -2.0 ** -140])),
]


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("inner", [1, 3, 37, 4096])
@pytest.mark.parametrize("coefficients", range(len(COEFFICIENTS)))
def test_every_half_value_maps_to_the_rounded_result(dtype, inner, coefficients):
    a, b = COEFFICIENTS[coefficients]
    x3 = every_pattern(dtype, inner)
    fast = mapped(x3, a, b, simd=True)
    portable = mapped(x3, a, b, simd=False)
    assert fast.tobytes() == portable.tobytes()
    with np.errstate(over="ignore", invalid="ignore"):
        # x a is exact in 64 bits (x has 11 significant bits or fewer); the kernels' fused
        # multiply-add rounds x a + b once to a double, which this matches but for
        # results within 2^-64 of a double's midpoint
        wide = x3.astype(np.longdouble) * a[None, :, None] + b[None, :, None]
        exact = wide.astype(np.float64)
    got = fast.view(np.uint16)
    is_nan = np.isnan(exact)
    assert np.isnan(fast[is_nan].astype(np.float32)).all()
    wrong = (got != nearest(exact, dtype)) & ~is_nan
    assert not wrong.any(), (f"{int(wrong.sum())} values misrounded, e.g. x bits "
                             f"{x3.view(np.uint16)[wrong][:4]} -> {got[wrong][:4]}, expected "
                             f"{nearest(exact, dtype)[wrong][:4]}")


def test_the_rounding_oracle_rounds_to_nearest_even():
    """The oracle itself, on values whose rounding is known: 1 + 2^-8 (a bfloat16 tie, to
    1), just above it (up), 1 + 3 * 2^-8 (a tie, up to the even 1 + 2^-6), and float16's
    65519.99 (65504) and 65520 (a tie to infinity)."""
    one = np.uint16(0x3F80)
    got = nearest([1 + 2.0**-8, 1 + 2.0**-8 + 2.0**-40, 1 + 3 * 2.0**-8], BF16)
    assert list(got) == [one, one + 1, one + 2]
    assert list(nearest([65519.99, 65520.0, -65520.0], F16)) == [0x7BFF, 0x7C00, 0xFC00]


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("params", ["float32", "half"])
def test_per_channel_outputs_of_a_half_dtype_are_rounded_once(dtype, params):
    """The running statistics' update and dgamma, dbeta are computed in double and stored
    once in their own dtype (float32 or the half dtype)."""
    rng = np.random.default_rng(7)
    pdt = np.dtype(np.float32) if params == "float32" else dtype
    x3 = (rng.standard_normal((64, 5, 3)) * 2 + 0.3).astype(dtype)
    dy3 = rng.standard_normal(x3.shape).astype(dtype)
    mean, invstd = np.empty(5), np.empty(5)
    running_mean = rng.standard_normal(5).astype(pdt)
    running_var = rng.uniform(0.5, 2.0, 5).astype(pdt)
    before_mean, before_var = running_mean.astype(np.float64), running_var.astype(np.float64)
    y = np.empty_like(x3)
    _cpu.forward(x3, y, "bn_train", None, None, running_mean, running_var, eps=1e-5,
                 momentum=0.1, unbiased=True, mean=mean, invstd=invstd)
    values = x3.astype(np.float64).transpose(1, 0, 2).reshape(5, -1)
    batch_mean, batch_var = values.mean(1), values.var(1, ddof=1)
    expect_mean = 0.9 * before_mean + 0.1 * batch_mean
    expect_var = 0.9 * before_var + 0.1 * batch_var
    if pdt == np.float32:
        assert np.allclose(running_mean, expect_mean, rtol=2**-23, atol=0)
        assert np.allclose(running_var, expect_var, rtol=2**-23, atol=0)
    else:   # the double results differ from exact ones by far less than the half's spacing
        assert (running_mean.view(np.uint16) == nearest(expect_mean, dtype)).all()
        assert (running_var.view(np.uint16) == nearest(expect_var, dtype)).all()
    dgamma, dbeta = np.empty(5, pdt), np.empty(5, pdt)
    dx = np.empty_like(x3)
    _cpu.backward(dy3, x3, dx, "fused", training=True, mean=mean, invstd=invstd, dgamma=dgamma,
                  dbeta=dbeta)
    g = dy3.astype(np.float64).transpose(1, 0, 2).reshape(5, -1)
    x_hat = (values - mean[:, None]) * invstd[:, None]
    exact_dgamma, exact_dbeta = (g * x_hat).sum(1), g.sum(1)
    if pdt == np.float32:
        assert np.allclose(dbeta, exact_dbeta, rtol=2**-23, atol=0)
    else:
        assert (dbeta.view(np.uint16) == nearest(exact_dbeta, dtype)).all()
        assert np.allclose(dgamma.astype(np.float64), exact_dgamma,
                           rtol=float(ml_dtypes.finfo(dtype).eps), atol=0)


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_half_data_refuses_per_channel_arrays_of_other_dtypes(dtype):
    x3 = np.zeros((4, 3, 2), dtype)
    for wrong in (np.float64, np.float16 if dtype == BF16 else BF16):
        with pytest.raises(ValueError, match="float32 for half x"):
            _cpu.forward(x3, np.empty_like(x3), "bn_eval", np.ones(3, wrong), None,
                         np.zeros(3, np.float32), np.ones(3, np.float32), eps=1e-5,
                         mean=np.empty(3), invstd=np.empty(3))
    with pytest.raises(ValueError, match="dgamma's dtype"):
        _cpu.backward(x3, x3, np.empty_like(x3), "fused", training=False, mean=np.zeros(3),
                      invstd=np.ones(3), dgamma=np.empty(3, np.float32),
                      dbeta=np.empty(3, dtype))


def both_ways(run):
    """run() with the AVX2 loops and with the portable ones: the two results."""
    try:
        _cpu._set_simd(True)
        fast = run()
        _cpu._set_simd(False)
        portable = run()
    finally:
        _cpu._set_simd(True)
    return fast, portable


@pytest.mark.parametrize("shape", [(1, 8, 1), (1, 1, 16)])
@pytest.mark.parametrize("case", [
    # the float32 map's inner multiply-add overflows where the outer term cancels it
    (0x7180, 0x7180, 2.0**100, -2.0**100, 0.0),
    (0x7181, 0x7180, 2.0**100, -2.0**100, 0.0),
    (0x7F7F, 0x7F7F, 1.5, -1.5, 3.0),
    # results that round to a bfloat16 zero, whose sign the float32 map cannot tell
    (0x0000, 0x1F4D, float.fromhex("0x1.fffffc33652d6p-18"),
     float.fromhex("-0x1.ffffffffffd91p-122"), -0.0),
    (0x0000, 0x0001, 1.0, -(2.0**-126), 0.0),
    (0x3380, 0xB4A0, float.fromhex("0x1.4000010001p-124"), float.fromhex("0x1.000000fffff00p-126"),
     0.0),
])
def test_bfloat16_gradient_map_edges(shape, case):
    dy_bits, x_bits, p, q, s = case
    dy3 = np.full(shape, dy_bits, np.uint16).view(BF16)
    x3 = np.full(shape, x_bits, np.uint16).view(BF16)
    channels = shape[1]

    def run():
        dx3 = np.empty_like(x3)
        _cpu.backward(dy3, x3, dx3, "grad_input", p=np.full(channels, p),
                      q=np.full(channels, q), s=np.full(channels, s))
        return dx3.view(np.uint16)

    fast, portable = both_ways(run)
    assert fast.tobytes() == portable.tobytes(), (fast.ravel()[:4], portable.ravel()[:4])


@pytest.mark.parametrize("dims", [(1, 1, 15), (24, 1)])
def test_bfloat16_zero_gamma_keeps_the_sign_of_zero(dims):
    """gamma = +0 and beta = -0 (a zero-initialized scale): y = -0 where x is 0, as the
    double computation gives, from both kinds of loop; dx likewise."""
    x = np.resize(np.array([0x3F80, 0, 0], np.uint16), dims).view(BF16)
    dy = np.resize(np.array([0xBF80, 0xBF80, 0x4040], np.uint16), dims).view(BF16)
    gamma, beta = np.array([0.0], np.float32), np.array([-0.0], np.float32)

    def run():
        y, saved = normops.batch_norm(x, gamma, beta, training=True)
        dx = normops.batch_norm_backward(dy, x, saved, gamma)[0]
        return y.view(np.uint16).copy(), dx.view(np.uint16).copy()

    (y_fast, dx_fast), (y_port, dx_port) = both_ways(run)
    assert y_fast.tobytes() == y_port.tobytes() and dx_fast.tobytes() == dx_port.tobytes()
    assert (y_fast[x.view(np.uint16) == 0] == 0x8000).all()


@pytest.mark.parametrize("shape", [(1, 8, 1), (1, 1, 16)])
def test_coefficients_float32_cannot_hold_take_the_double_map(shape):
    """q = 1e-60 is 0 in float32: its term, here the largest of dx, needs the double map."""
    x3 = np.full(shape, 1e35, np.float32).astype(BF16)
    dy3 = np.ones(shape, np.float32).astype(BF16)
    channels = shape[1]

    def run():
        dx3 = np.empty_like(x3)
        _cpu.backward(dy3, x3, dx3, "grad_input", p=np.full(channels, 1e-33),
                      q=np.full(channels, 1e-60), s=np.zeros(channels))
        return dx3

    fast, portable = both_ways(run)
    assert fast.tobytes() == portable.tobytes()
    exact = 1e-33 + 1e-60 * float(x3.ravel()[0])
    assert (fast.view(np.uint16) == nearest(np.full(fast.shape, exact), BF16)).all()
