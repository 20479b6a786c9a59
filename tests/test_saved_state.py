"""What normops's forward ops hand to their backward ops (``saved``), which the kit
treats as opaque: the statistics and BRN's r and d, in float64, equal the reference's
and their formulas."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import normops
from normops.testing import assert_close, strategies


def renorm(case, backend, rmax, dmax):
    mu, sigma = case.running()
    return normops.batch_renorm(case.x, case.gamma, case.beta, mu, sigma, rmax=rmax, dmax=dmax,
                                eps=case.eps, axis=case.axis, backend=backend)[1]


@given(case=strategies.cases(), training=st.booleans())
def test_batch_norm_saved_state_matches_reference(backend, case, training):
    def saved(name):
        mean, var = case.running()
        return normops.batch_norm(case.x, None, None, mean, var, training=training,
                                  eps=case.eps, axis=case.axis, backend=name)[1]

    actual, expected = saved(backend), saved("reference")
    for field in ("mean", "invstd"):
        assert getattr(actual, field).dtype == np.float64, field
        assert_close(getattr(actual, field), getattr(expected, field), case.x.dtype,
                     scale=np.abs(case.x).max(axis=case.reduce_axes) if field == "mean" else None,
                     what=field)
    assert actual.training == training and actual.axis == case.axis % case.x.ndim
    assert actual.shape == case.x.shape


@given(case=strategies.cases(renorm=True), clip=strategies.renorm_clips())
def test_batch_renorm_r_and_d_follow_their_formulas(backend, case, clip):
    rmax, dmax = clip
    saved = renorm(case, backend, rmax, dmax)
    mean, var = case.batch_mean_var()
    sigma_b = np.sqrt(var + case.eps)
    mu, sigma = (a.astype(np.float64) for a in case.running())
    assert saved.r.dtype == saved.d.dtype == np.float64
    # r and d come from the running statistics as they were before this step
    assert_close(saved.r, np.clip(sigma_b / sigma, 1 / rmax, rmax), case.x.dtype, what="r")
    assert_close(saved.d, np.clip((mean - mu) / sigma, -dmax, dmax), case.x.dtype,
                 scale=np.abs(case.x).max(axis=case.reduce_axes) / sigma, what="d")
    if (rmax, dmax) == (1.0, 0.0):
        np.testing.assert_array_equal(saved.r, 1.0)
        np.testing.assert_array_equal(saved.d, 0.0)
