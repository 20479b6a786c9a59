"""The examples of the README and docs/ run as written and do what their comments say."""
import numpy as np
import pytest

import normops
from optional_torch import import_torch
from doc_blocks import run_doc_block


def test_example_block():
    names = run_doc_block("test: example")
    assert names["y"].shape == names["x"].shape and names["dx"].dtype == np.float32
    assert np.all(names["running_mean"] != 0)       # updated in place by the training calls


def test_layers_block():
    names = run_doc_block("test: layers")
    bn, brn = names["bn"], names["brn"]
    assert bn.num_batches_tracked == 1 and not bn.training
    # dy = 1 gives dbeta = m = 32 * 8 * 8 per channel, and the SGD step moved beta by 0.1 of it
    np.testing.assert_allclose(bn.beta, -0.1 * 32 * 8 * 8, rtol=1e-6)
    assert brn.clips(0) == (1.0, 0.0) and brn.clips(40000) == (3.0, 5.0)


def test_bfloat16_block():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 NumPy arrays need ml_dtypes")
    names = run_doc_block("test: bfloat16 example")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    assert names["y"].dtype == bf16 and names["dx"].dtype == bf16 and names["y_layer"].dtype == bf16
    assert names["dgamma"].dtype == np.float32 and names["running_var"].dtype == np.float32
    # as the comments say: normalized per channel, and the running statistics updated
    y = names["y"].astype(np.float64)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=2e-3)
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1.0, atol=1e-2)
    np.testing.assert_allclose(names["running_mean"], 0.3, atol=0.03)
    # dy = 1: dbeta is the count of values per channel, dx is 0 (to bfloat16's rounding)
    np.testing.assert_array_equal(names["dbeta"], np.float32(64 * 8 * 8))
    assert np.abs(names["dx"].astype(np.float64)).max() < 1e-2


def test_torch_block():
    torch = import_torch("the PyTorch example")
    names = run_doc_block("test: torch example")
    x, y, dx = names["x"], names["y"], names["dx"]
    for result in (y, dx, names["dgamma"], names["saved"].mean):
        assert isinstance(result, torch.Tensor)
    assert dx.is_contiguous(memory_format=torch.channels_last)
    assert torch.all(names["running_mean"] != 0)   # updated in place
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(16), atol=1e-5, rtol=0)


def test_cupy_block():
    cupy = pytest.importorskip("cupy", reason="the CuPy example needs CuPy and an NVIDIA GPU")
    if not normops.backends()[[i.name for i in normops.backends()].index("cupy")].available:
        pytest.skip("the CuPy example needs an NVIDIA GPU")
    names = run_doc_block("test: cupy example")
    for result in (names["y"], names["dx"], names["dgamma"], names["saved"].mean):
        assert isinstance(result, cupy.ndarray)
    assert float(cupy.abs(names["y"].mean(axis=(0, 2, 3))).max()) < 1e-5


def test_torch_layer_block():
    torch = import_torch("the PyTorch layer example")
    names = run_doc_block("test: torch layer")
    bn, x = names["bn"], names["x"]
    assert isinstance(names["y"], torch.Tensor) and isinstance(names["dx"], torch.Tensor)
    torch.testing.assert_close(names["torch_bn"].running_mean, bn.running_mean)
    with pytest.raises(TypeError, match="like=x"):
        bn(x.numpy())


def test_fused_block():
    names = run_doc_block("test: fused example")
    x, z, y, dy = names["x"], names["z"], names["y"], names["dy"]
    # as the comments say: y = relu(BN(x) + z), the layer's too; dz is dy masked by y
    bn, _ = normops.batch_norm(x, names["gamma"], names["beta"])
    np.testing.assert_array_equal(y, np.maximum(bn + z, np.float32(0)))
    np.testing.assert_array_equal(names["y_layer"], y)
    np.testing.assert_array_equal(names["dz"], np.where(y > 0, dy, 0))
    np.testing.assert_array_equal(names["dz_layer"], names["dz"])
    np.testing.assert_allclose(names["dx_layer"], names["dx"], rtol=0, atol=1e-6)
    assert np.all(names["running_mean"] != 0)   # updated in place
