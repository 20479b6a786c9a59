"""recompute_population_stats ("precise BN") against the statistics of the concatenated
data computed in float64, for one layer fed directly and for layers inside a network."""
import numpy as np
import pytest

import normops
from normops._registry import backend_library
from normops.testing._libraries import array_library


def ragged_batches(dtype, *, offset, seed=0):
    """Batches of unequal sizes whose means differ, so an average of per-batch variances
    would be wrong: the spread between batch means belongs to the population."""
    rng = np.random.default_rng(seed)
    sizes = (16, 16, 9, 3)
    return [(offset + rng.normal(i, 1.0 + i, (n, 4, 5))).astype(dtype)
            for i, n in enumerate(sizes)]


def concatenated_moments(xs, axis=1):
    data = np.moveaxis(np.concatenate([np.asarray(x, np.float64) for x in xs]), axis, 0)
    flat = data.reshape(data.shape[0], -1)
    return flat.shape[1], flat.mean(axis=1), flat.var(axis=1)


@pytest.mark.parametrize("dtype, offset, rtol", [
    (np.float64, 0.0, 1e-12),
    (np.float64, 1e8, 1e-8),         # Chan's merge keeps the variance under a large offset
    (np.float32, 1e4, 1e-6),
])
@pytest.mark.parametrize("convention", ["pytorch", "keras"])
def test_batch_norm_gets_the_pooled_statistics(backend, dtype, offset, rtol, convention):
    """Each batch measured by the layer's backend's batch_stats kernel, pooled here; a
    backend picked for another library than NumPy (torch, cupy) runs a layer of that
    library, fed its arrays."""
    xs = ragged_batches(dtype, offset=offset)
    library = backend_library(backend)
    lib = array_library(library if library in ("torch", "cupy") else "numpy")
    like = None if lib.name == "numpy" else lib.to_library(np.empty(0, dtype))
    layer = normops.BatchNorm(4, dtype=dtype, convention=convention, backend=backend, like=like)
    assert normops.recompute_population_stats(layer, [lib.to_library(x) for x in xs]) == 4
    n, mean, var = concatenated_moments(xs)
    np.testing.assert_allclose(lib.to_numpy(layer.running_mean), mean, rtol=rtol)
    expected_var = var * n / (n - 1) if convention == "pytorch" else var
    np.testing.assert_allclose(lib.to_numpy(layer.running_var), expected_var, rtol=rtol)
    assert layer.num_batches_tracked == 0 and layer.training


def test_batch_renorm_gets_the_pooled_sigma():
    xs = ragged_batches(np.float64, offset=3.0)
    layer = normops.BatchRenorm(4, dtype=np.float64, eps=1e-3)
    normops.recompute_population_stats(layer, iter(xs))      # any iterable, length unknown
    n, mean, var = concatenated_moments(xs)
    np.testing.assert_allclose(layer.running_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_std, np.sqrt(var + 1e-3), rtol=1e-12)


def test_channels_last_layer():
    xs = [np.ascontiguousarray(np.moveaxis(x, 1, -1)) for x in ragged_batches(np.float64, offset=1.0)]
    layer = normops.BatchNorm(4, axis=-1, dtype=np.float64)
    normops.recompute_population_stats(layer, xs)
    n, mean, var = concatenated_moments(xs, axis=-1)
    np.testing.assert_allclose(layer.running_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, var * n / (n - 1), rtol=1e-12)


def test_layers_inside_a_network():
    """Two BN layers with a linear map between them: the second sees what the first
    outputs when it normalizes with each batch's statistics (training behaviour)."""
    rng = np.random.default_rng(3)
    W = rng.normal(size=(4, 6))
    first, second = normops.BatchNorm(4, dtype=np.float64), normops.BatchNorm(6, dtype=np.float64)
    first.gamma[...] = rng.uniform(0.5, 2, 4)
    xs = [rng.normal(2.0, 3.0, (n, 4)) for n in (10, 10, 7)]

    def network(x):
        return second(first(x) @ W)

    first.eval()
    second.eval()     # the modes do not matter while collecting, and are kept
    normops.recompute_population_stats([first, second], xs, forward=network)
    assert not first.training and not second.training
    hidden = []
    for x in xs:
        y, _ = normops.batch_norm(x, first.gamma, None, training=True)
        hidden.append(y @ W)
    n, mean, var = concatenated_moments(hidden)
    np.testing.assert_allclose(second.running_mean, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(second.running_var, var * n / (n - 1), rtol=1e-10)
    n, mean, var = concatenated_moments(xs)
    np.testing.assert_allclose(first.running_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(first.running_var, var * n / (n - 1), rtol=1e-12)


def test_batch_renorm_inside_a_network_normalizes_with_the_batch():
    """While collecting, a BatchRenorm must not correct with its old running statistics
    (r, d): the next layer then pools what it will see in eval mode."""
    rng = np.random.default_rng(4)
    brn = normops.BatchRenorm(3, rmax=10.0, dmax=10.0, dtype=np.float64)   # fresh: mu 0, sigma 1
    bn = normops.BatchNorm(3, affine=False, dtype=np.float64)
    xs = [rng.normal(3.0, 2.0, (50, 3)) for _ in range(8)]

    def network(x):
        return bn(brn(x))

    normops.recompute_population_stats([brn, bn], xs, forward=network)
    hidden = [normops.batch_norm(x, brn.gamma, brn.beta, training=True)[0] for x in xs]
    n, mean, var = concatenated_moments(hidden)
    np.testing.assert_allclose(bn.running_mean, mean, atol=1e-12)
    np.testing.assert_allclose(bn.running_var, var * n / (n - 1), rtol=1e-10)
    brn.eval()
    bn.eval()
    out = np.concatenate([network(x) for x in xs])
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=0.05)   # eval is centred now


def test_state_is_restored_when_a_batch_fails():
    layer = normops.BatchNorm(4, dtype=np.float64)
    before = layer.state_dict()
    bad = [np.ones((3, 4)), np.ones((3, 5))]
    with pytest.raises(ValueError, match="expects 4 channels"):
        normops.recompute_population_stats(layer, bad)
    assert layer._collector is None
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    layer(np.arange(8.0).reshape(2, 4))          # trains normally afterwards
    assert layer.num_batches_tracked == 1


def test_progress_line(capsys):
    layer = normops.BatchNorm(4, dtype=np.float64)
    normops.recompute_population_stats(layer, ragged_batches(np.float64, offset=0.0), progress=True)
    err = capsys.readouterr().err
    assert "batch 4/4" in err and err.endswith("\n")


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((normops.BatchNorm(2, track_running_stats=False), [np.ones((2, 2))]), {}, ValueError,
     "tracks no running statistics"),
    (([normops.BatchNorm(2), normops.BatchNorm(2)], [np.ones((2, 2))]), {}, ValueError,
     "pass forward="),
    (([], []), {}, TypeError, "BatchNorm/BatchRenorm layer"),
    (("layer", []), {}, TypeError, "BatchNorm/BatchRenorm layer"),
    ((5, []), {}, TypeError, "BatchNorm/BatchRenorm layer"),
    ((normops.BatchNorm(2), []), {}, ValueError, "saw no batch"),
    (([normops.BatchNorm(2), normops.BatchNorm(2)], [np.ones((2, 2), np.float32)]),
     dict(forward=lambda x: None), ValueError, "layer 0 .* saw no batch"),
])
def test_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        normops.recompute_population_stats(*args, **kwargs)
