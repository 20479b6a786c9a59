"""Tolerances keyed by dtype, and the comparison every property uses.

An implementation computes in its working precision and rounds once per stored result,
but BN's outputs are differences of larger terms: y = a*x + b with a large offset in x,
dx = p*dy + q*x + s. So each result is held to ``tol`` times the size of the terms it is
made of (its *scale*), not to its own size, which may cancel to near 0.
"""
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._typing import ArrayLike, DTypeLike
from ._cases import Case
from ._dtypes import HALVES, finfo, is_float, ulp

# float32: about 80 units in the last place, room for a few roundings of the terms;
# float64: 1e-10, room for a few digits lost to cancellation, while float32 arithmetic
# leaking into a float64 op (errors near 1e-7) still fails.
# float16 (eps 2^-10) and bfloat16 (eps 2^-7): 4 eps, that is 8 half-ulps of the terms.
# A half result is computed wider (float32 or more: a half accumulator is useless past a
# few hundred values) and rounded once, an error of eps/2 of itself; a property's
# expected value may be built from inputs it rounded to the half dtype too (identity
# recovery's gamma = sigma_B and beta = mu_B: eps/2 of each of those terms), and compares
# two such results (permuted batch, affine change: eps/2 each). That is up to about 2 eps
# of the terms, and float32 arithmetic inside adds 1e-5 of them (0.01 eps of float16);
# 4 eps leaves room for that, while arithmetic in the half dtype itself (a running sum,
# E[x^2] - E[x]^2, both off by many eps at these sizes) fails.
#: The relative tolerance by dtype of x: 1e-5 for float32, 1e-10 for float64, 4 eps for
#: float16 and bfloat16.
TOL: dict[np.dtype[Any], float] = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10,
                                   **{half: 4 * float(finfo(half).eps) for half in HALVES}}


def tolerance(dtype: DTypeLike) -> float:
    """Give the kit's relative tolerance for results computed in a dtype.

    Parameters
    ----------
    dtype : dtype-like
        The dtype of x: the precision the op computes in.

    Returns
    -------
    float
        ``TOL[dtype]``; 4 eps of the dtype for one not in ``TOL`` (a bfloat16 made after
        the kit's import found no ml_dtypes).

    Raises
    ------
    TypeError
        If ``dtype`` is not a NumPy dtype or anything ``numpy.dtype`` accepts.
    """
    dtype = np.dtype(dtype)
    if dtype not in TOL:   # bfloat16 made after the kit's import found no ml_dtypes
        return 4 * float(finfo(dtype).eps)
    return TOL[dtype]


def assert_close(actual: ArrayLike, expected: ArrayLike, dtype: DTypeLike = None, *,
                 tol: float | None = None, scale: ArrayLike | None = None,
                 what: str = "") -> None:
    """Assert ``|actual - expected| <= tol * (|expected| + scale)`` elementwise.

    ``scale`` is the size of the terms the result was computed from, so that a result
    that cancels far below its terms is held to their precision, not to its own size.

    Parameters
    ----------
    actual : array_like
        The result under test.
    expected : array_like
        The value it should have, of the same shape.
    dtype : dtype-like, optional
        The dtype of x, which sets the tolerance (``tolerance(dtype)``) and, unless
        ``actual`` is a float array, the range. Default: ``expected``'s dtype.
    tol : float, optional
        The relative tolerance instead of ``tolerance(dtype)``.
    scale : array_like, optional
        The size of the terms the result was computed from, broadcastable against
        ``expected`` (e.g. per channel). Default: max|expected| over its finite elements.
    what : str, optional
        The result's name, which the message starts with.

    Raises
    ------
    AssertionError
        If the shapes differ (the message names both), or if any element is beyond its
        tolerance: the message names ``what``, the worst element (by its error over its
        bound) with its actual and expected values, its tolerance and the terms of it,
        and how many elements are beyond theirs, all as plain numbers.

    Notes
    -----
    NaNs must match; infinities must be equal. A result is only asked to be as exact as
    ``dtype`` can hold it: an expected value beyond its largest finite value is its
    infinity, and errors below its smallest normal number (where it has no relative
    precision left) pass. The range is that of ``actual``'s dtype when it is a float
    array (float32 dgamma or running statistics of half x), else ``dtype``'s; the
    tolerance is ``dtype``'s (x's: the precision the op computes in).
    """
    dtype = np.dtype(dtype or np.asarray(expected).dtype)
    if tol is None:
        tol = tolerance(dtype)
    stored = getattr(actual, "dtype", None)
    stored = np.dtype(stored) if stored is not None and is_float(stored) else dtype
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    info = finfo(stored) if is_float(stored) else np.finfo(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = np.where(np.abs(expected) > info.max, expected.astype(info.dtype), expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape}, expected {expected.shape}")
    if scale is None:
        scale = np.max(np.abs(expected), initial=0.0, where=np.isfinite(expected))
    bound = np.broadcast_to(tol * (np.abs(expected) + scale) + float(info.tiny), expected.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.abs(actual - expected)
        ok = (error <= bound) | (actual == expected) | (np.isnan(actual) & np.isnan(expected))
        if ok.all():
            return
        excess = np.where(ok, 0.0, np.where(bound > 0, error / bound, np.inf))
        excess[np.isnan(excess)] = np.inf
    i = np.unravel_index(np.argmax(excess), excess.shape)
    raise AssertionError(
        f"{what}: worst error {error[i]:.3g} at {tuple(map(int, i))} (actual "
        f"{float(actual[i])!r}, expected {float(expected[i])!r}) against a tolerance of "
        f"{bound[i]:.3g} "
        f"= {tol:g} x (|expected| + scale {np.broadcast_to(scale, expected.shape)[i]:.3g}); "
        f"{np.count_nonzero(~ok)} of {ok.size} elements beyond their tolerance")


def term_scales(case: Case, mean: ArrayLike, invstd: ArrayLike, r: ArrayLike | None = None,
                d: ArrayLike | None = None, training: bool = True) -> dict[str, NDArray[Any]]:
    """Give per channel the size of the terms each result of a step is made of.

    The results are y = a*x + b and dx = p*dy + q*x + s, and
    dgamma = sum(dy * (r * invstd * (x - mean) + d)), dbeta = sum(dy), where x - mean is
    only as exact as the mean, a sum of values up to max|x|.

    Parameters
    ----------
    case : Case
        The step's inputs.
    mean, invstd : array_like
        The per-channel statistics the op normalized with.
    r, d : array_like, optional
        BRN's per-channel correction (None for BN).
    training : bool, optional
        Whether the step trains (dx then has the terms of the batch statistics' gradient).

    Returns
    -------
    dict of str to numpy.ndarray
        The scales of "y" and "dx" (shaped to broadcast against x) and of "dgamma" and
        "dbeta" (shape (C,)), in float64.
    """
    scale = np.abs(invstd * (1.0 if r is None else r))
    gain = scale if case.gamma is None else scale * np.abs(case.gamma.astype(np.float64))
    shift = 0.0 if case.beta is None else np.abs(case.beta.astype(np.float64))
    x_max = np.abs(case.x).max(axis=case.reduce_axes).astype(np.float64)
    dy_max = np.abs(case.dy).max(axis=case.reduce_axes).astype(np.float64)
    dy_sum = case.channel_sum(np.abs(case.dy))
    dx = gain * dy_max
    if training:
        # q = -p * invstd (invstd * sum(dy * (x - mean)) / m) multiplies x, offset and all
        # (grouped so that no factor under- or overflows on its own: invstd^3 does at
        # sigma = 1e104)
        centred = case.x.astype(np.float64) - case.bc(mean)
        w = invstd * (invstd * np.abs(case.channel_sum(case.dy * centred)) / case.m)
        dx = gain * (dy_max + w * x_max)
    d = 0.0 if d is None else np.abs(d)
    return dict(y=case.bc(gain * x_max + shift), dx=case.bc(dx),
                dgamma=(scale * (x_max + np.abs(mean)) + d) * dy_sum, dbeta=dy_sum)


def variance_floor(case: Case) -> NDArray[np.float64]:
    """Give per channel how far the batch variance is known.

    Its mean is a sum of values up to max|x|, known to tol * max|x|, which moves the
    variance by up to the square of that (all that a constant channel's variance is made
    of).

    Parameters
    ----------
    case : Case
        The inputs.

    Returns
    -------
    numpy.ndarray
        ``(tol * max|x|) ** 2`` per channel, in float64, with tol x's ``tolerance``.
    """
    x_max = np.abs(case.x).max(axis=case.reduce_axes).astype(np.float64)
    floor: NDArray[np.float64] = (tolerance(case.x.dtype) * x_max) ** 2
    return floor


def running_scales(case: Case) -> dict[str, NDArray[np.float64]]:
    """Give per channel the size of the terms of the running-statistics updates.

    The updates are ``(1 - momentum) * running + momentum * batch``; the size includes
    how far the batch statistics are known (see ``variance_floor``).

    Parameters
    ----------
    case : Case
        The inputs of a training step.

    Returns
    -------
    dict of str to numpy.ndarray
        The scales of "running_mean", "running_var" (BN) and "running_std" (BRN), per
        channel, in float64.
    """
    mean, var = case.batch_mean_var()
    keep, mom = 1.0 - case.momentum, case.momentum
    tol = tolerance(case.x.dtype)
    x_max = np.abs(case.x).max(axis=case.reduce_axes).astype(np.float64)
    old_mean, old_second = (np.abs(a.astype(np.float64)) for a in case.running())
    sigma = np.sqrt(var + case.eps)
    unknown = variance_floor(case) / tol   # as a scale: tol * scale is the floor
    return dict(running_mean=keep * old_mean + mom * x_max,
                running_var=keep * old_second + mom * (var * case.m / (case.m - 1) + unknown),
                running_std=keep * old_second + mom * (sigma + unknown / (2 * sigma)))
