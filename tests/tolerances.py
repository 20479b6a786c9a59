"""Tolerances keyed by dtype, and the comparison every test uses."""
import numpy as np

# Both sides compute in float64; float32 results differ by the final rounding.
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


def assert_close(actual, expected, dtype=None, *, tol=None, scale=None, what=""):
    """|actual - expected| <= tol * (|expected| + scale) elementwise.

    ``scale`` (broadcastable, e.g. per channel) is the size of the terms the result was
    computed from; results that cancel to near 0 are held to it, not to 0. Its default
    is max|expected|. NaNs must match; infinities must be equal.
    """
    if tol is None:
        tol = TOL[np.dtype(dtype or np.asarray(expected).dtype)]
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if scale is None:
        scale = np.max(np.abs(expected), initial=0.0, where=np.isfinite(expected))
    bound = tol * (np.abs(expected) + scale)
    with np.errstate(invalid="ignore"):
        ok = (np.abs(actual - expected) <= bound) | (actual == expected)
    ok |= np.isnan(actual) & np.isnan(expected)
    if not ok.all():
        i = np.unravel_index(np.argmax(~ok), ok.shape)
        raise AssertionError(
            f"{what}: {np.count_nonzero(~ok)} of {ok.size} elements differ beyond tol={tol:g}; "
            f"first at {tuple(map(int, i))}: actual {actual[i]!r}, expected {expected[i]!r}, "
            f"allowed {np.broadcast_to(bound, ok.shape)[i]!r}")
