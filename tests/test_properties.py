"""Invariants of BN and BRN that hold for every backend."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import normops
from runs import assert_steps_close, bn_step, brn_step
from strategies import cases
from tolerances import TOL, assert_close


def channel_sum(case, v):
    return np.asarray(v, dtype=np.float64).sum(axis=case.reduce_axes)


@given(case=cases(affine=False))
def test_training_output_has_zero_mean_and_unit_variance(backend, case):
    y, _ = normops.batch_norm(case.x, eps=case.eps, axis=case.axis, backend=backend)
    _, var = case.batch_mean_var()
    y = y.astype(np.float64)
    mean_y = y.mean(axis=case.reduce_axes)
    assert np.all(np.abs(mean_y) <= 10 * TOL[case.x.dtype]), mean_y
    # exactly var / (var + eps): 1 up to the eps the variance was padded with
    assert_close(((y - case.bc(mean_y)) ** 2).mean(axis=case.reduce_axes), var / (var + case.eps),
                 case.x.dtype, what="variance")


@given(case=cases(affine=False))
def test_identity_recovery(backend, case):
    mean, var = case.batch_mean_var()
    gamma = np.sqrt(var + case.eps).astype(case.x.dtype)
    beta = mean.astype(case.x.dtype)
    y, _ = normops.batch_norm(case.x, gamma, beta, eps=case.eps, axis=case.axis, backend=backend)
    assert_close(y, case.x, what="y")


@given(case=cases(renorm=True))
def test_batch_renorm_with_rmax_1_dmax_0_is_batch_norm(backend, case):
    brn = brn_step(case, backend, rmax=1.0, dmax=0.0)
    bn = bn_step(case, backend)
    assert_steps_close(brn, bn, case, keys=("y", "dx", "dgamma", "dbeta", "running_mean"))
    np.testing.assert_array_equal(brn["saved"].r, 1.0)
    np.testing.assert_array_equal(brn["saved"].d, 0.0)


@given(case=cases(), convention=st.sampled_from(["pytorch", "keras"]))
def test_batch_norm_running_stat_update_formula(backend, case, convention):
    step = bn_step(case, backend, convention=convention)
    mean, var = case.batch_mean_var()
    var_update = var * case.m / (case.m - 1) if convention == "pytorch" else var
    mom = case.momentum
    rm0, rv0 = (a.astype(np.float64) for a in case.running())
    assert_close(step["running_mean"], (1 - mom) * rm0 + mom * mean, case.x.dtype, what="mean")
    assert_close(step["running_var"], (1 - mom) * rv0 + mom * var_update, case.x.dtype, what="var")
    assert step["running_mean"].dtype == case.x.dtype


@given(case=cases(renorm=True), clip=st.sampled_from([(3.0, 5.0), (1.1, 0.2)]))
def test_batch_renorm_r_d_and_running_stat_update_formula(backend, case, clip):
    rmax, dmax = clip
    step = brn_step(case, backend, rmax=rmax, dmax=dmax)
    mean, var = case.batch_mean_var()
    sigma_b = np.sqrt(var + case.eps)
    mu0, sigma0 = (a.astype(np.float64) for a in case.running())
    # r and d come from the running statistics as they were before this step
    assert_close(step["saved"].r, np.clip(sigma_b / sigma0, 1 / rmax, rmax), case.x.dtype, what="r")
    assert_close(step["saved"].d, np.clip((mean - mu0) / sigma0, -dmax, dmax), case.x.dtype, what="d")
    mom = case.momentum
    assert_close(step["running_mean"], mu0 + mom * (mean - mu0), case.x.dtype, what="mu")
    assert_close(step["running_std"], sigma0 + mom * (sigma_b - sigma0), case.x.dtype, what="sigma")


@given(case=cases(training=False))
def test_batch_norm_eval_formulas(backend, case):
    step = bn_step(case, backend, training=False)
    rm, rv = (a.astype(np.float64) for a in case.running())
    g = np.ones_like(rm) if case.gamma is None else case.gamma.astype(np.float64)
    b = np.zeros_like(rm) if case.beta is None else case.beta.astype(np.float64)
    invstd = 1 / np.sqrt(rv + case.eps)
    x_hat = (case.x - case.bc(rm)) * case.bc(invstd)
    assert_close(step["y"], case.bc(g) * x_hat + case.bc(b), case.x.dtype, what="y")
    assert_close(step["dx"], case.dy * case.bc(g * invstd), case.x.dtype, what="dx")
    assert_close(step["dgamma"], channel_sum(case, case.dy * x_hat), case.x.dtype, what="dgamma")
    assert_close(step["dbeta"], channel_sum(case, case.dy), case.x.dtype, what="dbeta")
    # eval mode never touches the running statistics
    np.testing.assert_array_equal(step["running_mean"], case.running_mean)
    np.testing.assert_array_equal(step["running_var"], case.running_second)


@given(case=cases(training=False, renorm=True))
def test_batch_renorm_eval_formulas(backend, case):
    step = brn_step(case, backend, training=False)
    mu, sigma = (a.astype(np.float64) for a in case.running())
    g = np.ones_like(mu) if case.gamma is None else case.gamma.astype(np.float64)
    b = np.zeros_like(mu) if case.beta is None else case.beta.astype(np.float64)
    x_hat = (case.x - case.bc(mu)) / case.bc(sigma)
    assert_close(step["y"], case.bc(g) * x_hat + case.bc(b), case.x.dtype, what="y")
    assert_close(step["dx"], case.dy * case.bc(g / sigma), case.x.dtype, what="dx")
    assert_close(step["dgamma"], channel_sum(case, case.dy * x_hat), case.x.dtype, what="dgamma")
    assert_close(step["dbeta"], channel_sum(case, case.dy), case.x.dtype, what="dbeta")
    np.testing.assert_array_equal(step["running_mean"], case.running_mean)
    np.testing.assert_array_equal(step["running_std"], case.running_second)


@given(case=cases())
def test_eval_with_batch_statistics_equals_training(backend, case):
    mean, var = case.batch_mean_var()
    train_y, saved = normops.batch_norm(case.x, case.gamma, case.beta, eps=case.eps,
                                        axis=case.axis, backend=backend)
    # the statistics rounded to x's dtype shift y by up to invstd * |x| ulps: the term scale
    rm, rv = mean.astype(case.x.dtype), var.astype(case.x.dtype)
    eval_y, _ = normops.batch_norm(case.x, case.gamma, case.beta, rm, rv, training=False,
                                   eps=case.eps, axis=case.axis, backend=backend)
    assert_steps_close(dict(y=eval_y), dict(y=train_y, saved=saved), case, keys=("y",))


@given(case=cases())
def test_training_gradient_channel_sums(backend, case):
    # sum dx = 0, and sum dx * x_hat = gamma * invstd * sum(dy * x_hat) * eps / (var + eps):
    # zero as eps -> 0 (the padding eps keeps x_hat's variance just below 1)
    step = bn_step(case, backend)
    mean, var = case.batch_mean_var()
    invstd = 1 / np.sqrt(var + case.eps)
    x_hat = (case.x - case.bc(mean)) * case.bc(invstd)
    g = 1.0 if case.gamma is None else case.gamma.astype(np.float64)
    dx = step["dx"].astype(np.float64)
    # the size of each channel's terms, against which "zero" is measured
    scale = channel_sum(case, np.abs(dx) * (1 + np.abs(x_hat)) + np.abs(case.dy * x_hat) * np.abs(case.bc(g * invstd)))
    tol = 10 * TOL[case.x.dtype]
    assert np.all(np.abs(channel_sum(case, dx)) <= tol * scale)
    expected = g * invstd * channel_sum(case, case.dy * x_hat) * case.eps / (var + case.eps)
    assert np.all(np.abs(channel_sum(case, dx * x_hat) - expected) <= tol * scale)


@given(case=cases(), data=st.data())
def test_permutation_of_the_batch_permutes_the_output(backend, case, data):
    outer_axes = case.reduce_axes
    batch_axis = data.draw(st.sampled_from(outer_axes))
    perm = np.random.default_rng(0).permutation(case.x.shape[batch_axis])
    first = bn_step(case, backend)
    permuted = case.replace(x=np.take(case.x, perm, batch_axis),
                            dy=np.take(case.dy, perm, batch_axis))
    second = bn_step(permuted, backend)
    expected = {**first, "y": np.take(first["y"], perm, batch_axis),
                "dx": np.take(first["dx"], perm, batch_axis)}
    assert_steps_close(second, expected, case)


@given(case=cases(dtypes=(np.float64,)), scale=st.sampled_from([0.5, 3.0]),
       shift=st.floats(-5, 5))
def test_batch_norm_is_invariant_to_affine_changes_of_its_input(backend, case, scale, shift):
    y, _ = normops.batch_norm(case.x, case.gamma, case.beta, eps=case.eps, axis=case.axis,
                              backend=backend)
    # eps is a variance: it scales with the input's square
    y2, _ = normops.batch_norm(case.x * scale + shift, case.gamma, case.beta,
                               eps=case.eps * scale ** 2, axis=case.axis, backend=backend)
    assert_close(y2, y, tol=1e-9, what="y")


@given(case=cases(), data=st.data())
def test_non_contiguous_and_reversed_views_match_contiguous_copies(backend, case, data):
    flip_axis = data.draw(st.integers(0, case.x.ndim - 1))
    reverse = tuple(slice(None, None, -1) if i == flip_axis else slice(None)
                    for i in range(case.x.ndim))
    wide = np.zeros(case.x.shape[:-1] + (2 * case.x.shape[-1],), case.x.dtype)
    wide[..., ::2] = case.x
    # a negative-stride view, and a strided view into a larger buffer
    for x_view, dy_view in ((case.x[reverse], case.dy[reverse]), (wide[..., ::2], case.dy)):
        view_case = case.replace(x=x_view, dy=dy_view)
        copy_case = case.replace(x=np.ascontiguousarray(x_view), dy=np.ascontiguousarray(dy_view))
        assert_steps_close(bn_step(view_case, backend), bn_step(copy_case, backend),
                           case)


@given(case=cases(), training=st.booleans())
def test_inputs_are_never_modified(backend, case, training):
    originals = {k: getattr(case, k).copy() for k in ("x", "dy", "gamma", "beta") if getattr(case, k) is not None}
    bn_step(case, backend, training=training)
    brn_step(case.as_renorm(), backend, training=training)
    for key, value in originals.items():
        np.testing.assert_array_equal(getattr(case, key), value, err_msg=key)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_and_inf_propagate_to_their_channel(backend):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 5))
    x[1, 1, 2] = np.nan
    x[2, 2, 0] = np.inf
    rm, rv = np.zeros(3), np.ones(3)
    y, _ = normops.batch_norm(x, None, None, rm, rv, backend=backend)
    assert np.all(np.isfinite(y[:, 0]))
    assert np.all(np.isnan(y[:, 1])) and np.all(np.isnan(y[:, 2]))
    assert np.isfinite(rm[0]) and np.isnan(rm[1]) and not np.isfinite(rm[2])
    y_eval, _ = normops.batch_norm(x, None, None, np.zeros(3), np.ones(3), training=False,
                                   backend=backend)
    assert np.isnan(y_eval[1, 1, 2]) and np.isinf(y_eval[2, 2, 0])
    assert np.isfinite(np.delete(y_eval.ravel(), [1 * 15 + 1 * 5 + 2, 2 * 15 + 2 * 5 + 0])).all()


@given(case=cases(), renorm=st.booleans(), data=st.data())
def test_strided_parameters_and_running_stats_work_and_are_updated_in_place(backend, case, renorm, data):
    case = case.as_renorm() if renorm else case
    step = brn_step if renorm else bn_step
    reverse = data.draw(st.booleans())

    def strided(v):
        if v is None:
            return None
        buf = np.zeros(2 * v.size, v.dtype)
        view = buf[::-2] if reverse else buf[::2]
        view[...] = v
        return view

    expected = step(case, backend)
    strided_case = case.replace(**{k: strided(getattr(case, k)) for k in
                                   ("gamma", "beta", "running_mean", "running_second")})
    running = (strided_case.running_mean, strided_case.running_second)
    actual = step(strided_case, backend, running=running)
    assert actual["running_mean"] is running[0]
    assert_steps_close(actual, expected, case)


@given(case=cases(affine=False), renorm=st.booleans(), training=st.booleans())
def test_absent_gamma_and_beta_mean_one_and_zero(backend, case, renorm, training):
    case = case.as_renorm() if renorm else case
    step = brn_step if renorm else bn_step
    channels = case.x.shape[case.axis]
    ones = case.replace(gamma=np.ones(channels, case.x.dtype), beta=np.zeros(channels, case.x.dtype))
    assert_steps_close(step(case, backend, training=training),
                       step(ones, backend, training=training), case)
