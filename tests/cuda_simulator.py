"""The fused CUDA kernels on NumPy arrays, executed by Numba's CUDA simulator: the
same kernels (normops._backends.cuda_kernels) and launch code (cuda_fused) as the cupy
backend's with NORMOPS_CUPY_KERNELS=fused, every thread of every block run on the CPU.

The simulator must be switched on before numba is first imported; ``simulated()``
does that (or finds numba already simulating) and says why not otherwise. It also makes
the simulator's allocation of a block's ``cuda.shared.array`` atomic: the simulator
looks an allocation up and creates it without a lock, so two of a block's threads that
reach the line together could each get an array of their own, and a reduction then
lose a thread's partial sum (seen about once in 300 launches with the short switch
interval below). On a GPU a block has one shared array per call site. Small
blocks keep it quick: a simulated block costs milliseconds, mostly in syncthreads,
and a short thread switch interval (set around each call) cuts that five-fold.
"""
import contextlib
import os
import sys
import threading

import numpy

from normops._backends.array_api import ArrayApiBackend
from normops._backends.cuda_fused import FusedKernels

SWITCH_INTERVAL_S = 1e-4


def simulated():
    """None when numba-cuda runs in its simulator here, else why not."""
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
    try:
        from numba import config
        from numba import cuda  # noqa: F401 - numba-cuda, not only numba
    except ImportError as exc:
        return f"numba-cuda is not installed ({exc})"
    if not config.ENABLE_CUDASIM:
        return "numba was imported before the CUDA simulator could be switched on"
    _atomic_shared_arrays()
    return None


def _atomic_shared_arrays():
    """FakeCUDAShared.array, with its look-up and creation under one lock; allocations
    are keyed as the simulator keys them, by the calling line."""
    from numba.core import types
    from numba.cuda.simulator.kernelapi import FakeCUDAShared
    from numba.np import numpy_support
    if getattr(FakeCUDAShared.array, "atomic", False):
        return
    original, lock = FakeCUDAShared.array, threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:   # dynamic shared memory, or refused
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            found = self._allocations.get(key)
            if found is None:
                found = self._allocations[key] = numpy.empty(shape, dtype)
        return found

    array.atomic = True
    FakeCUDAShared.array = array


@contextlib.contextmanager
def quick_threads():
    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class SimulatedFusedBackend(FusedKernels, ArrayApiBackend):
    """The fused kernels on NumPy arrays in the simulator. ``threads``, ``reduce_blocks``
    and ``map_blocks`` are the launch constants (small by default; several chunks and
    a partial tile still happen on small arrays)."""

    device = "cpu"

    def __init__(self, threads=4, reduce_blocks=6, map_blocks=4):
        super().__init__()
        self.threads, self.reduce_blocks, self.map_blocks = threads, reduce_blocks, map_blocks

    def namespace(self, x):
        return numpy

    def _launch(self, name, grid, block, *args):
        with quick_threads():
            super()._launch(name, grid, block, *args)

    def _argument(self, a):
        """A NumPy array as the simulator's device array over the same memory (strided
        views included), as the GPU path takes a CuPy array without a copy."""
        if not isinstance(a, numpy.ndarray):
            return a
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        return FakeCUDAArray(a)
