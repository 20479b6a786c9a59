"""The dtypes the kit draws: float32 and float64, and the half dtypes float16 and
bfloat16 (ml_dtypes' NumPy bfloat16, only where ml_dtypes imports: it is the optional
extra ``normops[bf16]``, and the kit runs without it, simply never drawing bfloat16)."""
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._halves import is_half as is_half  # re-exported for the kit's modules
from .._typing import ArrayLike, DTypeLike

FULL: tuple[np.dtype[Any], ...] = (np.dtype(np.float32), np.dtype(np.float64))


def _half_dtypes() -> tuple[np.dtype[Any], ...]:
    found = [np.dtype(np.float16)]
    try:
        import ml_dtypes
    except ImportError:   # pragma: no cover - depends on the environment
        return tuple(found)
    return tuple(found + [np.dtype(ml_dtypes.bfloat16)])


HALVES = _half_dtypes()
ALL = FULL + HALVES


def dtype(value: DTypeLike) -> np.dtype[Any]:
    """A NumPy dtype from a dtype, a type or a name ("bfloat16" needs ml_dtypes)."""
    if isinstance(value, str) and value == "bfloat16":
        from .._halves import bfloat16
        made: np.dtype[Any] = bfloat16()
        return made
    return np.dtype(value)


def finfo(value: DTypeLike) -> np.finfo[Any]:
    """np.finfo of a float dtype, bfloat16 included (ml_dtypes registers it with NumPy)."""
    info: np.finfo[Any] = np.finfo(dtype(value))
    return info


def is_float(value: DTypeLike) -> bool:
    """Whether ``value`` is one of the four float dtypes (bfloat16's kind is "V")."""
    return dtype(value).name in ("float16", "bfloat16", "float32", "float64")


def ulp(values: ArrayLike, dtype_: DTypeLike) -> NDArray[np.float64]:
    """The unit in the last place of ``dtype_`` at each |value| (float64): the spacing
    of the dtype's numbers in the binade holding it, the smallest subnormal spacing
    below the smallest normal number, and its largest spacing past its largest number."""
    info = finfo(dtype_)
    a = np.abs(np.asarray(values, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exponent = np.floor(np.log2(np.where(np.isnan(a), 1.0, a)))   # 0: -inf, clipped
    exponent = np.clip(exponent, np.log2(float(info.smallest_normal)), np.log2(float(info.max)))
    spacing: NDArray[np.float64] = np.ldexp(1.0, (exponent - info.nmant).astype(int))
    return spacing
