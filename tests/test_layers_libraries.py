"""Layers of other array libraries than NumPy: ``like=`` sets the library (and device) of
a layer's parameters, which its inputs, outputs, gradients, running statistics and state
dicts share. A torch layer and an array_api_strict layer train step by step as a NumPy
layer does; a layer refuses arrays of another library or device; state dicts go to and
from torch.nn.BatchNorm2d; population statistics, eval_affine and folding work on them."""
import copy

import numpy as np
import pytest

import normops

torch = pytest.importorskip("torch")
xps = pytest.importorskip("array_api_strict")

CLASSES = [normops.BatchNorm, normops.BatchRenorm]
DEVICE1 = xps.Device("device1")


def batches(n, shape=(6, 3, 4, 2), dtype=np.float32, seed=0, offset=2.0):
    rng = np.random.default_rng(seed)
    spread = rng.uniform(0.5, 3.0, (1, shape[1]) + (1,) * (len(shape) - 2))
    return [(offset + spread * rng.normal(size=shape)).astype(dtype) for _ in range(n)]


def gradients(n, shape=(6, 3, 4, 2), dtype=np.float32, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(dtype) for _ in range(n)]


def host(arr):
    """A NumPy copy of an array of any of the libraries here."""
    if isinstance(arr, torch.Tensor):
        return arr.detach().cpu().numpy()
    if isinstance(arr, np.ndarray):
        return arr
    return np.from_dlpack(arr)


def strict(a, device=None):
    return xps.asarray(a, device=device)


def options(cls):
    return dict(momentum=0.3) if cls is normops.BatchNorm else dict(momentum=0.3, rmax=1.5, dmax=0.5)


def train_side_by_side(cls, dtype, like, to_library, library_type, *, exact, steps=4, **extra):
    """A NumPy layer and a layer of another library, trained on the same batches with
    SGD on their own parameters, compared after every step."""
    ours = cls(3, dtype=dtype, like=like, **options(cls), **extra)
    reference = cls(3, dtype=dtype, **options(cls))
    tol = {} if exact else dict(rtol=1e-5 if dtype == np.float32 else 1e-12,
                                atol=1e-5 if dtype == np.float32 else 1e-12)
    compare = np.testing.assert_array_equal if exact else (
        lambda a, b: np.testing.assert_allclose(a, b, **tol))
    held = dict(ours.params(), running_mean=ours.running_mean)
    for x, dy in zip(batches(steps, dtype=dtype), gradients(steps, dtype=dtype)):
        y = ours(to_library(x))
        assert isinstance(y, library_type)
        compare(host(y), reference(x))
        dx = ours.backward(to_library(dy))
        assert isinstance(dx, library_type)
        compare(host(dx), reference.backward(dy))
        for name, grad in ours.grads().items():
            assert isinstance(grad, library_type)
            compare(host(grad), reference.grads()[name])
        for layer in (ours, reference):
            for name, p in layer.params().items():
                p -= 0.1 * layer.grads()[name]     # in place, in the layer's library
        compare(host(ours.running_mean), reference.running_mean)
        compare(host(getattr(ours, ours._spread)), getattr(reference, reference._spread))
    assert ours.num_batches_tracked == reference.num_batches_tracked == steps
    for name, p in held.items():   # updated in place: references stay valid
        assert getattr(ours, name) is p
    for mode in ("eval", "train"):
        getattr(ours, mode)(), getattr(reference, mode)()
        x = batches(1, dtype=dtype, seed=9)[0]
        compare(host(ours(to_library(x))), reference(x))
    return ours, reference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", CLASSES)
def test_torch_layer_trains_as_a_numpy_layer(cls, dtype):
    """CPU tensors run the cpu kernels on the tensors' memory: the same numbers exactly."""
    layer, _ = train_side_by_side(cls, dtype, torch.empty(0), torch.from_numpy, torch.Tensor,
                                  exact=True)
    expected = getattr(torch, np.dtype(dtype).name)
    for name, arr in dict(layer.params(), running_mean=layer.running_mean).items():
        assert isinstance(arr, torch.Tensor) and arr.dtype == expected, name
    assert layer.device == torch.device("cpu")


@pytest.mark.parametrize("device", [None, DEVICE1], ids=["cpu-device", "device1"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", CLASSES)
def test_strict_layer_trains_as_a_numpy_layer(cls, dtype, device):
    """array_api_strict arrays take the array-API backend: the same numbers to rounding."""
    like = strict(0.0, device)
    layer, _ = train_side_by_side(cls, dtype, like, lambda a: strict(a, device),
                                  type(like), exact=False)
    assert layer.device == (device or xps.Device("CPU_DEVICE"))
    assert layer.gamma.dtype == getattr(xps, np.dtype(dtype).name)
    assert layer.running_mean.device == layer.device


def test_cumulative_average_on_a_torch_layer():
    ours = normops.BatchNorm(3, momentum=None, like=torch.empty(0), dtype=np.float64)
    reference = normops.BatchNorm(3, momentum=None, dtype=np.float64)
    for x in batches(5, dtype=np.float64):
        ours(torch.from_numpy(x)), reference(x)
    np.testing.assert_array_equal(ours.running_var.numpy(), reference.running_var)


def test_numpy_layer_refuses_tensors():
    layer = normops.BatchNorm(3)
    x = batches(1)[0]
    with pytest.raises(TypeError, match=r"holds NumPy arrays but x is a torch\.Tensor.*like=x"):
        layer(torch.from_numpy(x))
    with pytest.raises(TypeError, match=r"holds NumPy arrays but x is a .*array_api_strict"):
        layer(strict(x))
    assert layer.num_batches_tracked == 0            # a refused batch counts nothing
    layer(x)
    with pytest.raises(TypeError, match=r"holds NumPy arrays but dy is a torch\.Tensor"):
        layer.backward(torch.ones(x.shape))
    layer.backward(np.ones_like(x))
    normops.BatchNorm(3, dtype=np.float64)(x.tolist())   # what np.asarray converts, as before


def test_torch_layer_refuses_numpy_arrays_and_lists():
    layer = normops.BatchRenorm(3, like=torch.empty(0))
    x = batches(1)[0]
    for given in (x, x.tolist(), strict(x)):
        with pytest.raises(TypeError, match=r"holds torch arrays on device cpu but x is a .*"
                                            r"pass x as a torch array.*like=x"):
            layer(given)
    assert layer.num_batches_tracked == 0
    layer(torch.from_numpy(x))
    with pytest.raises(TypeError, match="but dy is a numpy.ndarray"):
        layer.backward(np.ones_like(x))
    with pytest.raises(TypeError, match="holds float32 parameters but x has dtype float64"):
        layer(torch.from_numpy(x).double())


def test_strict_layer_refuses_another_device():
    layer = normops.BatchNorm(3, like=strict(0.0), device=DEVICE1)
    x = batches(1)[0]
    with pytest.raises(ValueError, match=r"holds its parameters on device .*device1.* but x is "
                                         r"on device .*CPU_DEVICE.*move x"):
        layer(strict(x))
    assert layer.num_batches_tracked == 0
    layer(strict(x, DEVICE1))
    with pytest.raises(ValueError, match="but dy is on device"):
        layer.backward(strict(np.ones_like(x)))
    dx = layer.backward(strict(np.ones_like(x), DEVICE1))
    assert dx.device == DEVICE1


def test_construction_errors():
    with pytest.raises(TypeError, match="like must be an array of the array library.*torch.Tensor"):
        normops.BatchNorm(3, like=[0.0])
    with pytest.raises(TypeError, match="like must be an array"):
        normops.BatchRenorm(3, like="torch")
    with pytest.raises(ValueError, match=r"NumPy layer lives on device 'cpu'.*pass like="):
        normops.BatchNorm(3, device="cuda")
    with pytest.raises(ValueError, match="NumPy layer lives on device 'cpu'"):
        normops.BatchNorm(3, like=np.empty(0), device=DEVICE1)
    with pytest.raises(ValueError, match="cannot make array_api_strict arrays of dtype float64"):
        normops.BatchNorm(3, like=strict(0.0), device=xps.Device("no_float64"), dtype="float64")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cannot make torch arrays .* on device 'cuda'"):
            normops.BatchNorm(3, like=torch.empty(0), device="cuda")
    # NumPy layers are as before: device "cpu" (or None) and like a NumPy array are NumPy
    for layer in (normops.BatchNorm(3, device="cpu"), normops.BatchNorm(3, like=np.empty(0))):
        assert layer.xp is np and layer.device == "cpu" and type(layer.gamma) is np.ndarray
        assert repr(layer) == "BatchNorm(3, eps=1e-05, momentum=0.1)"


@pytest.mark.parametrize("given, expected", [
    (None, torch.float32),
    (np.float64, torch.float64),
    (np.dtype("float32"), torch.float32),
    ("float64", torch.float64),
    (torch.float64, torch.float64),
])
def test_dtype_of_a_torch_layer(given, expected):
    kwargs = {} if given is None else dict(dtype=given)
    layer = normops.BatchRenorm(3, like=torch.empty(0), **kwargs)
    assert layer.dtype == expected
    assert layer.gamma.dtype == layer.running_std.dtype == expected
    assert layer.state_dict()["num_batches_tracked"].dtype == torch.int64


def test_dtype_of_a_strict_layer():
    assert normops.BatchNorm(3, like=strict(0.0), dtype="float64").dtype == xps.float64
    assert normops.BatchNorm(3, like=strict(0.0), dtype=xps.float64).dtype == xps.float64
    assert normops.BatchNorm(3, like=strict(0.0)).beta.dtype == xps.float32
    x = strict(np.zeros((2, 3), np.float64))       # an array's dtype object works too
    assert normops.BatchNorm(3, like=x, dtype=x.dtype).dtype == xps.float64


@pytest.mark.parametrize("make, match", [
    (lambda: normops.BatchNorm(3, like=torch.empty(0), dtype=torch.int32), "torch's own"),
    (lambda: normops.BatchNorm(3, like=xps.asarray(0.0), dtype="float16"),
     "got float16; array_api_strict has no float16"),
    (lambda: normops.BatchNorm(3, like=torch.empty(0), dtype=xps.float32), "array_api_strict.float32"),
    (lambda: normops.BatchNorm(3, dtype=torch.float32), "pass like= an array of that library"),
    (lambda: normops.BatchNorm(3, dtype=np.int32), "got int32"),
])
def test_dtype_errors(make, match):
    with pytest.raises(TypeError, match=f"dtype must be float32, float64, float16 or bfloat16.*{match}"):
        make()


def test_repr_shows_the_library_and_device():
    assert repr(normops.BatchNorm(4, like=torch.empty(0), dtype="float64")) == (
        "BatchNorm(4, eps=1e-05, momentum=0.1, dtype=float64, like=torch, device=cpu)")
    assert "like=array_api_strict, device=array_api_strict.Device('device1')" in repr(
        normops.BatchRenorm(4, like=strict(0.0), device=DEVICE1))


def test_reset_and_deepcopy_of_a_torch_layer():
    layer = normops.BatchNorm(3, like=torch.empty(0))
    held = layer.running_var
    layer(torch.from_numpy(batches(1)[0]))
    twin = copy.deepcopy(layer)
    assert twin.xp is layer.xp and twin.device == layer.device
    torch.testing.assert_close(twin.running_var, layer.running_var)
    layer.reset_running_stats()
    assert layer.running_var is held and layer.num_batches_tracked == 0
    torch.testing.assert_close(held, torch.ones(3))
    assert twin.num_batches_tracked == 1


# -- state dicts ------------------------------------------------------------------

def train_torch_bn(steps=5, **kwargs):
    theirs = torch.nn.BatchNorm2d(3, momentum=0.2, **kwargs)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 2.0)
        theirs.bias.normal_()
    for x in batches(steps, seed=3):
        theirs(torch.from_numpy(x))
    return theirs.eval()


def test_state_dicts_between_a_torch_layer_and_torch_nn():
    torch.manual_seed(0)
    theirs = train_torch_bn()
    ours = normops.BatchNorm(3, momentum=0.2, like=torch.empty(0))
    gamma = ours.gamma
    assert ours.load_state_dict(theirs.state_dict()) == ([], [])
    assert ours.gamma is gamma and ours.num_batches_tracked == 5
    ours.load_state_dict(theirs.state_dict(keep_vars=True))    # parameters that require grad
    assert not ours.gamma.requires_grad and ours.gamma.grad_fn is None
    x = torch.from_numpy(batches(1, seed=7)[0])
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs(x), rtol=1e-5, atol=1e-5)
    # and back, with no conversion: the state holds tensors
    ours.train()
    for x_step in batches(3, seed=11):
        ours(torch.from_numpy(x_step))
    state = ours.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    count = state["num_batches_tracked"]
    assert count.dtype == torch.int64 and count.shape == () and count.item() == 8
    assert state["running_mean"] is not ours.running_mean       # copies
    fresh = torch.nn.BatchNorm2d(3)
    fresh.load_state_dict(state)
    assert fresh.num_batches_tracked.item() == 8
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), ours.eval()(x), rtol=1e-5, atol=1e-5)


def test_batch_renorm_torch_layer_and_torch_nn_states():
    torch.manual_seed(1)
    theirs = train_torch_bn(eps=1e-3)
    brn = normops.BatchRenorm(3, eps=1e-3, like=torch.empty(0))
    brn.load_state_dict(theirs.state_dict())           # running_var -> sigma
    torch.testing.assert_close(brn.running_std, torch.sqrt(theirs.running_var + 1e-3))
    x = torch.from_numpy(batches(1, seed=5)[0])
    with torch.no_grad():
        torch.testing.assert_close(brn.eval()(x), theirs(x), rtol=1e-5, atol=1e-5)
    back = torch.nn.BatchNorm2d(3, eps=1e-3)
    back.load_state_dict(brn.batch_norm_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(x), brn(x), rtol=1e-5, atol=1e-5)


def test_state_dicts_across_libraries():
    """Any library's values load into any layer: on its device, in its dtype."""
    numpy_layer = normops.BatchNorm(3, dtype=np.float64)
    for x in batches(3, dtype=np.float64):
        numpy_layer(x)
    numpy_layer.gamma[...] = [0.5, 1.5, 2.0]
    state = numpy_layer.state_dict()
    targets = [normops.BatchNorm(3, like=torch.empty(0)),
               normops.BatchNorm(3, like=strict(0.0), device=DEVICE1),
               normops.BatchNorm(3)]
    sources = [state, {k: torch.from_numpy(v) for k, v in state.items()},
               {k: strict(v, DEVICE1) for k, v in state.items()},
               {k: v.tolist() for k, v in state.items()}]
    for target in targets:
        for source in sources:
            target.reset_running_stats()
            assert target.load_state_dict(source) == ([], [])
            assert target.num_batches_tracked == 3
            for key, value in target.state_dict().items():
                np.testing.assert_allclose(host(value), state[key].astype(np.float32)
                                           if key != "num_batches_tracked" else state[key])
            assert target.running_var.dtype == target.dtype
            if target.xp is not np:
                assert target.running_var.device == target.device
    # a strict layer on device1 takes a state on the cpu device
    layer = targets[1]
    layer.load_state_dict({k: strict(v) for k, v in state.items()})
    assert layer.running_mean.device == DEVICE1


@pytest.mark.parametrize("make", [
    lambda: normops.BatchNorm(3, like=torch.empty(0)),
    lambda: normops.BatchNorm(3, like=strict(0.0)),
], ids=["torch", "strict"])
def test_load_checks_on_other_libraries(make):
    layer = make()
    good = {k: torch.from_numpy(host(v).copy()) for k, v in layer.state_dict().items()}
    before = host(layer.running_mean).copy()
    cases = [
        (dict(running_var=torch.tensor([1.0, -1.0, 1.0])), ValueError, "running_var must be non-negative"),
        (dict(running_var=torch.tensor([1.0, float("nan"), 1.0])), ValueError, "running_var must be"),
        (dict(running_var=torch.ones(4)), ValueError, r"running_var must have shape \(3,\)"),
        (dict(weight=torch.ones(3, dtype=torch.complex64)), TypeError, "weight must hold real numbers"),
        (dict(bias=torch.ones(3, dtype=torch.bool)), TypeError, "bias must hold real numbers"),
        (dict(num_batches_tracked=torch.tensor(2.0)), ValueError, "num_batches_tracked must be"),
        (dict(num_batches_tracked=torch.tensor(-1)), ValueError, "num_batches_tracked must be"),
    ]
    for change, error, match in cases:
        state = dict(good, running_mean=torch.full((3,), 7.0), **change)
        with pytest.raises(error, match=match):
            layer.load_state_dict(state)
        np.testing.assert_array_equal(host(layer.running_mean), before)   # nothing written
    # values of the layer's own library are checked the same way
    own = {k: layer.xp.asarray(host(v), device=layer.device) for k, v in good.items()}
    bad = dict(own, running_var=layer.xp.asarray([1.0, -1.0, 1.0], device=layer.device))
    with pytest.raises(ValueError, match="running_var must be non-negative"):
        layer.load_state_dict(bad)
    brn = normops.BatchRenorm(3, like=layer.xp.asarray(0.0, device=layer.device))
    brn_state = {k: v for k, v in own.items() if k != "running_var"}
    with pytest.raises(ValueError, match="running_std must be positive"):
        brn.load_state_dict(dict(brn_state, running_std=layer.xp.zeros(3, device=layer.device)))


def test_bfloat16_tensors_load_into_a_torch_layer():
    theirs = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor([0.5, 1.25, 2.0]))
    layer = normops.BatchNorm(3, like=torch.empty(0), dtype=np.float64)
    layer.load_state_dict(theirs.to(torch.bfloat16).state_dict())
    assert layer.gamma.dtype == torch.float64
    torch.testing.assert_close(layer.gamma, torch.tensor([0.5, 1.25, 2.0], dtype=torch.float64))


# -- population statistics, eval_affine and folding ----------------------------------------

@pytest.mark.parametrize("cls", CLASSES)
def test_population_stats_on_a_torch_layer(cls):
    xs = [x[: 2 + 2 * i] for i, x in enumerate(batches(4, dtype=np.float64, offset=1e4))]
    ours = cls(3, like=torch.empty(0), dtype=np.float64)
    reference = cls(3, dtype=np.float64)
    assert normops.recompute_population_stats(ours, [torch.from_numpy(x) for x in xs]) == 4
    normops.recompute_population_stats(reference, xs)
    for name in ("running_mean", ours._spread):
        assert isinstance(getattr(ours, name), torch.Tensor)
        np.testing.assert_allclose(getattr(ours, name).numpy(), getattr(reference, name), rtol=1e-12)
    assert ours.num_batches_tracked == 0


def test_population_stats_on_a_strict_layer_on_a_device():
    xs = batches(3, dtype=np.float32)
    ours = normops.BatchNorm(3, like=strict(0.0), device=DEVICE1)
    reference = normops.BatchNorm(3)
    normops.recompute_population_stats(ours, [strict(x, DEVICE1) for x in xs])
    normops.recompute_population_stats(reference, xs)
    assert ours.running_var.device == DEVICE1
    np.testing.assert_allclose(host(ours.running_var), reference.running_var, rtol=1e-6)
    with pytest.raises(ValueError, match="on device"):   # the batches must be on its device
        normops.recompute_population_stats(ours, [strict(x) for x in xs])


def test_population_stats_without_float64():
    """A device without float64 pools in float32 (the kernels' wide dtype there)."""
    device = xps.Device("no_float64")
    xs = batches(3, dtype=np.float32)
    ours = normops.BatchRenorm(3, like=strict(0.0, device))
    reference = normops.BatchRenorm(3)
    normops.recompute_population_stats(ours, [strict(x, device) for x in xs])
    normops.recompute_population_stats(reference, xs)
    np.testing.assert_allclose(host(ours.running_std), reference.running_std, rtol=1e-5)
    scale, shift = ours.eval_affine()
    assert scale.dtype == xps.float32 and scale.device == device


@pytest.mark.parametrize("cls", CLASSES)
def test_eval_affine_and_folding_on_a_torch_layer(cls):
    rng = np.random.default_rng(4)
    ours = cls(3, like=torch.empty(0), **options(cls))
    reference = cls(3, **options(cls))
    for x in batches(4):
        ours(torch.from_numpy(x)), reference(x)
    for got, expected in zip(ours.eval_affine(), reference.eval_affine()):
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-15)
    W, b = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    for fold, args in ((normops.fold_into_linear, (W, b)),
                       (normops.fold_into_conv, (rng.normal(size=(3, 2, 3, 3)).astype(np.float32), None))):
        got = fold(*[None if a is None else torch.from_numpy(a) for a in args], ours)
        expected = fold(*args, reference)
        for g, e in zip(got, expected):
            assert isinstance(g, torch.Tensor) and g.dtype == torch.float32
            np.testing.assert_array_equal(g.numpy(), e)
    with pytest.raises(TypeError, match="W must be a torch array"):
        normops.fold_into_linear(W, None, ours)
    with pytest.raises(TypeError, match="b must be a torch array"):
        normops.fold_into_linear(torch.from_numpy(W), b, ours)


def test_folding_on_a_strict_layer():
    ours = normops.BatchNorm(3, like=strict(0.0), device=DEVICE1, dtype="float64")
    reference = normops.BatchNorm(3, dtype=np.float64)
    for x in batches(3, dtype=np.float64):
        ours(strict(x, DEVICE1)), reference(x)
    W = np.random.default_rng(5).normal(size=(4, 3))
    Wf, bf = normops.fold_into_linear(strict(W, DEVICE1), None, ours, out_axis=1)
    assert Wf.device == DEVICE1
    expected = normops.fold_into_linear(W, None, reference, out_axis=1)
    np.testing.assert_allclose(host(Wf), expected[0], rtol=1e-12)
    np.testing.assert_allclose(host(bf), expected[1], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="W is on device"):
        normops.fold_into_linear(strict(W), None, ours, out_axis=1)


def test_state_values_are_checked_as_the_layer_will_hold_them():
    """Values of forms without plain values are refused by key; spreads are checked after
    the cast to the layer's dtype (1e-300 is 0 in float32), and values beyond its range
    are refused rather than loaded as inf."""
    torch = pytest.importorskip("torch")
    for like in (None, torch.empty(0)):
        bn, brn = normops.BatchNorm(3, like=like), normops.BatchRenorm(3, like=like)
        state = bn.state_dict()
        with pytest.raises(TypeError, match="weight is a tensor on the meta device"):
            bn.load_state_dict({**state, "weight": torch.ones(3, device="meta")})
        with pytest.raises(TypeError, match="running_var is a tensor of layout torch.sparse_coo"):
            bn.load_state_dict({**state, "running_var": torch.ones(3).to_sparse()})
        with pytest.raises(ValueError, match="running_std must be positive"):
            brn.load_state_dict({**brn.state_dict(), "running_std": np.full(3, 1e-300)})
        with pytest.raises(ValueError, match="running_std holds values beyond the range of the layer's dtype float32"):
            brn.load_state_dict({**brn.state_dict(), "running_std": np.full(3, 1e300)})
    with pytest.raises(TypeError, match="like is a tensor on the meta device"):
        normops.BatchNorm(3, like=torch.empty(0, device="meta"))
