"""The conformance kit through the layer API: BatchNorm / BatchRenorm layers wrapped as a
normops.testing Implementation must pass every property the functional ops pass, the
gradient checks among them."""
import numpy as np
import pytest

import normops
from normops import testing


def _layer(cls, x, gamma, beta, running, *, training, axis, **options):
    """A layer holding the case's own arrays, so that running statistics are updated in
    the caller's arrays as the functional ops do; an absent gamma or beta is a layer
    built with scale=False or center=False."""
    layer = cls(x.shape[axis], axis=axis, dtype=x.dtype, scale=gamma is not None,
                center=beta is not None, **options).train(training)
    if gamma is not None:
        layer.gamma = gamma
    if beta is not None:
        layer.beta = beta
    if running[0] is None:
        layer.track_running_stats = False
        layer.reset_running_stats()
    else:
        layer.running_mean = running[0]
        setattr(layer, layer._spread, running[1])
    return layer, layer(x)


class _Forward:
    """What the adapter's forward hands to its backward: the layer and its output."""

    def __init__(self, layer, y):
        self.layer, self.y = layer, y


def _backward(dy, x, saved, gamma, *, axis=None):
    layer = saved.layer
    assert x is layer._x and gamma is layer.gamma
    dx = layer.backward(dy)
    grads = layer.grads()
    # the kit wants dgamma and dbeta at gamma = 1, beta = 0 when they are absent; a layer
    # keeps no gradient for a parameter it lacks, so they come from its output:
    # y - beta = x_hat (BN) or x_hat r + d (BRN), whose sums with dy are dgamma at gamma = 1
    reduce = tuple(i for i in range(x.ndim) if i != layer._saved.axis)
    if "beta" not in grads:
        grads["beta"] = dy.sum(axis=reduce, dtype=np.float64).astype(x.dtype)
    if "gamma" not in grads:
        shifted = saved.y.astype(np.float64)
        if layer.beta is not None:
            shifted -= np.expand_dims(layer.beta, reduce)
        grads["gamma"] = (dy * shifted).sum(axis=reduce).astype(x.dtype)
    return dx, grads["gamma"], grads["beta"]


def bn_via_layer(x, gamma, beta, running_mean, running_var, *, training, momentum, eps, axis,
                 convention):
    layer, y = _layer(normops.BatchNorm, x, gamma, beta, (running_mean, running_var),
                      training=training, axis=axis, momentum=momentum, eps=eps, convention=convention)
    return y, _Forward(layer, y)


def brn_via_layer(x, gamma, beta, running_mean, running_std, *, training, rmax, dmax, momentum,
                  eps, axis):
    layer, y = _layer(normops.BatchRenorm, x, gamma, beta, (running_mean, running_std),
                      training=training, axis=axis, rmax=rmax, dmax=dmax, momentum=momentum, eps=eps)
    return y, _Forward(layer, y)


LAYERS = testing.Implementation("layers", bn_via_layer, _backward, brn_via_layer, _backward)


@pytest.mark.parametrize("prop", testing.properties(), ids=str)
def test_layers_pass_the_kit(prop):
    result = testing.run_property(prop, LAYERS)
    assert result.status == "passed", result.message
