"""The conformance kit through the layer API: BatchNorm / BatchRenorm layers wrapped as a
normops.testing Implementation must pass every property the functional ops pass, the
gradient checks among them."""
import numpy as np
import pytest

import normops
from normops import testing


def _layer(cls, x, gamma, beta, running, *, training, axis, **options):
    """A layer holding the case's own arrays, so that running statistics are updated in
    the caller's arrays as the functional ops do. Absent gamma/beta become ones/zeros:
    the kit expects their gradients at gamma = 1, beta = 0, which such a layer returns."""
    layer = cls(x.shape[axis], axis=axis, dtype=x.dtype, **options).train(training)
    layer.gamma = np.ones(x.shape[axis], x.dtype) if gamma is None else gamma
    layer.beta = np.zeros(x.shape[axis], x.dtype) if beta is None else beta
    if running[0] is None:
        layer.track_running_stats = False
        layer.reset_running_stats()
    else:
        layer.running_mean = running[0]
        setattr(layer, layer._spread, running[1])
    return layer


def _backward(dy, x, layer, gamma, *, axis=None):
    assert x is layer._x and gamma is layer.gamma or gamma is None
    dx = layer.backward(dy)
    grads = layer.grads()
    return dx, grads["gamma"], grads["beta"]


def bn_via_layer(x, gamma, beta, running_mean, running_var, *, training, momentum, eps, axis,
                 convention):
    layer = _layer(normops.BatchNorm, x, gamma, beta, (running_mean, running_var),
                   training=training, axis=axis, momentum=momentum, eps=eps, convention=convention)
    return layer(x), layer


def brn_via_layer(x, gamma, beta, running_mean, running_std, *, training, rmax, dmax, momentum,
                  eps, axis):
    layer = _layer(normops.BatchRenorm, x, gamma, beta, (running_mean, running_std),
                   training=training, axis=axis, rmax=rmax, dmax=dmax, momentum=momentum, eps=eps)
    return layer(x), layer


LAYERS = testing.Implementation("layers", bn_via_layer, _backward, brn_via_layer, _backward)


@pytest.mark.parametrize("prop", testing.properties(), ids=str)
def test_layers_pass_the_kit(prop):
    result = testing.run_property(prop, LAYERS)
    assert result.status == "passed", result.message
