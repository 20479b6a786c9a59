"""Inputs of the half-precision tests (x drawn per channel with its own spread and
offset, rounded to the half dtype, and per-channel arrays in the parameters' dtype), and
a training or eval step of normops BN on them."""
import numpy as np

import normops


def draw(shape, axis, dtype, params, seed=0):
    """x and dy of ``dtype``; gamma of either sign, beta, running statistics of
    ``params``."""
    rng = np.random.default_rng(seed)
    channels = shape[axis]
    bshape = [1] * len(shape)
    bshape[axis] = channels
    x = rng.normal(size=shape) * rng.uniform(0.3, 4.0, bshape) + rng.normal(0, 3, bshape)
    gamma = rng.uniform(0.5, 2.0, channels) * rng.choice([-1, 1], channels)
    return dict(x=x.astype(dtype), dy=rng.normal(size=shape).astype(dtype),
                gamma=gamma.astype(params), beta=rng.normal(size=channels).astype(params),
                running_mean=rng.normal(0, 2, channels).astype(params),
                running_var=rng.uniform(0.5, 4.0, channels).astype(params))


def run_bn(a, axis, training, backend, momentum, eps):
    """Forward and backward on copies of the running statistics: every output."""
    rm, rv = a["running_mean"].copy(), a["running_var"].copy()
    y, saved = normops.batch_norm(a["x"], a["gamma"], a["beta"], rm, rv, training=training,
                                  momentum=momentum, eps=eps, axis=axis, backend=backend)
    dx, dgamma, dbeta = normops.batch_norm_backward(a["dy"], a["x"], saved, a["gamma"],
                                                    backend=backend)
    return dict(y=y, dx=dx, dgamma=dgamma, dbeta=dbeta, running_mean=rm, running_var=rv)
