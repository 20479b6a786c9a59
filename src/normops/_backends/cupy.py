"""The "cupy" backend: CuPy arrays on an NVIDIA GPU, through the array-API kernels (the
lines CI runs on NumPy, array-api-strict and PyTorch tensors) by default, or through
normops' fused CUDA kernels (cupy_fused) with ``NORMOPS_CUPY_KERNELS=fused``. Only the
registration and the check that a GPU is there are CuPy's own."""
import os

from .._registry import BackendUnavailableError
from .array_api import ArrayApiBackend

#: The environment variable that picks the cupy backend's kernels, and its values.
KERNELS_VAR = "NORMOPS_CUPY_KERNELS"
KERNEL_CHOICES = ("array-api", "fused")


def load():
    """The cupy backend with the kernels ``NORMOPS_CUPY_KERNELS`` names (read when the
    backend is first loaded): "array-api" (the default, also when unset or empty) or
    "fused"."""
    choice = os.environ.get(KERNELS_VAR, "").strip() or "array-api"
    if choice not in KERNEL_CHOICES:
        raise BackendUnavailableError(
            f"{KERNELS_VAR}={os.environ[KERNELS_VAR]!r} names no kernels of the cupy "
            f"backend: use one of {', '.join(map(repr, KERNEL_CHOICES))}")
    if choice == "fused":
        from .cupy_fused import FusedCupyBackend
        return FusedCupyBackend()
    return CupyBackend()


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
