"""What the kit checks: an implementation of BN (and optionally BRN) behind normops's
signatures, and one forward + backward step through it."""
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import numpy as np

import normops

from .._registry import ANY_LIBRARY, backend_library
from ._cases import REGIMES
from ._libraries import array_library, on_library
from ._compare import assert_close, running_scales, term_scales
from ._dtypes import ALL, FULL


@dataclass(frozen=True)
class Implementation:
    """An implementation under test, given as callables with normops's signatures:

    ``batch_norm(x, gamma, beta, running_mean, running_var, *, training, momentum, eps,
    axis, convention) -> (y, saved)``, updating the running statistics in place when
    training and they are not None;
    ``batch_norm_backward(dy, x, saved, gamma, *, axis) -> (dx, dgamma, dbeta)``;
    and optionally ``batch_renorm(x, gamma, beta, running_mean, running_std, *, training,
    rmax, dmax, momentum, eps, axis) -> (y, saved)`` with ``batch_renorm_backward`` (the
    BRN properties are "n/a" without them).

    Every result is a NumPy array: y and dx of x's dtype, dgamma and dbeta of gamma's
    (x's when gamma is None, float32 for float16/bfloat16 x; they are then the gradients
    at gamma = 1, beta = 0), running statistics updated in their own dtype. For half x,
    gamma, beta and the running statistics are each float32 or x's dtype.
    ``saved`` is whatever the forward returns: the kit only hands it to the backward.
    ``conventions``: the running-variance conventions ``convention`` may take ("pytorch":
    unbiased, "keras": biased); ``dtypes``: the dtypes of x the kit draws (float32 and
    float64 by default; ``strategies.ALL_DTYPES`` adds float16, and bfloat16 where
    ml_dtypes imports); ``regimes``: the value regimes it draws (``REGIMES`` by
    default; ``EXTREME_REGIMES`` are asked for). ``fused``: the ops take normops's fused
    epilogue, ``residual=`` and ``activation=`` ("relu") on the forward ops, ``y=`` on
    the backward ops, which then return dz after a residual (the fused properties are
    "n/a" without it).
    """

    name: str
    batch_norm: Callable
    batch_norm_backward: Callable
    batch_renorm: Optional[Callable] = None
    batch_renorm_backward: Optional[Callable] = None
    conventions: tuple = ("pytorch", "keras")
    dtypes: tuple = FULL
    regimes: tuple = REGIMES
    fused: bool = False

    @property
    def renorm(self):
        return self.batch_renorm is not None and self.batch_renorm_backward is not None


# the library the kit hands a backend's arrays in, by the library it is picked for
DEFAULT_LIBRARY = {ANY_LIBRARY: "array_api_strict", "torch": "torch", "cupy": "cupy"}


def backend_implementation(name, library=None, device=None):
    """The public normops ops, run on the registered backend ``name``, on arrays of
    ``library`` (see LIBRARIES) on ``device``. By default, the library the backend is
    picked for (numpy for a backend of its own; array_api_strict for "array-api").
    Every normops backend takes float16 and bfloat16 x: the kit draws them wherever the
    library has them (not array_api_strict's arrays)."""
    normops.get_backend(name)   # unknown or unavailable: say so now, not in every property
    if library is None:
        library = DEFAULT_LIBRARY.get(backend_library(name), "numpy")
    impl = Implementation(
        name, partial(normops.batch_norm, backend=name),
        partial(normops.batch_norm_backward, backend=name),
        partial(normops.batch_renorm, backend=name),
        partial(normops.batch_renorm_backward, backend=name), dtypes=ALL, fused=True)
    return on_library(impl, array_library(library, device))


REFERENCE = backend_implementation("reference")


def bn_step(impl, case, *, training=True, convention="pytorch", with_running=True,
            running=None):
    """batch_norm then batch_norm_backward on ``case``; ``running``: the arrays to update
    in place (default: fresh copies of the case's, or None when not ``with_running``)."""
    rm, rv = running or (case.running() if with_running else (None, None))
    y, saved = impl.batch_norm(case.x, case.gamma, case.beta, rm, rv, training=training,
                               momentum=case.momentum, eps=case.eps, axis=case.axis,
                               convention=convention)
    dx, dgamma, dbeta = impl.batch_norm_backward(case.dy, case.x, saved, case.gamma,
                                                 axis=case.axis)
    return dict(y=y, running_mean=rm, running_var=rv, dx=dx, dgamma=dgamma, dbeta=dbeta,
                training=training)


def brn_step(impl, case, *, training=True, rmax=3.0, dmax=5.0, running=None):
    rm, rs = running or case.running()
    y, saved = impl.batch_renorm(case.x, case.gamma, case.beta, rm, rs, training=training,
                                 rmax=rmax, dmax=dmax, momentum=case.momentum, eps=case.eps,
                                 axis=case.axis)
    dx, dgamma, dbeta = impl.batch_renorm_backward(case.dy, case.x, saved, case.gamma,
                                                   axis=case.axis)
    return dict(y=y, running_mean=rm, running_std=rs, dx=dx, dgamma=dgamma, dbeta=dbeta,
                training=training, rmax=rmax, dmax=dmax)


def step_scales(case, step):
    """The term scales (see term_scales) of a step, from the statistics the reference
    normalizes with in that step."""
    running = case.running()  # the reference must not update the step's arrays
    if "running_std" in step:
        _, saved = REFERENCE.batch_renorm(
            case.x, case.gamma, case.beta, *running, training=step["training"],
            rmax=step["rmax"], dmax=step["dmax"], momentum=0.0, eps=case.eps, axis=case.axis)
    else:
        _, saved = REFERENCE.batch_norm(case.x, case.gamma, case.beta, *running,
                                        training=step["training"], momentum=0.0,
                                        eps=case.eps, axis=case.axis, convention="pytorch")
    scales = term_scales(case, saved.mean, saved.invstd, getattr(saved, "r", None),
                         getattr(saved, "d", None), training=step["training"])
    return {**scales, **running_scales(case)} if step["training"] else scales


ARRAYS = ("y", "running_mean", "running_var", "running_std", "dx", "dgamma", "dbeta")


def assert_steps_close(actual, expected, case, keys=ARRAYS):
    """Compare two steps' arrays, each against the scale of its terms in ``case``."""
    scales = step_scales(case, expected)
    for key in keys:
        if expected.get(key) is not None:
            want = np.asarray(expected[key])
            got = actual[key]
            if not isinstance(got, np.ndarray) or got.dtype != want.dtype:
                what = f"dtype {got.dtype}" if isinstance(got, np.ndarray) else f"a {type(got).__name__}"
                raise AssertionError(f"{key}: {what}, expected an array of {want.dtype}")
            assert_close(got, want, case.x.dtype, scale=scales.get(key), what=key)
