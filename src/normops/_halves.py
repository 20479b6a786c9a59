"""Half precision (float16, bfloat16): which dtypes go together, and rounding a float64
result to a half dtype once, correctly.

bfloat16 NumPy arrays are ``ml_dtypes.bfloat16``, an optional dependency: an array of
that dtype can only exist when ml_dtypes is installed, so normops recognizes it by the
dtype's name and imports ml_dtypes only where it must make one.

Why ``round_to`` exists: some casts from float64 to a half dtype go through float32
(ml_dtypes' bfloat16 in some versions, PyTorch's float16 and bfloat16), which rounds
twice: 1 + 2^-8 + 2^-40 becomes 1 + 2^-8 in float32, a tie, then 1.0 in bfloat16,
where the correctly rounded result is 1 + 2^-7. Rounding to float32 "to odd" first
(an inexact result keeps a set lowest bit, a sticky bit) makes the second rounding
correct, since float32 has more than two bits beyond either half format's precision.
"""
import numpy

BF16_INSTALL = 'pip install "normops[bf16]" (or: pip install ml_dtypes)'

HALF_NAMES = ("float16", "bfloat16")
F16 = numpy.dtype(numpy.float16)
F32 = numpy.dtype(numpy.float32)
F64 = numpy.dtype(numpy.float64)


def name_of(dtype):
    """A dtype's plain name, for NumPy's and other libraries' dtypes ("bfloat16")."""
    return str(dtype).rpartition(".")[2]


def is_half(dtype):
    return name_of(dtype) in HALF_NAMES


def bfloat16():
    """ml_dtypes' bfloat16 NumPy dtype, or an ImportError saying what to install."""
    try:
        import ml_dtypes
    except ImportError as exc:
        raise ImportError(f"bfloat16 NumPy arrays need ml_dtypes: {BF16_INSTALL}") from exc
    return numpy.dtype(ml_dtypes.bfloat16)


def numpy_dtype(name):
    """The NumPy dtype of a float dtype name ("bfloat16" through ml_dtypes)."""
    return bfloat16() if name == "bfloat16" else numpy.dtype(name)


ALLOWED = ("float32 x with float32, float64 with float64, float16 with float16 or float32, "
           "bfloat16 with bfloat16 or float32")


def wrong_pair(name, dtype, x_dtype):
    """The TypeError for a per-channel array whose dtype does not go with x's."""
    theirs, ours = name_of(dtype), name_of(x_dtype)
    wanted = f"float32 or {ours}" if ours in HALF_NAMES else ours
    raise TypeError(f"{name} has dtype {theirs} but x has dtype {ours}; with {ours} x, {name} "
                    f"must be {wanted} (allowed: {ALLOWED})")


# -- rounding float64 once -------------------------------------------------------------

def _to_float32_odd(values):
    """float64 -> float32 rounded to odd: the float32 nearest toward zero, with its lowest
    bit set where the cast was inexact (NaN and exact values unchanged)."""
    with numpy.errstate(over="ignore", invalid="ignore"):
        near = values.astype(F32)
        back = near.astype(F64)
    inexact = (back != values) & ~numpy.isnan(values)
    if not inexact.any():
        return near
    bits = near.view(numpy.uint32).copy()
    # the cast rounded away from zero: step back one float32 (inf -> the largest finite)
    bits -= (inexact & (numpy.abs(back) > numpy.abs(values))).astype(numpy.uint32)
    bits |= inexact.astype(numpy.uint32)
    return bits.view(F32)


def round_to(values, dtype):
    """NumPy float64 ``values`` rounded once (to nearest, ties to even) to ``dtype``;
    NaN and inf preserved. NumPy's float64 -> float16 and -> float32 casts are correct
    already; bfloat16 goes through float32 rounded to odd, then ml_dtypes' float32 ->
    bfloat16 cast (to nearest even)."""
    dtype = numpy.dtype(dtype)
    if dtype.name != "bfloat16":
        return numpy.asarray(values).astype(dtype)
    values = numpy.asarray(values, dtype=F64)
    odd = _to_float32_odd(values)
    with numpy.errstate(invalid="ignore"):   # NaN stays NaN, quietly
        return odd.astype(dtype)


# -- other array libraries -------------------------------------------------------------

def round_to_library(xp, values, dtype):
    """round_to for an array-API library's ``values`` (in its wide dtype) and target
    ``dtype``: PyTorch rounds to odd in float32 with bit operations on an int32 view (its
    casts from float64 to half go through float32); other libraries' own cast is used
    (CuPy's float64 -> float16 is NumPy's correct one)."""
    if values.dtype == dtype:
        return values
    to = getattr(values, "to", None)
    if callable(to) and is_half(dtype) and name_of(values.dtype) == "float64":
        return _torch_odd(values).to(dtype)
    convert = getattr(xp, "astype", None)
    return convert(values, dtype) if convert is not None else values.astype(dtype)


def _torch_odd(values):
    """_to_float32_odd for a float64 torch tensor."""
    import torch
    near = values.to(torch.float32)
    back = near.to(torch.float64)
    inexact = (back != values) & ~torch.isnan(values)
    away = inexact & (back.abs() > values.abs())
    bits = near.view(torch.int32) - away.to(torch.int32)
    bits = bits | inexact.to(torch.int32)
    return bits.view(torch.float32)


def grad_dtype(x_dtype, gamma, float32=F32):
    """The dtype of dgamma and dbeta: gamma's; without gamma, x's, or float32 (``float32``:
    the array library's) for half x (where a gamma would have been float32 master
    weights or half: float32 loses nothing)."""
    if gamma is not None:
        return gamma.dtype
    return float32 if is_half(x_dtype) else x_dtype


def cast(xp, values, dtype):
    """``values`` (float64, or the wide dtype of a device without it) as ``dtype``,
    rounded once: round_to for NumPy arrays, round_to_library for other libraries'."""
    if values.dtype == dtype:
        return values
    if isinstance(values, numpy.ndarray):
        return round_to(values, dtype)
    return round_to_library(xp, values, dtype)
