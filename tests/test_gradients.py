"""Analytic gradients against central finite differences of the forward ops, in float64.

The loss is L = sum(y * dy), so dL/dy = dy. BRN's training gradient treats r and d as
constants (stop_gradient); its x-gradient is checked by finite differences where the
clips saturate (r and d locally constant) and, in every regime, through the identity
BRN(x; gamma, beta) = BN(x; gamma * r, gamma * d + beta) with r, d fixed.
"""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import normops
from runs import assert_steps_close, bn_step, brn_step
from strategies import cases
from tolerances import assert_close

FD_TOL = 1e-6


def central_differences(f, v):
    """dL/dv for (L, size) = f(), perturbing ``v`` in place one element at a time, and
    the rounding noise of that estimate: 100 ulps of the size of the terms L sums (L
    itself may cancel far below them), over the step."""
    grad = np.zeros_like(v)
    h = 1e-6 * max(1.0, float(np.max(np.abs(v))))
    largest = 0.0
    for i in np.ndindex(v.shape):
        orig = v[i]
        v[i] = orig + h
        plus, size_plus = f()
        v[i] = orig - h
        minus, size_minus = f()
        v[i] = orig
        grad[i] = (plus - minus) / (2 * h)
        largest = max(largest, size_plus, size_minus)
    return grad, 100 * np.finfo(np.float64).eps * largest / h


def loss(y, dy):
    """L = sum(y * dy), so dL/dy = dy; and the size of its terms."""
    terms = y * dy
    return float(np.sum(terms)), float(np.sum(np.abs(terms)))


def assert_matches_differences(analytic, f, v, what):
    numeric, noise = central_differences(f, v)
    scale = float(np.max(np.abs(numeric)))
    np.testing.assert_allclose(analytic, numeric, rtol=FD_TOL, atol=FD_TOL * scale + noise,
                               err_msg=what)


def bn_loss(case, x, gamma, beta, training, backend):
    rm, rv = case.running()
    y, _ = normops.batch_norm(x, gamma, beta, rm, rv, training=training, eps=case.eps,
                              axis=case.axis, backend=backend)
    return loss(y, case.dy)


def brn_loss(case, x, gamma, beta, training, backend, rmax, dmax, running=None):
    rm, rs = running if running is not None else case.running()
    y, _ = normops.batch_renorm(x, gamma, beta, rm.copy(), rs.copy(), training=training,
                                rmax=rmax, dmax=dmax, eps=case.eps, axis=case.axis,
                                backend=backend)
    return loss(y, case.dy)


def check_all(loss, case, got):
    x, gamma, beta = case.x.copy(), case.gamma.copy(), case.beta.copy()
    f = lambda: loss(x, gamma, beta)  # noqa: E731 (closes over the arrays perturbed in place)
    for name, var in (("dx", x), ("dgamma", gamma), ("dbeta", beta)):
        assert_matches_differences(got[name], f, var, name)


small_f64 = dict(dtypes=(np.float64,), affine=True, max_size=60, max_ndim=4)


@given(case=cases(**small_f64), training=st.booleans())
def test_batch_norm_gradients(backend, case, training):
    got = bn_step(case, backend, training=training)
    check_all(lambda x, g, b: bn_loss(case, x, g, b, training, backend), case, got)


@given(case=cases(renorm=True, **small_f64))
def test_batch_renorm_eval_gradients(backend, case):
    got = brn_step(case, backend, training=False)
    check_all(lambda x, g, b: brn_loss(case, x, g, b, False, backend, 3.0, 5.0), case, got)


@given(case=cases(renorm=True, **small_f64), high=st.booleans())
def test_batch_renorm_training_gradients_with_saturated_clips(backend, case, high):
    # running sigma far below (or above) sigma_B and running mean far away: r = rmax (or
    # 1/rmax) and d = +-dmax stay put under the finite-difference perturbations
    _, var = case.batch_mean_var()
    sigma = np.sqrt(var + case.eps) * (1e-3 if high else 1e3)
    running = (case.running_mean + (1e6 if high else -1e6) * sigma, sigma)
    rmax, dmax = 2.0, 1.5
    rm, rs = (a.copy() for a in running)
    y, saved = normops.batch_renorm(case.x, case.gamma, case.beta, rm, rs, rmax=rmax, dmax=dmax,
                                    eps=case.eps, axis=case.axis, backend=backend)
    np.testing.assert_array_equal(saved.r, rmax if high else 1 / rmax)
    np.testing.assert_array_equal(saved.d, -dmax if high else dmax)
    dx, dgamma, dbeta = normops.batch_renorm_backward(case.dy, case.x, saved, case.gamma,
                                                      backend=backend)
    got = dict(dx=dx, dgamma=dgamma, dbeta=dbeta)
    check_all(lambda x, g, b: brn_loss(case, x, g, b, True, backend, rmax, dmax, running),
              case, got)


@given(case=cases(renorm=True, dtypes=(np.float64,)),
       clip=st.sampled_from([(3.0, 5.0), (1.5, 0.5), (1.0, 0.0)]))
def test_batch_renorm_training_is_batch_norm_with_r_and_d_folded_into_gamma_beta(backend, case, clip):
    rmax, dmax = clip
    brn = brn_step(case, backend, rmax=rmax, dmax=dmax)
    r, d = brn["saved"].r, brn["saved"].d
    g = np.ones(r.shape) if case.gamma is None else case.gamma
    b = np.zeros(r.shape) if case.beta is None else case.beta
    y, saved = normops.batch_norm(case.x, g * r, g * d + b, eps=case.eps, axis=case.axis,
                                  backend=backend)
    dx, dgamma_folded, _ = normops.batch_norm_backward(case.dy, case.x, saved, g * r,
                                                       backend=backend)
    assert_steps_close(dict(y=y, dx=dx), brn, case, keys=("y", "dx"))
    # dL/dgamma = sum dy * (r x_hat + d) = r * dgamma_BN(at gamma * r) + d * dbeta
    assert_close(brn["dgamma"], r * dgamma_folded + d * brn["dbeta"], what="dgamma")
