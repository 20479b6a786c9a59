"""A layer given x of another dtype than its own says how to convert x, in the terms of
what x is: astype for a NumPy array, np.asarray for a list (which has no astype), and a
library-neutral "convert x to ..." for a tensor; following the hint works."""
import numpy as np
import pytest

import normops
from optional_torch import import_torch

LIST_X = [[1.0, 2.0], [3.0, 4.0]]   # np.asarray makes it float64


def _message(layer, x):
    with pytest.raises(TypeError) as info:
        layer(x)
    return str(info.value)


@pytest.mark.parametrize("x", [LIST_X, tuple(map(tuple, LIST_X))], ids=["list", "tuple"])
def test_list_hint_uses_asarray(x):
    layer = normops.BatchNorm(2)
    message = _message(layer, x)
    assert "holds float32 parameters but x has dtype float64" in message
    assert "convert x (np.asarray(x, dtype=np.float32))" in message
    assert "astype" not in message
    assert "create the layer with dtype=np.float64" in message
    # the hint, followed, runs
    y = layer(np.asarray(x, dtype=np.float32))
    assert y.dtype == np.float32


def test_list_hint_for_a_bfloat16_layer():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    layer = normops.BatchNorm(2, dtype="bfloat16")
    message = _message(layer, LIST_X)
    assert "convert x (np.asarray(x, dtype=ml_dtypes.bfloat16))" in message
    assert "astype" not in message
    assert layer(np.asarray(LIST_X, dtype=ml_dtypes.bfloat16)).dtype == ml_dtypes.bfloat16


@pytest.mark.parametrize("x", [np.array(LIST_X), np.array(LIST_X).astype(">f8"),
                               np.asfortranarray(LIST_X)],
                         ids=["float64", "byte-swapped", "fortran"])
def test_array_hint_uses_astype(x):
    layer = normops.BatchNorm(2)
    message = _message(layer, x)
    assert "convert x (x.astype(np.float32))" in message
    assert "np.asarray" not in message
    assert layer(x.astype(np.float32)).dtype == np.float32


def test_array_hint_for_a_float64_layer():
    layer = normops.BatchNorm(2, dtype=np.float64)
    message = _message(layer, np.array(LIST_X, np.float16))
    assert "convert x (x.astype(np.float64)) or create the layer with dtype=np.float16" in message


@pytest.mark.parametrize("layer_dtype, x_dtype", [("float32", "float64"), ("bfloat16", "float32"),
                                                  ("float64", "bfloat16")])
def test_tensor_hint(layer_dtype, x_dtype):
    torch = import_torch("the hints of layers given tensors")
    layer = normops.BatchNorm(2, like=torch.empty(0), dtype=getattr(torch, layer_dtype))
    x = torch.tensor(LIST_X, dtype=getattr(torch, x_dtype))
    message = _message(layer, x)
    assert f"holds {layer_dtype} parameters but x has dtype {x_dtype}" in message
    assert f"convert x to {layer_dtype} or create the layer with dtype={x_dtype!r}" in message
    assert "astype" not in message and "np.asarray" not in message
    assert layer(x.to(getattr(torch, layer_dtype))).dtype == getattr(torch, layer_dtype)


def test_tensor_to_a_numpy_layer():
    torch = import_torch("the hints of layers given tensors")
    message = _message(normops.BatchNorm(2), torch.tensor(LIST_X))
    assert "holds NumPy arrays but x is a torch.Tensor" in message
    assert "create the layer with like=x" in message
