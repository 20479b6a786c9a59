"""One forward + backward step through the public API, collected for comparison."""
import numpy as np

import normops
from tolerances import assert_close


def bn_step(case, backend, *, training=True, convention="pytorch", with_running=True):
    rm, rv = case.running() if with_running else (None, None)
    y, saved = normops.batch_norm(case.x, case.gamma, case.beta, rm, rv, training=training,
                                  momentum=case.momentum, eps=case.eps, axis=case.axis,
                                  convention=convention, backend=backend)
    dx, dgamma, dbeta = normops.batch_norm_backward(case.dy, case.x, saved, case.gamma,
                                                    backend=backend)
    return dict(y=y, running_mean=rm, running_var=rv, dx=dx, dgamma=dgamma, dbeta=dbeta,
                saved=saved)


def brn_step(case, backend, *, training=True, rmax=3.0, dmax=5.0):
    rm, rs = case.running()
    y, saved = normops.batch_renorm(case.x, case.gamma, case.beta, rm, rs, training=training,
                                    rmax=rmax, dmax=dmax, momentum=case.momentum, eps=case.eps,
                                    axis=case.axis, backend=backend)
    dx, dgamma, dbeta = normops.batch_renorm_backward(case.dy, case.x, saved, case.gamma,
                                                      backend=backend)
    return dict(y=y, running_mean=rm, running_std=rs, dx=dx, dgamma=dgamma, dbeta=dbeta,
                saved=saved)


ARRAYS = ("y", "running_mean", "running_var", "running_std", "dx", "dgamma", "dbeta")


def term_scales(case, step):
    """The size of the terms y = a*x + b and dx = p*dy + ... are made of: both may cancel
    to far below it (a large offset in x; m = 2), and rounding is relative to it."""
    saved = step["saved"]
    gain = np.max(np.abs(saved.invstd * (1.0 if getattr(saved, "r", None) is None else saved.r)))
    gain *= 1.0 if case.gamma is None else np.max(np.abs(case.gamma))
    shift = 0.0 if case.beta is None else np.max(np.abs(case.beta))
    return dict(y=gain * np.max(np.abs(case.x)) + shift, dx=gain * np.max(np.abs(case.dy)))


def assert_steps_close(actual, expected, case, keys=ARRAYS):
    """Compare two steps' arrays; ``expected["saved"]`` sets the term scales."""
    scales = term_scales(case, expected)
    for key in keys:
        if key in expected and expected[key] is not None:
            assert actual[key].dtype == expected[key].dtype, key
            assert_close(actual[key], expected[key], case.x.dtype, scale=scales.get(key), what=key)
