"""NORMOPS_CUPY_KERNELS picks the cupy backend's kernels when it is first loaded: the
array-API ones (the default) or the fused CUDA ones; any other value makes the backend
unavailable with a message that names the variable and its values."""
import pytest

import normops
from normops import BackendUnavailableError
from normops._backends import cupy as cupy_backend
from normops._backends.cuda_fused import FusedKernels


def _reason(name):
    return next(info.reason for info in normops.backends() if info.name == name)


@pytest.mark.parametrize("value", ["fast", "FUSED", "array_api"])
def test_an_unknown_choice_is_refused_by_name(monkeypatch, register, value):
    monkeypatch.setenv("NORMOPS_CUPY_KERNELS", value)
    with pytest.raises(BackendUnavailableError) as info:
        cupy_backend.load()
    message = str(info.value)
    assert "NORMOPS_CUPY_KERNELS" in message and repr(value) in message
    assert "'array-api'" in message and "'fused'" in message
    register("cupy-choice", "normops._backends.cupy:load")
    assert "NORMOPS_CUPY_KERNELS" in _reason("cupy-choice")


@pytest.mark.parametrize("value", [None, "", " fused ", "array-api"])
def test_known_choices_get_as_far_as_looking_for_cupy(monkeypatch, value):
    """Without CuPy (or a GPU) either choice says so, not that the choice is wrong."""
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here: its GPU check decides")
    except ImportError:
        pass
    if value is None:
        monkeypatch.delenv("NORMOPS_CUPY_KERNELS", raising=False)
    else:
        monkeypatch.setenv("NORMOPS_CUPY_KERNELS", value)
    with pytest.raises(ImportError, match="CuPy is not installed"):
        cupy_backend.load()


def test_the_fused_backend_takes_its_kernels_before_the_array_api_ones():
    from normops._backends.cupy_fused import FusedCupyBackend
    for kernel in ("batch_stats", "scale_shift", "grad_stats", "grad_input", "relu_mask"):
        assert getattr(FusedCupyBackend, kernel) is getattr(FusedKernels, kernel), kernel
    assert FusedCupyBackend.epilogue is True and FusedCupyBackend.device == "cuda"
