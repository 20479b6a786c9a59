"""One forward + backward step through the public API, collected for comparison."""
import numpy as np

import normops
from tolerances import assert_close


def bn_step(case, backend, *, training=True, convention="pytorch", with_running=True,
            running=None):
    """``running``: the arrays to update in place (default: fresh copies of the case's)."""
    rm, rv = running or (case.running() if with_running else (None, None))
    y, saved = normops.batch_norm(case.x, case.gamma, case.beta, rm, rv, training=training,
                                  momentum=case.momentum, eps=case.eps, axis=case.axis,
                                  convention=convention, backend=backend)
    dx, dgamma, dbeta = normops.batch_norm_backward(case.dy, case.x, saved, case.gamma,
                                                    backend=backend)
    return dict(y=y, running_mean=rm, running_var=rv, dx=dx, dgamma=dgamma, dbeta=dbeta,
                saved=saved)


def brn_step(case, backend, *, training=True, rmax=3.0, dmax=5.0, running=None):
    rm, rs = running or case.running()
    y, saved = normops.batch_renorm(case.x, case.gamma, case.beta, rm, rs, training=training,
                                    rmax=rmax, dmax=dmax, momentum=case.momentum, eps=case.eps,
                                    axis=case.axis, backend=backend)
    dx, dgamma, dbeta = normops.batch_renorm_backward(case.dy, case.x, saved, case.gamma,
                                                      backend=backend)
    return dict(y=y, running_mean=rm, running_std=rs, dx=dx, dgamma=dgamma, dbeta=dbeta,
                saved=saved)


ARRAYS = ("y", "running_mean", "running_var", "running_std", "dx", "dgamma", "dbeta")


def term_scales(case, step):
    """Per channel, the size of the terms y = a*x + b and dx = p*dy + q*x + s are made of:
    both may cancel to far below it (a large offset in x; m = 2), and rounding is
    relative to it. Shaped to broadcast against x."""
    saved = step["saved"]
    gain = np.abs(saved.invstd * (1.0 if getattr(saved, "r", None) is None else saved.r))
    if case.gamma is not None:
        gain = gain * np.abs(case.gamma.astype(np.float64))
    shift = 0.0 if case.beta is None else np.abs(case.beta.astype(np.float64))
    x_max = np.abs(case.x).max(axis=case.reduce_axes)
    dy_max = np.abs(case.dy).max(axis=case.reduce_axes)
    return dict(y=case.bc(gain * x_max + shift), dx=case.bc(gain * dy_max))


def assert_steps_close(actual, expected, case, keys=ARRAYS):
    """Compare two steps' arrays; ``expected["saved"]`` sets the term scales."""
    scales = term_scales(case, expected)
    for key in keys:
        if key in expected and expected[key] is not None:
            assert actual[key].dtype == expected[key].dtype, key
            assert_close(actual[key], expected[key], case.x.dtype, scale=scales.get(key), what=key)
