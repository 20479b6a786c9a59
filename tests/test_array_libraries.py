"""Which backend an array picks, what backends() says of the array-library backends,
and what happens where a library (CuPy, a GPU, array-api-compat) is missing."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import normops
from normops import _registry

xps = pytest.importorskip("array_api_strict")


def info(name):
    return {i.name: i for i in normops.backends()}[name]


def cupy_runs_here():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def test_the_array_library_backends_are_listed():
    assert info("array-api").available and info("array-api").auto_for == _registry.ANY_LIBRARY
    assert info("torch").auto_for == "torch" and info("cupy").auto_for == "cupy"
    assert info("cupy").device is None or info("cupy").device == "cuda"


@pytest.mark.skipif(cupy_runs_here(), reason="this machine has CuPy and a GPU")
def test_cupy_is_unavailable_with_its_reason_and_install_line():
    cupy = info("cupy")
    assert not cupy.available
    assert "CuPy is not installed" in cupy.reason or "no usable CUDA GPU" in cupy.reason \
        or "no CUDA GPU" in cupy.reason
    with pytest.raises(normops.BackendUnavailableError, match=r"backend 'cupy' is not available: .*pip install 'normops\[cupy\]'"):
        normops.get_backend("cupy")
    done = subprocess.run([sys.executable, "-m", "normops", "check", "--backend", "cupy"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert "backend 'cupy' is not available" in done.stderr and cupy.reason in done.stderr


def test_each_array_picks_its_backend():
    torch = pytest.importorskip("torch")
    assert _registry.backend_for(np.ones((2, 2))) is normops.get_backend("cpu")
    assert _registry.backend_for([[1.0, 2.0]]) is normops.get_backend("cpu")
    assert _registry.backend_for(xps.ones((2, 2))) is normops.get_backend("array-api")
    assert _registry.backend_for(torch.ones(2, 2)) is normops.get_backend("torch")
    assert _registry.backend_for(torch.nn.Parameter(torch.ones(2, 2))) is normops.get_backend("torch")


def test_a_backend_refuses_arrays_it_cannot_take():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"backend 'torch' cannot take x: the torch backend works on "
                                        r"torch.Tensor, got a numpy.ndarray"):
        normops.batch_norm(np.ones((4, 3)), backend="torch")
    with pytest.raises(TypeError, match=r"backend 'cpu' works on numpy arrays, got a array_api_strict"):
        normops.batch_norm(xps.ones((4, 3)), backend="cpu")
    # values that are no library's arrays get NumPy's checks, as on the cpu backend
    with pytest.raises(TypeError, match=r"x must have dtype float32, float64, float16 or bfloat16, got <U1"):
        normops.batch_norm("x", backend="array-api")
    del torch


def test_without_array_api_compat_the_backends_say_what_to_install():
    """A fresh interpreter in which array_api_compat cannot be imported."""
    script = textwrap.dedent("""
        import sys
        sys.modules["array_api_compat"] = None   # import array_api_compat -> ImportError
        import numpy as np, normops, array_api_strict as xps
        listed = {i.name: i for i in normops.backends()}
        assert not listed["array-api"].available, listed["array-api"]
        print(listed["array-api"].reason)
        try:
            normops.batch_norm(np.ones((4, 3)), backend="array-api")
        except normops.BackendUnavailableError as exc:
            print(exc)
        try:
            normops.batch_norm(xps.ones((4, 3)))
        except TypeError as exc:
            print(exc)
        y, _ = normops.batch_norm(np.ones((4, 3)) + np.arange(4)[:, None])   # NumPy needs nothing
        print(type(y).__name__)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "array-api-compat is not installed" in lines[0]
    assert "pip install 'normops[array-api]'" in lines[1]
    assert "through array-api-compat: pip install 'normops[array-api]'" in lines[2]
    assert lines[3] == "ndarray"
