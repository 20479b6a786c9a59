"""Properties of batch renormalization (Ioffe, 2017): its relation to BN, its formulas in
training and eval mode, and agreement with the reference."""
from typing import Any

import numpy as np
from hypothesis import strategies as st
from numpy.typing import NDArray

from ._compare import assert_close, running_scales, term_scales
from ._implementation import REFERENCE, Implementation, assert_steps_close, bn_step, brn_step
from ._property import prop
from ._bn_properties import check_eval_step, draw_cases
from ._cases import Case
from .strategies import renorm_clips

_F64 = NDArray[np.float64]


def renorm_cases(impl: Implementation, **options: Any) -> st.SearchStrategy[Case]:
    return draw_cases(impl, renorm=True, **options)


def renorm_constants(case: Case, rmax: float, dmax: float) -> tuple[_F64, _F64, _F64, _F64]:
    """mu_B, sigma_B = sqrt(var_B + eps), and r, d from the running statistics as they
    are before the step, in float64."""
    mean, var = case.batch_mean_var()
    sigma_b = np.sqrt(var + case.eps)
    mu, sigma = (a.astype(np.float64) for a in case.running())
    r = np.clip(sigma_b / sigma, 1 / rmax, rmax)
    d = np.clip((mean - mu) / sigma, -dmax, dmax)
    return mean, sigma_b, r, d


def affine(case: Case) -> tuple[_F64, _F64]:
    """gamma and beta in float64 (1 and 0 when absent)."""
    ones = np.ones(case.channels)
    return (ones if case.gamma is None else case.gamma.astype(np.float64),
            0 * ones if case.beta is None else case.beta.astype(np.float64))


@prop("batch_renorm", lambda impl: dict(case=renorm_cases(impl)))
def brn_rmax1_dmax0_is_bn(impl: Implementation, case: Case) -> None:
    """BRN with rmax = 1, dmax = 0 gives BN's y, dx, dgamma, dbeta and running mean."""
    brn = brn_step(impl, case, rmax=1.0, dmax=0.0)
    assert_steps_close(brn, bn_step(impl, case), case,
                       keys=("y", "dx", "dgamma", "dbeta", "running_mean"))


@prop("batch_renorm", lambda impl: dict(case=renorm_cases(impl), clip=renorm_clips()))
def brn_training_formulas(impl: Implementation, case: Case, clip: tuple[float, float]) -> None:
    """Training: y = gamma ((x - mu_B) / sigma_B r + d) + beta, r and d from the running stats before the step; mu += momentum (mu_B - mu), sigma += momentum (sigma_B - sigma)."""
    rmax, dmax = clip
    mu, sigma = case.running()
    assert impl.batch_renorm is not None   # the property runs only where impl.renorm
    y, _ = impl.batch_renorm(case.x, case.gamma, case.beta, mu, sigma, training=True,
                             rmax=rmax, dmax=dmax, momentum=case.momentum, eps=case.eps,
                             axis=case.axis)
    mean, sigma_b, r, d = renorm_constants(case, rmax, dmax)
    g, b = affine(case)
    expected = case.bc(g) * ((case.x - case.bc(mean)) / case.bc(sigma_b) * case.bc(r) + case.bc(d)) + case.bc(b)
    assert_close(y, expected, case.x.dtype, scale=term_scales(case, mean, 1 / sigma_b, r, d)["y"],
                 what="y")
    mom, scales = case.momentum, running_scales(case)
    mu0, sigma0 = (a.astype(np.float64) for a in case.running())
    assert_close(mu, mu0 + mom * (mean - mu0), case.x.dtype, scale=scales["running_mean"],
                 what="running_mean")
    assert_close(sigma, sigma0 + mom * (sigma_b - sigma0), case.x.dtype,
                 scale=scales["running_std"], what="running_std")


@prop("batch_renorm", lambda impl: dict(case=renorm_cases(impl, training=False)))
def brn_eval_formulas(impl: Implementation, case: Case) -> None:
    """Eval mode: y = gamma (x - mu) / sigma + beta, dx = dy gamma / sigma; running stats untouched."""
    mu, sigma = (a.astype(np.float64) for a in case.running())
    check_eval_step(case, brn_step(impl, case, training=False), mu, 1 / sigma, "running_std")


@prop("batch_renorm", lambda impl: dict(case=renorm_cases(impl), training=st.booleans(),
                                        clip=renorm_clips()))
def brn_matches_reference(impl: Implementation, case: Case, training: bool,
                          clip: tuple[float, float]) -> None:
    """y, running stats, dx, dgamma and dbeta equal normops's reference backend."""
    options: dict[str, Any] = dict(training=training, rmax=clip[0], dmax=clip[1])
    assert_steps_close(brn_step(impl, case, **options), brn_step(REFERENCE, case, **options), case)
