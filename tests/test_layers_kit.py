"""The conformance kit through the layer API: BatchNorm / BatchRenorm layers wrapped as a
normops.testing Implementation must pass every property the functional ops pass, the
gradient checks among them; also layers of torch and array_api_strict (made with
like=x), fed the kit's cases as arrays of their library."""
import array_api_compat
import pytest

import normops
from normops import testing


def _layer(cls, x, gamma, beta, running, *, training, axis, residual=None, **options):
    """A layer holding the case's own arrays, so that running statistics are updated in
    the caller's arrays as the functional ops do; an absent gamma or beta is a layer
    built with scale=False or center=False."""
    layer = cls(x.shape[axis], axis=axis, dtype=x.dtype, like=x, scale=gamma is not None,
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
    return layer, layer(x, residual=residual)


class _Forward:
    """What the adapter's forward hands to its backward: the layer and its output."""

    def __init__(self, layer, y):
        self.layer, self.y = layer, y


def _backward(dy, x, saved, gamma, *, y=None, axis=None):
    layer = saved.layer
    if array_api_compat.is_numpy_array(x):   # the library adapters convert them anew
        assert x is layer._x and gamma is layer.gamma
        assert y is None or y is saved.y   # the layer masks with the y it kept itself
    out = layer.backward(dy)   # dx, or (dx, dz) after a forward with a residual
    dx, *dz = out if isinstance(out, tuple) else (out,)
    grads = layer.grads()
    # the kit wants dgamma and dbeta at gamma = 1, beta = 0 when they are absent; a layer
    # keeps no gradient for a parameter it lacks, so they come from the op the layer
    # differentiates with, on the layer's own saved forward (computed from x, not from
    # the rounded y: in float16 that would be ulps off, and its dtype is float32 then)
    if "beta" not in grads or "gamma" not in grads:
        _, dgamma, dbeta, *_ = layer._op_backward(dy, layer._x, layer._saved, layer._y)
        grads.setdefault("gamma", dgamma)
        grads.setdefault("beta", dbeta)
    return (dx, grads["gamma"], grads["beta"], *dz)


def bn_via_layer(x, gamma, beta, running_mean, running_var, *, training, momentum, eps, axis,
                 convention, residual=None, activation=None):
    layer, y = _layer(normops.BatchNorm, x, gamma, beta, (running_mean, running_var),
                      training=training, axis=axis, momentum=momentum, eps=eps, convention=convention,
                      residual=residual, activation=activation)
    return y, _Forward(layer, y)


def brn_via_layer(x, gamma, beta, running_mean, running_std, *, training, rmax, dmax, momentum,
                  eps, axis, residual=None, activation=None):
    layer, y = _layer(normops.BatchRenorm, x, gamma, beta, (running_mean, running_std),
                      training=training, axis=axis, rmax=rmax, dmax=dmax, momentum=momentum, eps=eps,
                      residual=residual, activation=activation)
    return y, _Forward(layer, y)


# layers take every dtype normops takes: float16 and bfloat16 too (float32 or half gamma),
# and the fused epilogue (activation=, forward(x, residual=z))
LAYERS = testing.Implementation("layers", bn_via_layer, _backward, brn_via_layer, _backward,
                                dtypes=testing.strategies.ALL_DTYPES, fused=True)


@pytest.mark.parametrize("prop", testing.properties(), ids=str)
def test_layers_pass_the_kit(prop):
    result = testing.run_property(prop, LAYERS)
    assert result.status == "passed", result.message


@pytest.mark.parametrize("prop", testing.properties(), ids=str)
@pytest.mark.parametrize("library", ["torch", "array_api_strict"])
def test_layers_of_other_libraries_pass_the_kit(library, prop):
    pytest.importorskip(library)
    impl = testing.on_library(LAYERS, testing.array_library(library))
    result = testing.run_property(prop, impl)
    # array_api_strict has no float16 or bfloat16: the half property is n/a on it
    assert result.status == "passed" or (result.status == "n/a" and prop.why_not(impl)), result.message
    assert result.status == "passed" or library == "array_api_strict", result.message
