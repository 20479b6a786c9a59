"""BatchNorm / BatchRenorm layers: modes, the cumulative average of momentum=None against
statistics of the concatenated data in float64, parameters and gradients for an
optimizer, schedules, state dicts, and the errors a user can hit."""
import numpy as np
import pytest

import normops
from normops.schedules import Linear, renorm_paper


def batches(n, shape=(6, 3, 4), *, offset=5.0, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    spread = rng.uniform(0.5, 3.0, (1, shape[1], 1))
    return [(offset + spread * rng.normal(size=shape) + rng.normal(size=(1, shape[1], 1)))
            .astype(dtype) for _ in range(n)]


def per_batch_moments(xs):
    """Each batch's per-channel mean and biased variance, from the data stacked in float64."""
    stacked = np.stack(xs).astype(np.float64)          # (batches, N, C, L)
    return stacked.mean(axis=(1, 3)), stacked.var(axis=(1, 3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cumulative_average_gives_mean_of_batch_means_and_of_unbiased_variances(dtype):
    xs = batches(7, dtype=dtype)
    layer = normops.BatchNorm(3, momentum=None, dtype=dtype)
    for x in xs:
        layer(x)
    means, variances = per_batch_moments(xs)
    m = xs[0].size // 3
    # equal batches: the mean of the batch means is the mean of the concatenated data
    concatenated = np.concatenate(xs).astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(layer.running_mean, concatenated.mean(axis=(0, 2)), rtol=tol)
    np.testing.assert_allclose(layer.running_var, m / (m - 1) * variances.mean(axis=0), rtol=tol)
    assert layer.num_batches_tracked == 7


def test_cumulative_average_of_batch_renorm_sigmas():
    xs = batches(5, dtype=np.float64)
    layer = normops.BatchRenorm(3, momentum=None, dtype=np.float64, eps=1e-3)
    for x in xs:
        layer(x)
    means, variances = per_batch_moments(xs)
    np.testing.assert_allclose(layer.running_mean, means.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_std, np.sqrt(variances + 1e-3).mean(axis=0), rtol=1e-12)


def test_momentum_matches_the_functional_op_step_by_step():
    xs = batches(3)
    layer = normops.BatchNorm(3, momentum=0.3, convention="keras")
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    for x in xs:
        y = layer(x)
        expected, _ = normops.batch_norm(x, np.ones(3, np.float32), np.zeros(3, np.float32), rm, rv,
                                         momentum=0.3, convention="keras")
        np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(layer.running_mean, rm)
    np.testing.assert_array_equal(layer.running_var, rv)


def test_eval_uses_running_statistics_and_leaves_them_alone():
    x = batches(1)[0]
    layer = normops.BatchNorm(3)
    layer(x)
    before = layer.state_dict()
    y = layer.eval()(x)
    assert not layer.training and layer.num_batches_tracked == 1
    expected = (x - before["running_mean"][:, None]) / np.sqrt(before["running_var"][:, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    assert layer.train() is layer and layer.training


def test_without_running_stats_eval_normalizes_with_the_batch():
    x = batches(1)[0]
    layer = normops.BatchNorm(3, track_running_stats=False)
    assert layer.running_mean is None and layer.running_var is None
    assert layer.num_batches_tracked is None
    np.testing.assert_array_equal(layer.eval()(x), layer.train()(x))
    assert "running_mean" not in layer.state_dict()
    with pytest.raises(ValueError, match="tracks no running statistics"):
        layer.eval_affine()


@pytest.mark.parametrize("options, present", [
    (dict(), ("gamma", "beta")),
    (dict(affine=False), ()),
    (dict(center=False), ("gamma",)),
    (dict(scale=False), ("beta",)),
])
@pytest.mark.parametrize("cls", [normops.BatchNorm, normops.BatchRenorm])
def test_center_and_scale_switches(cls, options, present):
    rng = np.random.default_rng(1)
    x, dy = batches(1)[0], rng.normal(size=(6, 3, 4)).astype(np.float32)
    layer = cls(3, **options)
    assert tuple(layer.params()) == present
    for name in present:
        getattr(layer, name)[...] = rng.uniform(0.5, 2, 3)
    y = layer(x)
    dx = layer.backward(dy)
    assert tuple(layer.grads()) == present
    # the functional op with the absent parameters as None
    op = normops.batch_norm if cls is normops.BatchNorm else normops.batch_renorm
    backward = normops.batch_norm_backward if cls is normops.BatchNorm else normops.batch_renorm_backward
    stats = (np.zeros(3, np.float32), np.ones(3, np.float32))
    extra = {} if cls is normops.BatchNorm else dict(rmax=3.0, dmax=5.0, momentum=0.01)
    y_op, saved = op(x, layer.gamma, layer.beta, *stats, **extra)
    dx_op, dgamma, dbeta = backward(dy, x, saved, layer.gamma)
    np.testing.assert_array_equal(y, y_op)
    np.testing.assert_array_equal(dx, dx_op)
    for name, grad in (("gamma", dgamma), ("beta", dbeta)):
        if name in present:
            np.testing.assert_array_equal(layer.grads()[name], grad)


def test_sgd_updates_the_layer_parameters_in_place():
    x = batches(1)[0]
    dy = np.linspace(-1, 1, x.size, dtype=np.float32).reshape(x.shape)
    layer = normops.BatchNorm(3)
    layer(x)
    layer.backward(dy)
    params, grads = layer.params(), layer.grads()
    expected = {name: p - 0.1 * grads[name] for name, p in params.items()}
    for name, p in params.items():
        p -= 0.1 * grads[name]
    np.testing.assert_array_equal(layer.gamma, expected["gamma"])
    np.testing.assert_array_equal(layer.beta, expected["beta"])
    layer.forward(x)
    with pytest.raises(RuntimeError, match="no gradients yet"):
        layer.grads()           # a new forward invalidates the last backward's gradients


def test_schedule_of_the_paper():
    rmax, dmax = renorm_paper()
    assert [rmax(s) for s in (0, 5000, 22500, 40000, 90000)] == [1.0, 1.0, 2.0, 3.0, 3.0]
    assert [dmax(s) for s in (0, 4999, 15000, 25000, 30000)] == [0.0, 0.0, 2.5, 5.0, 5.0]
    short = renorm_paper(warmup_steps=10, rmax_steps=80, dmax_steps=50)
    assert short.rmax(45) == 2.0 and short.dmax(30) == 2.5
    with pytest.raises(ValueError):
        Linear(1, 3, 10, 5)
    with pytest.raises(ValueError):
        renorm_paper(rmax=0.5)


def test_batch_renorm_evaluates_its_schedule_at_the_step_count():
    xs = batches(4, offset=0.0)
    seen = []

    def rmax(step):
        seen.append(step)
        return 1.0

    layer = normops.BatchRenorm(3, rmax=rmax, dmax=lambda step: 0.0, momentum=0.5)
    reference = normops.BatchNorm(3, momentum=0.5, convention="keras")
    for x in xs:
        # rmax = 1, dmax = 0 is BN, whatever the running statistics
        np.testing.assert_allclose(layer(x), reference(x), rtol=1e-5, atol=1e-6)
    assert seen == [0, 1, 2, 3]
    assert layer.clips(7) == (1.0, 0.0)
    layer.rmax = lambda step: 0.5
    layer.eval()(xs[0])                      # eval mode never asks the schedule
    with pytest.raises(ValueError, match="rmax"):
        layer.train()(xs[0])
    assert layer.num_batches_tracked == 4    # a refused step counts nothing
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(xs[0])                # and leaves no earlier batch to differentiate


def test_schedule_edges():
    assert Linear(1, 3, 5, 5)(5) == 3.0 and Linear(1, 3, 5, 5)(4) == 1.0
    assert renorm_paper(warmup_steps=0, rmax_steps=0, dmax_steps=0).rmax(0) == 3.0
    assert Linear(0, 1, 1e3, 2e3)(1500) == 0.5          # whole numbers written as floats
    with pytest.raises(ValueError, match="begin must be a whole number"):
        Linear(0, 1, 2.5, 4)
    with pytest.raises(ValueError, match="rmax_steps=1000 comes before the end of the warm-up"):
        renorm_paper(rmax_steps=1000)


def test_reset_running_stats_in_place():
    layer = normops.BatchRenorm(3)
    held = layer.running_std
    layer(batches(1)[0])
    layer.reset_running_stats()
    assert layer.running_std is held and layer.num_batches_tracked == 0
    np.testing.assert_array_equal(held, np.ones(3, np.float32))
    np.testing.assert_array_equal(layer.running_mean, np.zeros(3, np.float32))


@pytest.mark.parametrize("cls, key, values", [
    (normops.BatchNorm, "running_var", [-1.0, 1.0, 1.0]),
    (normops.BatchNorm, "running_var", [np.nan, 1.0, 1.0]),
    (normops.BatchRenorm, "running_std", [0.0, 1.0, 1.0]),
    (normops.BatchRenorm, "running_std", [1.0, np.nan, 1.0]),
    (normops.BatchRenorm, "running_var", [1.0, -1.0, 1.0]),    # a BN state into BRN
])
def test_load_refuses_invalid_spreads(cls, key, values):
    layer = cls(3)
    state = {k: v for k, v in layer.state_dict().items() if k not in ("running_var", "running_std")}
    with pytest.raises(ValueError, match=f"{key} must be"):
        layer.load_state_dict({**state, key: np.array(values)})


@pytest.mark.parametrize("cls, key, value, error", [
    (normops.BatchNorm, "weight", [[1.0], [2.0, 3.0]], ValueError),   # ragged
    (normops.BatchNorm, "bias", ["a", "b", "c"], TypeError),
    (normops.BatchNorm, "running_var", ["a", "b", "c"], TypeError),
    (normops.BatchRenorm, "running_var", ["a", "b", "c"], TypeError),  # a BN state into BRN
])
def test_load_names_values_that_are_not_real_numbers(cls, key, value, error):
    layer = cls(3)
    state = {k: v for k, v in layer.state_dict().items() if k not in ("running_var", "running_std")}
    if key in ("weight", "bias"):
        state[layer._spread] = np.ones(3)
    with pytest.raises(error, match=f"^{key} "):
        layer.load_state_dict({**state, key: value})
    with pytest.raises(TypeError, match="state must be a mapping"):
        layer.load_state_dict([("weight", np.ones(3))])


def test_load_without_num_batches_tracked_keeps_the_count():
    layer = normops.BatchNorm(3)
    layer(batches(1)[0])
    state = layer.state_dict()
    del state["num_batches_tracked"]
    assert layer.load_state_dict(state) == ([], [])
    assert layer.num_batches_tracked == 1


def test_state_dict_round_trip_and_atomic_load():
    xs = batches(3)
    trained = normops.BatchNorm(3)
    for x in xs:
        trained(x)
    trained.gamma[...] = [1.5, 0.5, 2.0]
    state = trained.state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert state["num_batches_tracked"].dtype == np.int64 and state["num_batches_tracked"] == 3
    fresh = normops.BatchNorm(3)
    gamma = fresh.gamma
    assert fresh.load_state_dict(state) == ([], [])
    assert fresh.gamma is gamma      # copied into the layer's arrays: optimizers keep them
    np.testing.assert_array_equal(fresh.eval()(xs[0]), trained.eval()(xs[0]))
    bad = dict(state, running_var=np.ones(4))
    with pytest.raises(ValueError, match=r"running_var must have shape \(3,\)"):
        fresh.load_state_dict(dict(bad, running_mean=np.zeros(3)))
    np.testing.assert_array_equal(fresh.running_mean, state["running_mean"])   # nothing written
    with pytest.raises(KeyError, match=r"missing keys \['bias'\].*unexpected keys \['extra'\]"):
        fresh.load_state_dict({**{k: v for k, v in state.items() if k != "bias"}, "extra": 1})
    result = fresh.load_state_dict({"weight": [1, 2, 3], "extra": 1}, strict=False)
    assert result.unexpected_keys == ["extra"] and "bias" in result.missing_keys
    np.testing.assert_array_equal(fresh.gamma, np.array([1, 2, 3], np.float32))


def test_batch_renorm_state_as_batch_norm_state():
    xs = batches(6)
    brn = normops.BatchRenorm(3, momentum=0.3, eps=1e-3)
    for x in xs:
        brn(x)
    state = brn.batch_norm_state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    bn = normops.BatchNorm(3, eps=1e-3)
    bn.load_state_dict(state)
    np.testing.assert_allclose(bn.eval()(xs[0]), brn.eval()(xs[0]), rtol=1e-5, atol=1e-5)
    # and back: a BN state loads into a BatchRenorm as sigma = sqrt(running_var + eps)
    again = normops.BatchRenorm(3, eps=1e-3)
    again.load_state_dict(state)
    np.testing.assert_allclose(again.running_std, brn.running_std, rtol=1e-6)


@pytest.mark.parametrize("call, error, match", [
    (lambda: normops.BatchNorm(0), ValueError, "num_features must be at least 1"),
    (lambda: normops.BatchNorm(2.0), TypeError, "num_features must be an int"),
    (lambda: normops.BatchNorm(3, dtype=np.int32), TypeError, "dtype must be float32, float64, float16 or bfloat16"),
    (lambda: normops.BatchNorm(3, momentum=1.5), ValueError, "momentum"),
    (lambda: normops.BatchNorm(3, eps=0), ValueError, "eps"),
    (lambda: normops.BatchNorm(3, convention="tf"), ValueError, "convention"),
    (lambda: normops.BatchNorm(3, axis=1.0), TypeError, "axis must be an int"),
    (lambda: normops.BatchRenorm(3, rmax=0.5), ValueError, "rmax"),
    (lambda: normops.BatchNorm(3)(np.zeros((4, 3), np.float64)), TypeError, "convert x"),
    (lambda: normops.BatchNorm(3)(np.zeros((4, 5), np.float32)), ValueError, "expects 3 channels"),
    (lambda: normops.BatchNorm(3)(np.zeros(3, np.float32)), ValueError, "at least 2 dimensions"),
    (lambda: normops.BatchNorm(3, axis=2)(np.zeros((4, 3), np.float32)), ValueError, "out of range"),
    (lambda: normops.BatchNorm(3)(np.zeros((1, 3), np.float32)), ValueError, "more than 1 value per channel"),
    (lambda: normops.BatchNorm(3).backward(np.zeros((4, 3), np.float32)), RuntimeError, "forward"),
    (lambda: normops.BatchNorm(3).grads(), RuntimeError, "no gradients yet"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_one_value_per_channel_counts_no_batch():
    layer = normops.BatchNorm(3)
    with pytest.raises(ValueError):
        layer(np.zeros((1, 3), np.float32))
    assert layer.num_batches_tracked == 0
    np.testing.assert_array_equal(layer.running_var, np.ones(3, np.float32))
    layer.eval()(np.zeros((1, 3), np.float32))     # eval mode takes a single example


def test_backward_checks_dy_against_the_forward():
    layer = normops.BatchNorm(3)
    layer(batches(1)[0])
    with pytest.raises(ValueError, match="dy must have the shape of x"):
        layer.backward(np.zeros((6, 3), np.float32))


def test_channels_last_layer():
    x = batches(1)[0]
    nhwc = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    first, last = normops.BatchNorm(3), normops.BatchNorm(3, axis=-1)
    np.testing.assert_allclose(np.moveaxis(last(nhwc), -1, 1), first(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(last.running_var, first.running_var, rtol=1e-6)
    assert "axis=-1" in repr(last)
