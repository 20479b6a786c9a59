"""Layers and torch tensors in float16/bfloat16: float32 layers over half x (master
weights), half layers, state dicts to and from PyTorch's BatchNorm2d in float32 and
converted to bfloat16/float16, and bfloat16 tensors through the torch backend.

HALF_BACKENDS: as in test_half_dtypes (add "cpu" once its kernels take halves; the
bridge test then runs without its monkeypatch)."""
import numpy as np
import pytest

import normops
from normops._halves import round_to

ml_dtypes = pytest.importorskip("ml_dtypes")
torch = pytest.importorskip("torch")

HALF_BACKENDS = ["reference", "reference-kernels", "array-api"]
BF16 = np.dtype(ml_dtypes.bfloat16)
HALVES = {"float16": (np.dtype(np.float16), torch.float16), "bfloat16": (BF16, torch.bfloat16)}
LAYERS = {"bn": normops.BatchNorm, "brn": normops.BatchRenorm}


def _x(dtype, shape=(8, 3, 2, 2), seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 2 + 1).astype(dtype)


@pytest.mark.parametrize("be", HALF_BACKENDS)
@pytest.mark.parametrize("half", HALVES)
@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("layer_dtype", ["float32", "half"])
def test_layer_trains_on_half_x(be, half, kind, layer_dtype):
    np_half = HALVES[half][0]
    dtype = np.float32 if layer_dtype == "float32" else np_half
    layer = LAYERS[kind](3, dtype=dtype, backend=be)
    x = _x(np_half)
    for _ in range(2):
        y = layer(x)
        dx = layer.backward(_x(np_half, seed=3))
        for name, p in layer.params().items():   # an optimizer step in the parameters' dtype
            p -= (0.1 * layer.grads()[name].astype(np.float64)).astype(p.dtype)
    assert y.dtype == dx.dtype == np_half
    assert {g.dtype for g in layer.grads().values()} == {np.dtype(dtype)}
    spread = layer.running_var if kind == "bn" else layer.running_std
    assert layer.running_mean.dtype == spread.dtype == np.dtype(dtype)
    assert not np.allclose(layer.running_mean.astype(np.float64), 0)
    layer.eval()
    assert layer(x).dtype == np_half


@pytest.mark.parametrize("half", HALVES)
def test_layer_dtype_mismatches_are_refused(half):
    np_half = HALVES[half][0]
    other = np.float16 if half == "bfloat16" else BF16
    cases = [(normops.BatchNorm(3, dtype=np_half), np.float32, "holds .* parameters but x has dtype float32"),
             (normops.BatchNorm(3, dtype=np_half), other, f"but x has dtype {np.dtype(other).name}"),
             (normops.BatchNorm(3, dtype=np.float64), np_half, f"float64 parameters but x has dtype {half}"),
             (normops.BatchRenorm(3, dtype=np_half), np.float64, "but x has dtype float64")]
    for layer, x_dtype, match in cases:
        with pytest.raises(TypeError, match=match):
            layer(_x(x_dtype))
    layer = normops.BatchNorm(3, backend="reference")
    layer(_x(np_half))
    with pytest.raises(TypeError, match=f"dy has dtype float32 but x has dtype {half}"):
        layer.backward(_x(np.float32))


def test_layer_dtype_spellings():
    for spelling in ("bfloat16", ml_dtypes.bfloat16, BF16):
        assert normops.BatchNorm(2, dtype=spelling).gamma.dtype == BF16
    for spelling in ("bfloat16", torch.bfloat16, ml_dtypes.bfloat16):
        assert normops.BatchNorm(2, like=torch.empty(0), dtype=spelling).gamma.dtype == torch.bfloat16
    assert normops.BatchNorm(2, like=torch.empty(0), dtype=np.float16).gamma.dtype == torch.float16
    with pytest.raises(TypeError, match="dtype must be float32, float64, float16 or bfloat16"):
        normops.BatchNorm(2, dtype=np.int16)


def _torch_module(kind_dtype):
    module = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([0.5, 1.25, 2.0]))
        module.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        module.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]) / 3)
        module.running_var.copy_(torch.tensor([1.5, 0.25, 4.0]) / 3)
    module.num_batches_tracked.fill_(7)
    return module.to(kind_dtype)


@pytest.mark.parametrize("module_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layer_dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_state_dict_round_trip_with_torch(module_dtype, layer_dtype, library):
    like = torch.empty(0) if library == "torch" else None
    layer = normops.BatchNorm(3, dtype=layer_dtype, like=like, backend=None if like is not None else "reference")
    theirs = _torch_module(module_dtype)
    layer.load_state_dict(theirs.state_dict())
    for key, value in theirs.state_dict().items():   # each value rounded once to the layer's dtype
        if key == "num_batches_tracked":
            assert layer.num_batches_tracked == 7
            continue
        ours = layer.state_dict()[key]
        ours = ours.double().numpy() if library == "torch" else ours.astype(np.float64)
        np_dtype = BF16 if layer_dtype == "bfloat16" else np.dtype(layer_dtype)
        want = round_to(value.double().numpy(), np_dtype).astype(np.float64)
        np.testing.assert_array_equal(ours, want, err_msg=key)
    # and back: into a fresh module of the module's dtype
    back = torch.nn.BatchNorm2d(3).to(module_dtype)
    state = layer.state_dict()
    if library == "numpy":   # torch.from_numpy knows no ml_dtypes array: widen
        state = {k: torch.from_numpy(np.asarray(v, np.float64 if v.ndim else np.int64))
                 for k, v in state.items()}
    back.load_state_dict(state)
    for key in ("weight", "bias", "running_mean", "running_var"):
        ours = layer.state_dict()[key]
        ours = ours.double().numpy() if library == "torch" else ours.astype(np.float64)
        # exact where the module's dtype holds the layer's values (float32, or the same)
        want = torch.from_numpy(ours).to(module_dtype).double().numpy()
        np.testing.assert_array_equal(back.state_dict()[key].double().numpy(), want, err_msg=key)
    assert int(back.num_batches_tracked) == 7


@pytest.mark.parametrize("half", HALVES)
def test_float32_layer_matches_torch_autocast_style_training(half):
    """A float32 layer over half x against torch's BatchNorm2d (float32 module on the
    half input widened: what it computes in float32, rounded to the half dtype)."""
    np_half, t_half = HALVES[half]
    layer = normops.BatchNorm(3, backend="reference")
    module = torch.nn.BatchNorm2d(3)
    x = _x(np_half)
    y = layer(x)
    tx = torch.from_numpy(x.astype(np.float32)).requires_grad_()
    ty = module(tx)
    np.testing.assert_allclose(y.astype(np.float32), ty.detach().to(t_half).float().numpy(),
                               rtol=2 ** -7, atol=2 ** -7)
    np.testing.assert_allclose(layer.running_var, module.running_var.numpy(), rtol=1e-5)


@pytest.mark.parametrize("half", HALVES)
def test_torch_half_tensors_on_the_array_api_path(half):
    """CUDA tensors take this path; here on CPU tensors (TorchBackend(cpu_kernels=False))."""
    from normops._backends.torch import TorchBackend
    normops.register_backend("torch-composed-half", TorchBackend(cpu_kernels=False), replace=True)
    np_half, t_half = HALVES[half]
    x = _x(np_half)
    tx = torch.from_numpy(x.astype(np.float32)).to(t_half)
    g, b = np.array([1.5, 0.5, 2.0], np.float32), np.array([0.0, 1.0, 2.0], np_half)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np_half)
    trm, trv = torch.zeros(3), torch.ones(3, dtype=t_half)
    tb = torch.from_numpy(b.astype(np.float32)).to(t_half)
    y, saved = normops.batch_norm(x, g, b, rm, rv, backend="reference")
    ty, tsaved = normops.batch_norm(tx, torch.from_numpy(g), tb, trm, trv, backend="torch-composed-half")
    assert ty.dtype == t_half and trv.dtype == t_half and trm.dtype == torch.float32
    np.testing.assert_array_equal(ty.float().numpy(), y.astype(np.float32))
    np.testing.assert_array_equal(trv.float().numpy(), rv.astype(np.float32))
    dx, dg, db = normops.batch_norm_backward(x, x, saved, g, backend="reference")
    tdx, tdg, tdb = normops.batch_norm_backward(tx, tx, tsaved, torch.from_numpy(g),
                                                backend="torch-composed-half")
    assert (tdx.dtype, tdg.dtype, tdb.dtype) == (t_half, torch.float32, torch.float32)
    np.testing.assert_array_equal(tdx.float().numpy(), dx.astype(np.float32))
    with pytest.raises(TypeError, match="gamma has dtype float64 but x has dtype"):
        normops.batch_norm(tx, torch.ones(3, dtype=torch.float64), backend="torch-composed-half")


@pytest.mark.parametrize("half", HALVES)
def test_torch_cpu_bridge_passes_half_tensors_without_a_copy(half, monkeypatch):
    """The bridge's views: bfloat16 tensors as ml_dtypes arrays on the same memory. Run
    on the reference backend until the cpu kernels take halves (then drop the patch)."""
    from normops._backends import torch as torch_backend
    monkeypatch.setattr(torch_backend.CpuTensors, "backend", "reference")
    np_half, t_half = HALVES[half]
    x = _x(np_half)
    tx = torch.from_numpy(x.astype(np.float32)).to(t_half)
    trm, trv = torch.zeros(3, dtype=t_half), torch.ones(3)
    before = trm.data_ptr()
    ty, saved = normops.batch_norm(tx, torch.ones(3), None, trm, trv, backend="torch")
    rm, rv = np.zeros(3, np_half), np.ones(3, np.float32)
    y, _ = normops.batch_norm(x, np.ones(3, np.float32), None, rm, rv, backend="reference")
    assert ty.dtype == t_half and trm.data_ptr() == before
    np.testing.assert_array_equal(ty.float().numpy(), y.astype(np.float32))
    np.testing.assert_array_equal(trm.float().numpy(), rm.astype(np.float32))
    tdx, tdg, tdb = normops.batch_norm_backward(tx, tx, saved, None, backend="torch")
    assert (tdx.dtype, tdg.dtype, tdb.dtype) == (t_half, torch.float32, torch.float32)
