"""Gradients: analytic against central finite differences of the forward ops (float64),
the channel sums a training gradient must satisfy, and BRN's training gradient as BN's
with r and d folded into gamma and beta.

The loss is L = sum(y * dy), so dL/dy = dy. BRN's training gradient treats r and d as
constants (stop_gradient); its x-gradient is checked by finite differences where the
clips saturate (r and d locally constant) and, in every regime, through the identity
BRN(x; gamma, beta) = BN(x; gamma * r, gamma * d + beta) with r, d fixed.
"""
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st
from numpy.typing import NDArray

from .._typing import ArrayLike
from ._bn_properties import batch_scales, draw_cases, fixed_regimes
from ._cases import Case
from ._compare import assert_close, tolerance
from ._implementation import (Implementation, Step, assert_steps_close, bn_step, brn_step,
                              step_scales)
from ._property import prop
from ._renorm_properties import affine, renorm_cases, renorm_constants
from .strategies import cases

FD_TOL = 1e-6

# small float64 inputs whose loss is smooth on the finite-difference step's scale
SMALL_F64: dict[str, Any] = dict(dtypes=(np.float64,), affine=True, max_size=60, max_ndim=4)
SMALL_F64_REGIMES = ("moderate", "constant_channels")

#: The loss and the size of its terms, ``(L, size) = f()``, at the current inputs.
Loss = Callable[[], tuple[float, float]]
#: A forward op's y for (x, gamma, beta), the rest of its arguments fixed.
ForwardY = Callable[[NDArray[Any], NDArray[Any], NDArray[Any]], Any]


def small_f64_cases(impl: Implementation, **options: Any) -> st.SearchStrategy[Case]:
    return cases(regimes=fixed_regimes(impl, SMALL_F64_REGIMES), **SMALL_F64, **options)


def central_differences(f: Loss, v: NDArray[Any],
                        h: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """dL/dv for (L, size) = f(), perturbing ``v`` in place one element at a time by the
    steps ``h`` (broadcast against v), and the rounding noise of that estimate: 100
    ulps of the size of the terms L is made of (L itself may cancel far below them),
    over the step."""
    h = np.broadcast_to(h, v.shape)
    grad, noise = np.zeros(v.shape), np.zeros(v.shape)
    for i in np.ndindex(v.shape):
        orig = v[i]
        v[i] = orig + h[i]
        plus, size_plus = f()
        v[i] = orig - h[i]
        minus, size_minus = f()
        v[i] = orig
        grad[i] = (plus - minus) / (2 * h[i])
        noise[i] = 100 * np.finfo(np.float64).eps * max(size_plus, size_minus) / h[i]
    return grad, noise


def assert_matches_differences(analytic: ArrayLike, f: Loss, v: NDArray[Any], h: ArrayLike,
                               what: str) -> None:
    numeric, noise = central_differences(f, v, h)
    scale = float(np.max(np.abs(numeric)))
    bound = FD_TOL * np.abs(numeric) + FD_TOL * scale + noise
    analytic = np.asarray(analytic, dtype=np.float64)
    error = np.abs(analytic - numeric)
    if not np.all(error <= bound):
        i = np.unravel_index(np.argmax(error / bound), error.shape)
        raise AssertionError(
            f"{what}: worst error {error[i]:.3g} at {tuple(map(int, i))} (analytic "
            f"{float(analytic[i])!r}, finite differences {float(numeric[i])!r}) against a "
            f"tolerance of {bound[i]:.3g}; {np.count_nonzero(error > bound)} of {error.size} "
            f"elements beyond")


def check_against_differences(case: Case, step: Step, forward: ForwardY) -> None:
    """dx, dgamma and dbeta of ``step`` against central differences of
    L = sum(forward(x, gamma, beta) * dy), so dL/dy = dy.

    y is nonlinear in x only on the scale of sigma_B = sqrt(var_B + eps), so x's steps
    are 1e-4 sigma_B (truncation error ~1e-8 relative); y is linear in gamma and beta,
    so their steps are large, for less rounding noise. Each y is as exact as the terms
    it is made of (a*x + b may cancel), which sets L's noise."""
    assert case.gamma is not None and case.beta is not None   # small_f64_cases: affine
    x, gamma, beta = case.x.copy(), case.gamma.copy(), case.beta.copy()
    y_sizes = step_scales(case, step)["y"]

    def f() -> tuple[float, float]:
        y = np.asarray(forward(x, gamma, beta), dtype=np.float64)
        return float(np.sum(y * case.dy)), float(np.sum(np.abs(case.dy) * (np.abs(y) + y_sizes)))

    sigma_b = np.sqrt(case.batch_mean_var()[1] + case.eps)
    for name, v, h in (("dx", x, 1e-4 * case.bc(sigma_b)),
                       ("dgamma", gamma, 1e-3 * np.maximum(1.0, np.abs(gamma))),
                       ("dbeta", beta, 1e-3 * np.maximum(1.0, np.abs(beta)))):
        assert_matches_differences(step[name], f, v, h, name)


@prop("batch_norm", lambda impl: dict(case=small_f64_cases(impl), training=st.booleans()))
def bn_gradients_finite_differences(impl: Implementation, case: Case, training: bool) -> None:
    """dx, dgamma and dbeta equal central finite differences of the forward pass (training and eval)."""
    step = bn_step(impl, case, training=training)

    def forward(x: NDArray[Any], gamma: NDArray[Any], beta: NDArray[Any]) -> Any:
        rm, rv = case.running()
        return impl.batch_norm(x, gamma, beta, rm, rv, training=training, momentum=case.momentum,
                               eps=case.eps, axis=case.axis, convention="pytorch")[0]

    check_against_differences(case, step, forward)


@prop("batch_norm", lambda impl: dict(case=draw_cases(impl)))
def bn_gradient_channel_sums(impl: Implementation, case: Case) -> None:
    """In training, sum(dx) = 0 and sum(dx x_hat) = gamma invstd sum(dy x_hat) eps / (var_B + eps) per channel (0 as eps -> 0)."""
    step = bn_step(impl, case)
    mean, var = case.batch_mean_var()
    invstd = 1 / np.sqrt(var + case.eps)
    x_hat = (case.x - case.bc(mean)) * case.bc(invstd)
    g = affine(case)[0]
    dx = step["dx"].astype(np.float64)
    # each dx is held to its term size; the sums to the sums of those, and 10x the
    # tolerance for the m roundings of the sum
    size = case.channel_sum((np.abs(dx) + batch_scales(case)["dx"]) * (1 + np.abs(x_hat))
                            + np.abs(case.dy * x_hat * case.bc(g * invstd)))
    tol = 10 * tolerance(case.x.dtype)
    assert_close(case.channel_sum(dx), np.zeros(case.channels), tol=tol, scale=size, what="sum(dx)")
    expected = g * invstd * case.channel_sum(case.dy * x_hat) * case.eps / (var + case.eps)
    assert_close(case.channel_sum(dx * x_hat), expected, tol=tol, scale=size, what="sum(dx * x_hat)")


def renorm_forward(impl: Implementation, case: Case, training: bool, rmax: float,
                   dmax: float) -> ForwardY:
    batch_renorm = impl.batch_renorm
    assert batch_renorm is not None   # the properties using it run only where impl.renorm

    def forward(x: NDArray[Any], gamma: NDArray[Any], beta: NDArray[Any]) -> Any:
        mu, sigma = case.running()
        return batch_renorm(x, gamma, beta, mu, sigma, training=training, rmax=rmax,
                            dmax=dmax, momentum=case.momentum, eps=case.eps,
                            axis=case.axis)[0]
    return forward


@prop("batch_renorm", lambda impl: dict(case=small_f64_cases(impl, renorm=True)))
def brn_eval_gradients_finite_differences(impl: Implementation, case: Case) -> None:
    """Eval mode: dx, dgamma and dbeta equal central finite differences of the forward pass."""
    step = brn_step(impl, case, training=False)
    check_against_differences(case, step, renorm_forward(impl, case, False, 3.0, 5.0))


@prop("batch_renorm", lambda impl: dict(case=small_f64_cases(impl, renorm=True), high=st.booleans()))
def brn_training_gradients_saturated_clips(impl: Implementation, case: Case, high: bool) -> None:
    """Training with r and d clipped (locally constant): dx, dgamma, dbeta equal finite differences."""
    # running sigma far below (or above) sigma_B and running mean far away: r = rmax (or
    # 1/rmax) and d = +-dmax stay put under the finite-difference perturbations
    _, var = case.batch_mean_var()
    sigma = np.sqrt(var + case.eps) * (1e-3 if high else 1e3)
    case = case.replace(running_mean=case.running_mean + (1e6 if high else -1e6) * sigma,
                        running_second=sigma)
    rmax, dmax = 2.0, 1.5
    step = brn_step(impl, case, rmax=rmax, dmax=dmax)
    check_against_differences(case, step, renorm_forward(impl, case, True, rmax, dmax))


@prop("batch_renorm", lambda impl: dict(case=renorm_cases(impl, dtypes=(np.float64,)),
                                        clip=st.sampled_from([(3.0, 5.0), (1.5, 0.5), (1.0, 0.0)])))
def brn_training_is_bn_with_r_d_folded(impl: Implementation, case: Case,
                                       clip: tuple[float, float]) -> None:
    """Training: y and dx equal BN's with gamma r and gamma d + beta; dgamma = r dgamma_BN + d dbeta."""
    rmax, dmax = clip
    brn = brn_step(impl, case, rmax=rmax, dmax=dmax)
    _, _, r, d = renorm_constants(case, rmax, dmax)
    g, b = affine(case)
    folded = case.replace(gamma=g * r, beta=g * d + b)
    bn = bn_step(impl, folded, with_running=False)
    assert_steps_close(brn, bn, folded, keys=("y", "dx"))
    # dL/dgamma = sum dy (r x_hat + d) = r * dgamma_BN(at gamma r) + d * dbeta
    assert_close(brn["dgamma"], r * bn["dgamma"] + d * brn["dbeta"], case.x.dtype,
                 scale=batch_scales(folded)["dgamma"] * r + np.abs(d) * batch_scales(folded)["dbeta"],
                 what="dgamma")
