"""Tolerances keyed by dtype, and the comparison every test uses."""
import numpy as np

# Both sides compute in float64; float32 results differ by the final rounding.
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


def assert_close(actual, expected, dtype=None, *, tol=None, scale=None, what=""):
    """|actual - expected| <= tol * (|expected| + scale): relative, plus an absolute part
    scaled by ``scale``, the size of the terms the result was computed from (default
    max|expected|), so results that cancel to near 0 are not held to 0."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    tol = tol if tol is not None else TOL[np.dtype(dtype or expected.dtype)]
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    largest = float(np.max(np.abs(expected), initial=0.0))
    scale = largest if scale is None else max(scale, largest)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * max(scale, 1e-30),
                               err_msg=what, equal_nan=True)
