"""Properties of the fused epilogue of a residual block, y = relu(BN(x) + z): equality
with the unfused composition, relu's output and mask, and the gradients (z's too) by
finite differences away from the kink.

A residual z is drawn for each case: normal values of y's size, and at a quarter of the
elements exactly minus the op's own unfused output, so that BN(x) + z is 0 there (in an
implementation that rounds BN(x) to x's dtype first; one that computes the sum wider
lands within a rounding of 0, on either side). The backward is handed the fused
forward's y, and dz must be dy masked by it: dy where y > 0 or y is NaN, else 0
(relu's derivative at 0 is 0, as in PyTorch).
"""
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from numpy.typing import NDArray

from .._halves import round_to
from .._typing import ArrayLike
from ._bn_properties import draw_cases
from ._cases import MEMORY, Case, as_memory
from ._compare import assert_close
from ._gradient_properties import assert_matches_differences, small_f64_cases
from ._implementation import Backward, Forward, Implementation, step_scales
from ._property import prop

ACTIVATIONS = (None, "relu")


def _forward_op(impl: Implementation, renorm: bool) -> Forward:
    op = impl.batch_renorm if renorm else impl.batch_norm
    assert op is not None   # the BRN properties run only where impl.renorm
    return op


def _backward_op(impl: Implementation, renorm: bool) -> Backward:
    op = impl.batch_renorm_backward if renorm else impl.batch_norm_backward
    assert op is not None   # the BRN properties run only where impl.renorm
    return op


def forward(impl: Implementation, case: Case, renorm: bool, training: bool,
            **epilogue: Any) -> tuple[Any, Any, tuple[NDArray[Any], NDArray[Any]]]:
    """(y, saved, running statistics after the step) of one forward, fused when
    ``epilogue`` holds residual= / activation=."""
    running = case.running()
    options: dict[str, Any] = (dict(rmax=3.0, dmax=5.0) if renorm
                               else dict(convention="pytorch"))
    y, saved = _forward_op(impl, renorm)(case.x, case.gamma, case.beta, *running,
                                         training=training, momentum=case.momentum,
                                         eps=case.eps, axis=case.axis, **options, **epilogue)
    return y, saved, running


def residual(case: Case, y_plain: ArrayLike, seed: int, memory: str) -> NDArray[Any]:
    """z of x's shape and dtype: normal values of y's size, and -y_plain (so that
    y_plain + z is exactly 0) at a quarter of the elements; in memory arrangement
    ``memory``."""
    rng = np.random.default_rng(seed)
    y64 = np.asarray(y_plain, dtype=np.float64)
    size = float(np.max(np.abs(y64), initial=0.0, where=np.isfinite(y64))) or 1.0
    z = np.where(rng.random(y64.shape) < 0.25, -y64, size * rng.standard_normal(y64.shape))
    return as_memory(round_to(z, case.x.dtype), memory, case.axis)


def relu(v: NDArray[Any]) -> NDArray[Any]:
    """0 where v < 0, else v (-0.0 and NaN stay)."""
    return np.where(v < 0, 0.0, v)


def through_relu(dy: NDArray[Any], y: ArrayLike) -> NDArray[Any]:
    """dy masked by y: 0 where y <= 0, else dy (NaN y lets dy through)."""
    return np.where(np.asarray(y, dtype=np.float64) <= 0, np.zeros_like(dy), dy)


def fused_draws(impl: Implementation, **options: Any) -> dict[str, st.SearchStrategy[Any]]:
    return dict(case=draw_cases(impl, renorm=options.pop("renorm", False), **options),
                training=st.booleans(), activation=st.sampled_from(ACTIVATIONS),
                with_residual=st.booleans(), memory=st.sampled_from(MEMORY),
                seed=st.integers(0, 2**32 - 1))


def check_against_composition(impl: Implementation, case: Case, renorm: bool, training: bool,
                              activation: str | None, with_residual: bool, memory: str,
                              seed: int) -> None:
    assume(activation is not None or with_residual)
    y_plain, saved_plain, running_plain = forward(impl, case, renorm, training)
    z = residual(case, y_plain, seed, memory) if with_residual else None
    y, saved, running = forward(impl, case, renorm, training, residual=z, activation=activation)
    step = dict(training=training, **(dict(running_std=None, rmax=3.0, dmax=5.0) if renorm else {}))
    # the epilogue leaves the statistics alone
    for name, got, want in zip(("running_mean", "running_second"), running, running_plain):
        assert_close(got, want, case.x.dtype, what=f"{name} (fused against plain)")
    # relu is 1-Lipschitz: y is as close to the composition as BN(x) + z is, where BN(x)
    # is within x's dtype (where it overflowed, an implementation that adds z first may
    # well land back in range: the composition's inf tells nothing there)
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(np.asarray(y_plain, np.float64))
        v = np.asarray(y_plain, np.float64) + (0.0 if z is None else np.asarray(z, np.float64))
        expected = round_to(relu(v) if activation == "relu" else v, case.x.dtype)
        y_terms = (np.abs(np.asarray(y_plain, np.float64))
                   + (0.0 if z is None else np.abs(np.asarray(z, np.float64))))
    zero = np.zeros((), case.x.dtype)
    assert_close(np.where(finite, y, zero), np.where(finite, expected, zero), case.x.dtype,
                 scale=np.where(finite, y_terms, 0.0) + step_scales(case, step)["y"],
                 what="y (fused against BN, add, relu)")
    if activation == "relu":
        negative = np.asarray(y, np.float64) < 0
        assert not negative.any(), f"relu's output has {np.count_nonzero(negative)} values < 0"
    # the backward: the plain one on dy masked by the fused y
    masked = through_relu(case.dy, y) if activation == "relu" else case.dy
    grads = _backward_op(impl, renorm)(case.dy, case.x, saved, case.gamma, y=y, axis=case.axis)
    assert len(grads) == (4 if with_residual else 3), (
        f"the backward returned {len(grads)} arrays, expected (dx, dgamma, dbeta"
        f"{', dz' if with_residual else ''})")
    plain = _backward_op(impl, renorm)(masked, case.x, saved_plain, case.gamma, axis=case.axis)
    scales = step_scales(case.replace(dy=masked), step)
    for name, got, want in zip(("dx", "dgamma", "dbeta"), grads, plain):
        assert_close(got, want, case.x.dtype, scale=scales[name],
                     what=f"{name} (fused against the plain backward of the masked dy)")
    if with_residual:
        dz = grads[3]
        assert dz.dtype == case.x.dtype, f"dz has dtype {dz.dtype}, expected {case.x.dtype}"
        if not np.array_equal(dz, masked, equal_nan=True):
            bad = np.count_nonzero(~((dz == masked) | (np.isnan(dz) & np.isnan(masked))))
            raise AssertionError(f"dz differs from dy masked by y (0 where y <= 0) at {bad} "
                                 f"of {dz.size} elements")


@prop("fused", lambda impl: fused_draws(impl))
def fused_bn_equals_composition(impl: Implementation, case: Case, training: bool,
                                activation: str | None, with_residual: bool, memory: str,
                                seed: int) -> None:
    """Fused BN (residual, relu) equals BN, add, relu; its backward the plain one on the masked dy; dz is that mask."""
    check_against_composition(impl, case, False, training, activation, with_residual, memory, seed)


@prop(("fused", "batch_renorm"), lambda impl: fused_draws(impl, renorm=True))
def fused_brn_equals_composition(impl: Implementation, case: Case, training: bool,
                                 activation: str | None, with_residual: bool, memory: str,
                                 seed: int) -> None:
    """Fused BRN (residual, relu) equals BRN, add, relu; its backward the plain one on the masked dy."""
    check_against_composition(impl, case, True, training, activation, with_residual, memory, seed)


@prop("fused", lambda impl: dict(case=draw_cases(impl), training=st.booleans(),
                                 seed=st.integers(0, 2**32 - 1)))
def fused_relu_nan_and_mask(impl: Implementation, case: Case, training: bool, seed: int) -> None:
    """A NaN in z gives NaN in y and lets dy through there; y is never negative; dz is dy masked by y."""
    y_plain, _, _ = forward(impl, case, False, training)
    z = np.array(residual(case, y_plain, seed, "contiguous"))
    rng = np.random.default_rng(seed)
    nan_at = rng.random(z.shape) < 0.1
    z[nan_at] = np.nan
    y, saved, _ = forward(impl, case, False, training, residual=z, activation="relu")
    y64 = np.asarray(y, np.float64)
    assert np.isnan(y64[nan_at]).all(), "y is not NaN where z is NaN"
    assert not (y64 < 0).any(), "relu's output has values < 0"
    dz = impl.batch_norm_backward(case.dy, case.x, saved, case.gamma, y=y, axis=case.axis)[3]
    assert np.array_equal(dz[nan_at], case.dy[nan_at], equal_nan=True), \
        "dz is not dy where y is NaN (relu's gradient lets it through, as PyTorch's)"
    assert np.array_equal(dz, through_relu(case.dy, y), equal_nan=True), "dz is not dy masked by y"


@prop("fused", lambda impl: dict(case=small_f64_cases(impl), training=st.booleans(),
                                 seed=st.integers(0, 2**32 - 1)))
def fused_gradients_finite_differences(impl: Implementation, case: Case, training: bool,
                                       seed: int) -> None:
    """dx, dgamma, dbeta and dz of relu(BN(x) + z) equal central finite differences, away from the kink."""
    y_plain, _, _ = forward(impl, case, False, training)
    y64 = np.asarray(y_plain, np.float64)
    rng = np.random.default_rng(seed)
    size = float(np.max(np.abs(y64))) + 1.0
    # BN(x) + z at least size/4 from 0, far beyond what the steps below move it by
    target = size * np.where(rng.random(y64.shape) < 0.5, -1.0, 1.0) * (0.25 + rng.random(y64.shape))
    z = target - y64
    assert case.gamma is not None and case.beta is not None   # small_f64_cases: affine
    x, gamma, beta = case.x.copy(), case.gamma.copy(), case.beta.copy()

    def run(x: NDArray[Any], gamma: NDArray[Any], beta: NDArray[Any],
            z: NDArray[Any]) -> tuple[Any, Any, tuple[NDArray[Any], NDArray[Any]]]:
        return forward(impl, case.replace(x=x, gamma=gamma, beta=beta), False, training,
                       residual=z, activation="relu")

    y, saved, _ = run(x, gamma, beta, z)
    dx, dgamma, dbeta, dz = impl.batch_norm_backward(case.dy, x, saved, gamma, y=y, axis=case.axis)

    # each y is as exact as the terms it is made of (a x + b + z may cancel)
    y_terms = step_scales(case, dict(training=training))["y"] + np.abs(z)

    def f() -> tuple[float, float]:
        out = np.asarray(run(x, gamma, beta, z)[0], dtype=np.float64)
        return float(np.sum(out * case.dy)), float(np.sum(np.abs(case.dy) * (np.abs(out) + y_terms)))

    sigma_b = np.sqrt(case.batch_mean_var()[1] + case.eps)
    for name, analytic, v, h in (("dx", dx, x, 1e-4 * case.bc(sigma_b)),
                                 ("dgamma", dgamma, gamma, 1e-4 * np.maximum(1.0, np.abs(gamma))),
                                 ("dbeta", dbeta, beta, 1e-4 * np.maximum(1.0, np.abs(beta))),
                                 ("dz", dz, z, 1e-4 * size)):
        assert_matches_differences(analytic, f, v, h, name)
