"""The "cupy" backend: CuPy arrays on an NVIDIA GPU, through the array-API kernels (the
lines CI runs on NumPy, array-api-strict and PyTorch tensors). Only the registration
and the check that a GPU is there are CuPy's own."""
from .._registry import BackendUnavailableError
from .array_api import ArrayApiBackend


class CupyBackend(ArrayApiBackend):
    device = "cuda"

    def __init__(self):
        try:
            import cupy
        except ImportError as exc:
            raise ImportError(f"CuPy is not installed ({exc})") from exc
        try:
            gpus = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:   # no driver, no CUDA runtime: CuPy raises its own types
            raise BackendUnavailableError(f"CuPy finds no usable CUDA GPU ({exc})") from exc
        if gpus == 0:
            raise BackendUnavailableError("CuPy finds no CUDA GPU on this machine")
        super().__init__()
        self._ndarray = cupy.ndarray

    def namespace(self, x):
        if not isinstance(x, self._ndarray):
            raise TypeError(f"the cupy backend works on cupy.ndarray, got a "
                            f"{type(x).__module__}.{type(x).__qualname__}")
        return super().namespace(x)
