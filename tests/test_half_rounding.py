"""round_to: float64 (and float32) rounded once to bfloat16 and float16, checked bit for
bit against a brute-force correct rounding (the nearer of the two neighbouring half
values, found in a table of every half value by exact float64 comparisons; ties to the
even bit pattern)."""
import numpy as np
import pytest

from normops._halves import round_to, round_to_library

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)


def _table(dtype):
    """(values, bits) of every non-negative finite value of dtype, increasing, plus the
    first power of two beyond the largest, which stands for inf (its pattern is even, so
    the tie between the largest value and it rounds to inf, as IEEE says)."""
    if dtype == BF16:
        bits = np.arange(0x7F80, dtype=np.uint32)
        values = (bits << 16).view(np.float32).astype(np.float64)   # exact
        beyond = 2.0 ** 128
    else:
        bits = np.arange(0x7C00, dtype=np.uint32)
        values = bits.astype(np.uint16).view(np.float16).astype(np.float64)
        beyond = 65536.0
    return np.append(values, beyond), np.append(bits, bits[-1] + 1)


def brute_round_bits(values, dtype):
    """The bit patterns (uint16) of float64 ``values`` correctly rounded to dtype."""
    table, bits = _table(dtype)
    a = np.abs(values)
    nan = np.isnan(values)
    a = np.where(nan, 0.0, a)
    lo = np.clip(np.searchsorted(table, a, side="right") - 1, 0, len(table) - 1)
    hi = np.minimum(lo + 1, len(table) - 1)
    below, above = a - table[lo], table[hi] - a          # exact (Sterbenz) for a in [lo, hi]
    pick_hi = (above < below) | ((above == below) & (bits[lo] % 2 == 1))
    out = np.where(pick_hi, bits[hi], bits[lo])
    out = np.where(a >= table[-1], bits[-1], out)        # at or beyond 2^(emax+1): inf
    out = np.where(np.signbit(values), out | 0x8000, out)
    nan_bits = 0x7FC0 if dtype == BF16 else 0x7E00
    return np.where(nan, nan_bits, out).astype(np.uint16)


def _assert_bits(got, values, dtype):
    got_bits = np.asarray(got).view(np.uint16)
    want = brute_round_bits(values, dtype)
    nan = np.isnan(values)
    assert np.isnan(np.asarray(got, np.float32)[nan]).all()
    bad = np.flatnonzero((got_bits != want) & ~nan)
    assert bad.size == 0, [(values[i], hex(got_bits[i]), hex(want[i])) for i in bad[:5]]


def _float32_cases():
    """float32 bit patterns: every high half with low halves that decide a rounding
    (0, 1, just below/at/above the tie, all ones), and every low half under high halves
    at the edges (zero, subnormals, 1, the largest finite, negative)."""
    high = np.arange(1 << 16, dtype=np.uint32) << 16
    lows = np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x1234, 0xC000], np.uint32)
    a = (high[:, None] | lows[None, :]).ravel()
    edges = np.array([0x0000, 0x0001, 0x007F, 0x0080, 0x3F80, 0x3F81, 0x7F7E, 0x7F7F,
                      0x8000, 0xBF80, 0xFF7F], np.uint32) << 16
    b = (edges[:, None] | np.arange(1 << 16, dtype=np.uint32)[None, :]).ravel()
    return np.concatenate([a, b]).view(np.float32)


def test_ml_dtypes_float32_to_bfloat16_is_round_to_nearest_even():
    # round_to relies on it for its second rounding
    f32 = _float32_cases()
    with np.errstate(invalid="ignore"):   # NaN patterns among the cases
        _assert_bits(f32.astype(BF16), f32.astype(np.float64), BF16)


def test_round_to_bfloat16_from_float32_values():
    f32 = _float32_cases()
    with np.errstate(invalid="ignore"):   # NaN patterns among the cases
        _assert_bits(round_to(f32.astype(np.float64), BF16), f32.astype(np.float64), BF16)


def _hard_float64(dtype, n=200_000, seed=0):
    """Random float64 across the dtype's range, and values at, just inside and just
    outside the midpoints between neighbouring half values (where double rounding
    goes wrong), with either sign; NaN, infinities, zeros and overflow."""
    rng = np.random.default_rng(seed)
    table, _ = _table(dtype)
    i = rng.integers(0, len(table) - 1, n)
    mid = (table[i] + table[i + 1]) / 2            # exact in float64
    k = rng.choice([-3, -1, 0, 1, 3, 2.0 ** 20], n)
    near = mid * (1 + k * 2.0 ** -52)
    spread = table[i] + rng.random(n) * (table[i + 1] - table[i])
    top = np.log2(table[-1])
    wide = rng.choice([-1, 1], n) * 2.0 ** rng.uniform(-160 if dtype == BF16 else -30, top + 2, n)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, -1e300, 5e-324,
                        1 + 2.0 ** -8 + 2.0 ** -40, 1 + 2.0 ** -11 + 2.0 ** -40])
    signs = rng.choice([-1.0, 1.0], 3 * n)
    return np.concatenate([np.concatenate([mid, near, spread]) * signs, wide, special])


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
def test_round_to_float64_is_correctly_rounded(dtype):
    values = _hard_float64(dtype)
    with np.errstate(over="ignore"):
        _assert_bits(round_to(values, dtype), values, dtype)


def test_round_to_fixes_the_double_rounding_example():
    v = np.array([1 + 2.0 ** -8 + 2.0 ** -40])
    assert round_to(v, BF16).astype(np.float64)[0] == 1.0078125


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_torch_rounding_matches(name):
    torch = pytest.importorskip("torch")
    dtype = BF16 if name == "bfloat16" else F16
    values = _hard_float64(dtype, n=20_000, seed=1)
    got = round_to_library(None, torch.from_numpy(values), getattr(torch, name))
    bits = got.view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(values)
    want = brute_round_bits(values, dtype)
    assert (bits[~nan] == want[~nan]).all()
    assert torch.isnan(got[torch.from_numpy(nan)]).all()
