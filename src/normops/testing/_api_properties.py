"""Properties of the calling convention: memory layouts, untouched inputs, absent gamma
and beta, strided parameters and running statistics updated in place. Each one runs BN,
and BRN when the implementation has it."""
from typing import Any

import numpy as np
from hypothesis import strategies as st
from numpy.typing import NDArray

from .._halves import grad_dtype
from ._bn_properties import draw_cases
from ._cases import MEMORY, Case
from ._implementation import Implementation, Step, assert_steps_close, bn_step, brn_step
from ._property import prop


def steps(impl: Implementation, case: Case, **options: Any) -> tuple[Step, Step | None]:
    """(BN step, BRN step or None) on ``case``."""
    bn = bn_step(impl, case, **options)
    return bn, brn_step(impl, case.as_renorm(), **options) if impl.renorm else None


def assert_both_close(actual: tuple[Step, Step | None], expected: tuple[Step, Step | None],
                      case: Case) -> None:
    assert_steps_close(actual[0], expected[0], case)
    if expected[1] is not None:
        assert actual[1] is not None   # the same implementation ran both
        assert_steps_close(actual[1], expected[1], case.as_renorm())


@prop("batch_norm", lambda impl: dict(case=draw_cases(impl, memory=MEMORY[1:]), training=st.booleans()))
def non_contiguous_views(impl: Implementation, case: Case, training: bool) -> None:
    """Negative-stride, strided, Fortran-order and channels-last views give the results of C-ordered copies."""
    contiguous = case.replace(x=np.ascontiguousarray(case.x), dy=np.ascontiguousarray(case.dy))
    assert_both_close(steps(impl, case, training=training),
                      steps(impl, contiguous, training=training), contiguous)


@prop("batch_norm", lambda impl: dict(case=draw_cases(impl), training=st.booleans()))
def inputs_not_modified(impl: Implementation, case: Case, training: bool) -> None:
    """x, dy, gamma and beta are never written to."""
    names = [k for k in ("x", "dy", "gamma", "beta") if getattr(case, k) is not None]
    originals = {k: getattr(case, k).copy() for k in names}
    steps(impl, case, training=training)
    for name in names:
        np.testing.assert_array_equal(getattr(case, name), originals[name], err_msg=f"{name} was modified")


@prop("batch_norm", lambda impl: dict(case=draw_cases(impl, affine=False), training=st.booleans()))
def absent_gamma_beta(impl: Implementation, case: Case, training: bool) -> None:
    """gamma = None and beta = None act as gamma = 1 and beta = 0 (in float32 for half x:
    dgamma and dbeta without gamma are float32 then, as they are with float32 gamma)."""
    dtype = grad_dtype(case.x.dtype, None)
    ones = case.replace(gamma=np.ones(case.channels, dtype), beta=np.zeros(case.channels, dtype))
    assert_both_close(steps(impl, case, training=training), steps(impl, ones, training=training), case)


def strided(v: NDArray[Any], reverse: bool) -> NDArray[Any]:
    """``v``'s values in every other element of a buffer twice its size, backwards when
    ``reverse``."""
    buffer = np.zeros(2 * v.size, v.dtype)
    view = buffer[::-2] if reverse else buffer[::2]
    view[...] = v
    return view


@prop("batch_norm", lambda impl: dict(case=draw_cases(impl), renorm=st.booleans(),
                                      reverse=st.booleans()))
def strided_parameters_and_running_stats(impl: Implementation, case: Case, renorm: bool,
                                          reverse: bool) -> None:
    """Strided gamma, beta and running stats work, and the running stats are updated in place."""
    renorm = renorm and impl.renorm
    case = case.as_renorm() if renorm else case
    step = brn_step if renorm else bn_step
    expected = step(impl, case)
    changed = {k: strided(getattr(case, k), reverse) for k in ("gamma", "beta", "running_mean", "running_second")
               if getattr(case, k) is not None}
    strided_case = case.replace(**changed)
    running = (strided_case.running_mean, strided_case.running_second)
    # the step reports the arrays it passed: they hold the update only if made in place
    assert_steps_close(step(impl, strided_case, running=running), expected, case)
