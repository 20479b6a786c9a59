"""Properties of batch normalization's forward pass, running statistics and eval mode."""
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from numpy.typing import NDArray

from .._halves import round_to
from ._compare import assert_close, running_scales, term_scales, tolerance, variance_floor
from ._dtypes import finfo, ulp
from ._implementation import REFERENCE, Implementation, Step, assert_steps_close, bn_step
from ._property import prop
from ._cases import REGIMES, Case, make_case
from .strategies import cases, dtypes


def draw_cases(impl: Implementation, **options: Any) -> st.SearchStrategy[Case]:
    """Cases in the dtypes ``impl`` takes and the regimes it asks for."""
    return cases(**{"dtypes": impl.dtypes, "regimes": impl.regimes, **options})


def fixed_regimes(impl: Implementation, default: tuple[str, ...]) -> tuple[str, ...]:
    """The regimes of a property that draws its own (``default``), or the extra ones
    (outside REGIMES, such as extreme_scales) that ``impl`` asks for instead."""
    return tuple(r for r in impl.regimes if r not in REGIMES) or default


def forward(impl: Implementation, case: Case, *, training: bool = True,
            running: Sequence[NDArray[Any] | None] = (None, None),
            convention: str = "pytorch") -> Any:
    y, _ = impl.batch_norm(case.x, case.gamma, case.beta, *running, training=training,
                           momentum=case.momentum, eps=case.eps, axis=case.axis,
                           convention=convention)
    return y


def batch_scales(case: Case) -> dict[str, NDArray[Any]]:
    """Term scales of a training step, from the case's batch statistics."""
    mean, var = case.batch_mean_var()
    return term_scales(case, mean, 1.0 / np.sqrt(var + case.eps))


@prop("batch_norm", lambda impl: dict(case=draw_cases(impl, affine=False)))
def bn_zero_mean_unit_variance(impl: Implementation, case: Case) -> None:
    """Training output has mean 0 and variance var_B / (var_B + eps) in every channel."""
    _, var = case.batch_mean_var()
    y = forward(impl, case).astype(np.float64)
    size = batch_scales(case)["y"].reshape(-1)
    mean_y = y.mean(axis=case.reduce_axes)
    assert_close(mean_y, np.zeros_like(mean_y), case.x.dtype, scale=size, what="mean of y")
    var_y = ((y - case.bc(mean_y)) ** 2).mean(axis=case.reduce_axes)
    # errors of tol * size in y move its variance by up to 2 * max|y| * tol * size; the
    # expected value is as exact as var_B (variance_floor)
    y_max = np.abs(y).max(axis=case.reduce_axes)
    unknown = variance_floor(case) / tolerance(case.x.dtype) / (var + case.eps)
    assert_close(var_y, var / (var + case.eps), case.x.dtype, scale=2 * y_max * size + unknown,
                 what="variance of y")


@prop("batch_norm", lambda impl: dict(case=draw_cases(impl, affine=False)))
def bn_identity_recovery(impl: Implementation, case: Case) -> None:
    """gamma = sqrt(var_B + eps) and beta = mu_B give back y = x.

    In float16 or bfloat16 (gamma and beta in float32 or x's dtype) y = x holds to the
    roundings of gamma, beta and y, about an ulp of the terms: the half tolerance."""
    mean, var = case.batch_mean_var()
    dtype = case.parameters_dtype
    case = case.replace(gamma=round_to(np.sqrt(var + case.eps), dtype), beta=round_to(mean, dtype))
    scale = term_scales(case, mean, 1.0 / np.sqrt(var + case.eps))["y"]
    assert_close(forward(impl, case), case.x, case.x.dtype, scale=scale, what="y")


def exact_affine_change(case: Case, seed: int) -> tuple[Case, Case, NDArray[Any]]:
    """(case with x on a grid, the same with x * s + t, s) where s = 2^k > 0 and t per
    channel, and every value is exact in x's dtype: the property then compares two
    inputs that really are an affine change of each other, not one rounded version."""
    rng = np.random.default_rng(seed)
    dtype = case.x.dtype
    x = case.x.astype(np.float64)
    spread = np.sqrt(case.batch_mean_var()[1])
    x_max = np.abs(x).max(axis=case.reduce_axes)
    # a power-of-two grid of about 1/64 of the spread, coarse enough that x * s + t
    # (|t| <= 2 max|x| s) fits in the dtype's digits: max|x| / grid < 2^digits / 16
    grid = np.maximum(2.0 ** np.floor(np.log2(np.maximum(spread, 1e-300) / 64)),
                      16 * ulp(x_max, dtype))
    x = np.round(x / case.bc(grid)) * case.bc(grid)
    s = 2.0 ** rng.integers(-3, 4, case.channels)
    t = np.round(np.clip(rng.normal(0.0, 1.0, case.channels), -2, 2) * x_max / grid) * grid * s
    moved = x * case.bc(s) + case.bc(t)
    if not (np.array_equal(moved.astype(dtype), moved) and np.array_equal(x.astype(dtype), x)):
        raise RuntimeError(f"the kit's own grid was not exact for {case!r}")
    return case.replace(x=x.astype(dtype)), case.replace(x=moved.astype(dtype)), s


@prop("batch_norm", lambda impl: dict(case=draw_cases(impl), seed=st.integers(0, 2**32 - 1)))
def bn_affine_input_invariance(impl: Implementation, case: Case, seed: int) -> None:
    """For per-channel s > 0 and t, x * s + t gives the same y and dgamma, dx / s (eps negligible)."""
    case, moved, s = exact_affine_change(case, seed)
    # a constant channel has no scale to be invariant to
    assume(np.ptp(case.x, axis=case.reduce_axes).min() > 0)
    variances = case.batch_mean_var()[1]
    eps = 1e-12 * (variances * np.minimum(s, 1.0) ** 2).min()  # var / (var + eps) = 1 to 1e-12
    case, moved = case.replace(eps=eps), moved.replace(eps=eps)
    got = bn_step(impl, moved, with_running=False)
    want = bn_step(impl, case, with_running=False)
    # each side's rounding is relative to its own terms
    sizes = [batch_scales(c) for c in (case, moved)]
    assert_close(got["y"], want["y"], case.x.dtype, scale=sizes[0]["y"] + sizes[1]["y"], what="y")
    assert_close(got["dx"] * case.bc(s), want["dx"], case.x.dtype,
                 scale=sizes[0]["dx"] + sizes[1]["dx"] * case.bc(s), what="dx * s")
    assert_close(got["dgamma"], want["dgamma"], case.x.dtype,
                 scale=sizes[0]["dgamma"] + sizes[1]["dgamma"], what="dgamma")
    assert_close(got["dbeta"], want["dbeta"], case.x.dtype, what="dbeta")


@prop("batch_norm", lambda impl: dict(case=draw_cases(impl), which=st.integers(0, 4),
                                      order_seed=st.integers(0, 2**32 - 1)))
def bn_batch_permutation_equivariance(impl: Implementation, case: Case, which: int,
                                      order_seed: int) -> None:
    """Permuting the batch permutes y and dx; statistics, dgamma and dbeta stay the same."""
    # the ``which``-th reduced axis longer than 1 (training has one), in a random order
    axes = [a for a in case.reduce_axes if case.x.shape[a] > 1]
    axis = axes[which % len(axes)]
    order = np.random.default_rng(order_seed).permutation(case.x.shape[axis])
    first = bn_step(impl, case)
    permuted = case.replace(x=np.take(case.x, order, axis), dy=np.take(case.dy, order, axis))
    expected = {**first, "y": np.take(first["y"], order, axis),
                "dx": np.take(first["dx"], order, axis)}
    assert_steps_close(bn_step(impl, permuted), expected, case)


@prop("batch_norm", lambda impl: dict(case=draw_cases(impl),
                                      convention=st.sampled_from(impl.conventions)))
def bn_running_stats_update(impl: Implementation, case: Case, convention: str) -> None:
    """running = (1 - momentum) running + momentum batch, with the unbiased (pytorch) or biased (keras) variance."""
    rm, rv = case.running()
    forward(impl, case, running=(rm, rv), convention=convention)
    mean, var = case.batch_mean_var()
    var_new = var * case.m / (case.m - 1) if convention == "pytorch" else var
    mom = case.momentum
    rm0, rv0 = (a.astype(np.float64) for a in case.running())
    scales = running_scales(case)
    for got, old, new, name in ((rm, rm0, mean, "running_mean"), (rv, rv0, var_new, "running_var")):
        want = case.running_dtype   # x's, or float32 for half x: they keep their own
        assert got.dtype == want, f"{name}: dtype {got.dtype}, expected {want}"
        assert_close(got, (1 - mom) * old + mom * new, case.x.dtype, scale=scales[name], what=name)


@prop("batch_norm", lambda impl: dict(case=draw_cases(impl, training=False)))
def bn_eval_formulas(impl: Implementation, case: Case) -> None:
    """Eval mode: y = gamma (x - running_mean) / sqrt(running_var + eps) + beta, dx = dy gamma invstd; running stats untouched."""
    rm, rv = (a.astype(np.float64) for a in case.running())
    check_eval_step(case, bn_step(impl, case, training=False), rm, 1 / np.sqrt(rv + case.eps),
                    "running_var")


def check_eval_step(case: Case, step: Step, mean: NDArray[np.float64],
                    invstd: NDArray[np.float64], second: str) -> None:
    """An eval-mode step (BN's or BRN's) against y = gamma (x - mean) invstd + beta,
    dx = dy gamma invstd, dgamma = sum(dy x_hat), dbeta = sum(dy); the running statistics
    (``second``: the name of the second one) untouched."""
    g = np.ones_like(mean) if case.gamma is None else case.gamma.astype(np.float64)
    b = np.zeros_like(mean) if case.beta is None else case.beta.astype(np.float64)
    x_hat = (case.x.astype(np.float64) - case.bc(mean)) * case.bc(invstd)
    expected = dict(y=case.bc(g) * x_hat + case.bc(b),
                    dx=case.dy.astype(np.float64) * case.bc(g * invstd),
                    dgamma=case.channel_sum(case.dy * x_hat), dbeta=case.channel_sum(case.dy))
    scales = term_scales(case, mean, invstd, training=False)
    for key, want in expected.items():
        assert_close(step[key], want, case.x.dtype, scale=scales[key], what=key)
    np.testing.assert_array_equal(step["running_mean"], case.running_mean, err_msg="running_mean changed")
    np.testing.assert_array_equal(step[second], case.running_second, err_msg=f"{second} changed")


@prop("batch_norm", lambda impl: dict(case=draw_cases(impl)))
def bn_eval_equals_training_with_batch_stats(impl: Implementation, case: Case) -> None:
    """Eval mode with running stats equal to the batch statistics gives the training output."""
    mean, var = case.batch_mean_var()
    train = bn_step(impl, case, with_running=False)
    dtype = case.running_dtype
    with np.errstate(over="ignore", under="ignore"):
        running = (round_to(mean, dtype), round_to(var, dtype))
    # the statistics rounded to their dtype move y by up to invstd * |x| ulps: the term
    # scale. Only channels whose variance the dtype holds can be compared (float32 has
    # none for spreads past 1e19 or below 1e-19, as in the extreme_scales regime)
    info = finfo(dtype)
    held = case.bc((var == 0) | ((var >= info.tiny) & (var <= info.max)))
    y = forward(impl, case, training=False, running=running)
    assert_steps_close(dict(y=np.where(held, y, 0).astype(y.dtype)),
                       dict(train, y=np.where(held, train["y"], 0).astype(y.dtype)), case,
                       keys=("y",))


@prop("batch_norm", lambda impl: dict(case=draw_cases(impl), training=st.booleans(),
                                      convention=st.sampled_from(impl.conventions),
                                      with_running=st.booleans()))
def bn_matches_reference(impl: Implementation, case: Case, training: bool, convention: str,
                         with_running: bool) -> None:
    """y, running stats, dx, dgamma and dbeta equal normops's reference backend."""
    assume(training or with_running)
    options: dict[str, Any] = dict(training=training, convention=convention,
                                   with_running=with_running)
    assert_steps_close(bn_step(impl, case, **options), bn_step(REFERENCE, case, **options), case)


@prop("batch_norm", lambda impl: dict(
    m=st.integers(2**14, 2**16), channels=st.integers(1, 3), inner=st.sampled_from([1, 8]),
    dtype=dtypes(impl.dtypes), regime=st.sampled_from(fixed_regimes(impl, ("large_offset", "moderate"))),
    seed=st.integers(0, 2**32 - 1)))
def bn_large_batch_matches_reference(impl: Implementation, m: int, channels: int, inner: int,
                                     dtype: np.dtype[Any], regime: str, seed: int) -> None:
    """With 2^14 to 2^16 values per channel (sums that float32 accumulators get wrong), training y, running stats and gradients equal the reference."""
    case = make_case((m // inner, channels, inner), 1, dtype.name, regime=regime, seed=seed)
    assert_steps_close(bn_step(impl, case), bn_step(REFERENCE, case), case)
