"""float16 and bfloat16: the rounding contract, as an oracle.

normops sums in float64 and rounds each output once to its dtype, so every output of a
half step is within half an ulp of the exact result. ``half_outputs_within_one_ulp``
holds an implementation to 1 ulp of the float64 result of the reference backend on the
same values upcast to float64: it passes an implementation that computes in float64, or
in float32 where float32 is exact enough, and rounds once; it fails one that computes or
accumulates in the half dtype (each operation rounded: a few ulps), which the other
properties' term-relative tolerances let through. A correctly rounded result is within
half an ulp; the bound of 1 ulp leaves room for the reference's own float64 roundings
and for a double rounding through float32 (float64 -> float32 -> bfloat16 misses by at
most an ulp at a tie, see normops._halves), which this property therefore does not
catch."""
from typing import Any

import numpy as np
from hypothesis import strategies as st
from numpy.typing import NDArray

from .._halves import round_to
from .._typing import ArrayLike
from ._bn_properties import draw_cases
from ._cases import Case
from ._dtypes import is_float, is_half, ulp
from ._implementation import REFERENCE, Implementation, Step, bn_step, brn_step, step_scales
from ._property import prop
from .strategies import renorm_clips

# the allowance for results far below the size of their terms (dgamma = sum(dy x_hat) or
# dbeta = sum(dy) cancelling to 0, a running mean near 0): the float64 reference is exact
# only to its own roundings, about 1e-16 of the terms (and an implementation summing in
# float64 in another order differs from it by that much), so a result is also accepted
# within 1e-12 of its terms: thousands of float64 ulps, a millionth of what float32
# arithmetic leaves (1e-7 of the terms)
CANCELLATION = 1e-12


def half_dtypes(impl: Implementation) -> tuple[np.dtype[Any], ...]:
    return tuple(d for d in map(np.dtype, impl.dtypes) if is_half(d))


def upcast(case: Case) -> Case:
    """The case with x, dy, gamma, beta and the running statistics in float64 (the same
    values: every half and float32 value is a double)."""
    wide = {k: getattr(case, k).astype(np.float64) for k in
            ("x", "dy", "gamma", "beta", "running_mean", "running_second")
            if getattr(case, k) is not None}
    return case.replace(**wide)


def ulp_error(actual: NDArray[Any], expected: ArrayLike,
              scale: ArrayLike) -> NDArray[np.float64]:
    """Per element, |actual - expected| in ulps of ``actual``'s dtype at |expected|, less
    the cancellation allowance (0 where it covers the error); 0 where actual is the
    expected value rounded (an overflow to inf included) or both are NaN."""
    a = np.asarray(actual).astype(np.float64)
    e = np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        same = (a == round_to(e, actual.dtype).astype(np.float64)) | (np.isnan(a) & np.isnan(e))
        error = np.maximum(np.abs(a - e) - CANCELLATION * np.broadcast_to(scale, e.shape), 0.0)
        ulps = error / ulp(e, actual.dtype)
    return np.where(same, 0.0, np.where(np.isnan(ulps), np.inf, ulps))


def assert_within_one_ulp(actual: Any, expected: ArrayLike, scale: ArrayLike, what: str) -> None:
    if not (isinstance(actual, np.ndarray) and is_float(actual.dtype)):
        raise AssertionError(f"{what}: {type(actual).__name__}, expected a float array")
    if actual.shape != np.shape(expected):
        raise AssertionError(f"{what}: shape {actual.shape}, expected {np.shape(expected)}")
    ulps = ulp_error(actual, expected, scale)
    if np.all(ulps <= 1.0):
        return
    i = np.unravel_index(np.argmax(ulps), ulps.shape)
    raise AssertionError(
        f"{what}: {ulps[i]:.3g} ulps of {actual.dtype} from the float64 result at "
        f"{tuple(map(int, i))} (actual {float(actual[i])!r}, float64 result "
        f"{float(np.asarray(expected)[i])!r}, rounded "
        f"{float(round_to(np.asarray(expected)[i], actual.dtype))!r}); "
        f"{np.count_nonzero(ulps > 1.0)} of {ulps.size} elements beyond 1 ulp")


@prop("batch_norm", lambda impl: dict(
    case=draw_cases(impl, dtypes=half_dtypes(impl)), training=st.booleans(),
    with_running=st.booleans(), convention=st.sampled_from(impl.conventions),
    renorm=st.booleans() if impl.renorm else st.just(False), clip=renorm_clips()), halves=True)
def half_outputs_within_one_ulp(impl: Implementation, case: Case, training: bool,
                                with_running: bool, convention: str, renorm: bool,
                                clip: tuple[float, float]) -> None:
    """float16/bfloat16 x: y, dx, dgamma, dbeta and the running stats are each within 1 ulp of their dtype of the float64 result (rounded once)."""
    # the float64 result: the reference backend on the same values upcast to float64;
    # each output is compared in its own dtype (y, dx: x's; dgamma, dbeta: gamma's or
    # float32; running statistics: theirs), element-wise, in ulps at the float64 value
    wide = upcast(case)
    options: dict[str, Any]
    got: Step
    want: Step
    if renorm:
        case, wide = case.as_renorm(), wide.replace(running_second=case.as_renorm().running_second
                                                    .astype(np.float64))
        options = dict(training=training, rmax=clip[0], dmax=clip[1])
        got, want = brn_step(impl, case, **options), brn_step(REFERENCE, wide, **options)
    else:
        options = dict(training=training, convention=convention,
                       with_running=with_running or not training)
        got, want = bn_step(impl, case, **options), bn_step(REFERENCE, wide, **options)
    scales = step_scales(wide, want)
    for key in ("y", "dx", "dgamma", "dbeta", "running_mean", "running_var", "running_std"):
        if want.get(key) is not None:
            assert_within_one_ulp(got[key], want[key], scales.get(key, 0.0), key)
