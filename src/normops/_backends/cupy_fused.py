"""The "cupy" backend with normops' fused CUDA kernels (cuda_fused, cuda_kernels) in
place of the array-API ones: chosen with ``NORMOPS_CUPY_KERNELS=fused``. The kernels
are compiled by numba-cuda on first use and launched on CuPy's current stream, on the
GPU that holds x."""
import contextlib

from .._registry import BackendUnavailableError
from .cuda_fused import FusedKernels
from .cupy import CupyBackend

NUMBA_INSTALL = "pip install 'normops[cupy-fused]' (numba-cuda)"


class FusedCupyBackend(FusedKernels, CupyBackend):
    def __init__(self):
        super().__init__()
        try:
            from numba import cuda
        except ImportError as exc:
            raise ImportError(f"numba-cuda is not installed ({NUMBA_INSTALL}); it compiles "
                              f"the fused kernels that NORMOPS_CUPY_KERNELS=fused asks "
                              f"for") from exc
        try:   # NVVM compiles the kernels on first use: missing, it would fail inside an op
            from numba.cuda.cudadrv import nvvm
            nvvm.NVVM()
        except Exception as exc:
            raise BackendUnavailableError(
                f"numba-cuda finds no NVVM to compile the fused kernels ({exc}); install the "
                f"CUDA toolkit, or pip install 'numba-cuda[cu12]' (or [cu13], as CuPy's "
                f"CUDA)") from exc
        import cupy
        self._cuda, self._cupy = cuda, cupy
        self._streams = {}

    def _launch_context(self, x):
        device = x.device.id
        if device == self._cupy.cuda.runtime.getDevice():
            return contextlib.nullcontext()
        return self._cuda.gpus[device]

    def _stream(self):
        """CuPy's current stream as numba's (the legacy default stream, 0, by default), so
        the kernels run in order with the CuPy work around them."""
        pointer = self._cupy.cuda.get_current_stream().ptr
        if pointer == 0:
            return 0
        stream = self._streams.get(pointer)
        if stream is None:
            stream = self._streams[pointer] = self._cuda.external_stream(pointer)
        return stream

    def _argument(self, a):
        """A CuPy array as numba's view of the same memory, without the synchronisation
        numba would otherwise do on taking it, nor a numba stream for its stream: the
        launch is on CuPy's current stream."""
        interface = getattr(a, "__cuda_array_interface__", None)
        if interface is None:
            return a
        return self._cuda.from_cuda_array_interface(dict(interface, stream=None), owner=a,
                                                    sync=False)
