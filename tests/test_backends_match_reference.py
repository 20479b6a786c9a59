"""Every registered backend gives the reference backend's results (forward, running
statistics, backward) for BN and BRN, in training and eval mode. "reference-kernels"
makes this the check that the ops composed from the reference's four kernels equal its
literal whole ops."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from runs import assert_steps_close, bn_step, brn_step
from strategies import cases
from tolerances import assert_close


@given(case=cases(), training=st.booleans(), convention=st.sampled_from(["pytorch", "keras"]))
def test_batch_norm_matches_reference(backend, case, training, convention):
    expected = bn_step(case, "reference", training=training, convention=convention)
    actual = bn_step(case, backend, training=training, convention=convention)
    assert_steps_close(actual, expected, case)


@given(case=cases(training=True))
def test_batch_norm_without_running_stats_matches_reference(backend, case):
    expected = bn_step(case, "reference", with_running=False)
    actual = bn_step(case, backend, with_running=False)
    assert_steps_close(actual, expected, case)


@given(case=cases(renorm=True), training=st.booleans(),
       clip=st.sampled_from([(3.0, 5.0), (1.0, 0.0), (1.2, 0.1), (float("inf"), float("inf"))]))
def test_batch_renorm_matches_reference(backend, case, training, clip):
    rmax, dmax = clip
    expected = brn_step(case, "reference", training=training, rmax=rmax, dmax=dmax)
    actual = brn_step(case, backend, training=training, rmax=rmax, dmax=dmax)
    assert_steps_close(actual, expected, case)


@pytest.mark.parametrize("op", ["bn", "brn"])
def test_saved_state_matches_reference(backend, op):
    import numpy as np
    from strategies import Case
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, (6, 4, 5))
    case = Case(x, rng.normal(size=x.shape), 1, rng.normal(size=4), rng.normal(size=4),
                rng.normal(size=4), rng.uniform(1, 2, 4), 0.1, 1e-5)
    step = bn_step if op == "bn" else brn_step
    expected, actual = step(case, "reference")["saved"], step(case, backend)["saved"]
    for field in ("mean", "invstd") + (("r", "d") if op == "brn" else ()):
        assert getattr(actual, field).dtype == np.float64
        assert_close(getattr(actual, field), getattr(expected, field), np.float64, what=field)
    assert actual.training and actual.axis == 1
