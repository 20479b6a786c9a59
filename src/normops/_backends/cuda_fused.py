"""The four kernels (and the epilogue's, see _interface) as launches of normops' CUDA
kernels (cuda_kernels), for a backend whose arrays a numba-cuda kernel takes: CuPy
arrays on a GPU, or NumPy arrays in Numba's CUDA simulator, where CI runs these very
lines. The whole ops stay the composition (_composed) of these kernels: 2 passes over x
forward (statistics, then the map with its epilogue), 3 backward.

float16 arrays take the kernels too: they read halves, compute in float64 and round each
result once to float16 (cvt.rn.f16.f64), as the array-API path's rounding does.
bfloat16 arrays (which CuPy does not have, nor numba) and arrays with no values go to
the array-API kernels of the class this is mixed into.

Launch shapes depend on the array's shape and layout and the class's three constants
alone, never on the device: on one GPU, a result is the same bit for bit from run to run.
"""
import contextlib
import math

from .. import _arrays as arrays
from .. import _composed
from .. import _halves as halves
from .array_api import centred

# Threads per block, and how many blocks a launch aims at. The reductions aim at fewer
# blocks than the maps: their second kernel merges a channel's chunks one by one.
# (Chosen for an H100's 132 SMs; not yet measured on a GPU.)
THREADS = 256
# the most threads a block may have: the size of the kernels' shared arrays
MAX_THREADS = 256
REDUCE_BLOCKS = 1024
MAP_BLOCKS = 8192
MAX_GRID_Y = 65535
MERGE_THREADS = 128
# the dtypes of x the kernels take
KERNEL_DTYPES = ("float16", "float32", "float64")


def channels_adjacent(x3):
    """Whether neighbouring channels of x3 (outer, C, inner) are nearer in memory than
    neighbouring positions (along inner, or along outer where inner is 1): NHWC and
    row-major NC, where a warp should span channels."""
    outer, channels, inner = x3.shape
    strides = getattr(x3, "strides", None)
    if strides is None:
        return inner == 1
    if channels == 1:
        return False
    along = 2 if inner > 1 else 0
    return outer * inner == 1 or abs(strides[1]) < abs(strides[along])


def launch_shape(shape, adjacent, threads, blocks):
    """(grid, block, per_chunk) of a kernel over an (outer, C, inner) array: blocks of
    ``threads`` threads, (bx, by) = (1, threads) for channels apart in memory, else bx
    channels of one position (at most 32, a warp's width); about ``blocks`` blocks in
    all, each over a chunk of per_chunk positions n * inner + i. ``threads`` must be a
    power of two (the block reductions halve it) of at most MAX_THREADS."""
    if not (0 < threads <= MAX_THREADS and threads & (threads - 1) == 0):
        raise ValueError(f"threads per block must be a power of two from 1 to {MAX_THREADS}, "
                         f"got {threads}")
    outer, channels, inner = shape
    bx = min(32, threads, 1 << max(channels - 1, 0).bit_length()) if adjacent else 1
    by = threads // bx
    tiles = -(-channels // bx)
    positions = outer * inner
    chunks = max(1, min(-(-blocks // tiles), -(-positions // by), MAX_GRID_Y))
    per_chunk = -(-positions // chunks)
    chunks = -(-positions // per_chunk)
    return (tiles, chunks), (bx, by), per_chunk


class FusedKernels:
    """The kernels, mixed into an array-API backend class whose arrays numba-cuda takes.
    Hooks: ``_kernel(name)`` (the compiled kernel), ``_launch_context(x)``
    (the device), ``_stream()`` and ``_argument(a)`` (an array as a kernel argument)."""

    epilogue = True
    threads = THREADS
    reduce_blocks = REDUCE_BLOCKS
    map_blocks = MAP_BLOCKS

    # --- what the backend class supplies -----------------------------------------------

    def _kernel(self, name):
        from . import cuda_kernels
        return cuda_kernels.compiled(name)

    def _launch_context(self, x):
        return contextlib.nullcontext()

    def _stream(self):
        return 0

    def _argument(self, a):
        return a

    # --- the kernels --------------------------------------------------------------------

    def batch_stats(self, x):
        if self._not_ours(x):
            return super().batch_stats(x)
        xp, wide = self._wide(x)
        _, channels, _ = x.shape
        grid, block, per_chunk = self._shape(x, self.reduce_blocks)
        partial = xp.empty((3, grid[1], channels), dtype=wide, device=arrays.device(x))
        mean = xp.empty((channels,), dtype=wide, device=arrays.device(x))
        m2 = xp.empty_like(mean)
        with self._launch_context(x):
            self._launch("batch_stats_partial", grid, block, x, partial, per_chunk)
            self._launch("batch_stats_merge", *self._merge_shape(channels), x, partial, mean, m2)
        return x.shape[0] * x.shape[2], mean, m2

    def scale_shift(self, x, a, b, residual=None, activation=None):
        if self._not_ours(x):   # the array-API map, then the epilogue as _composed applies it
            return _composed.epilogue(self.namespace(x), super().scale_shift(x, a, b),
                                      residual, activation)
        xp, _ = self._wide(x)
        centre, shift = centred(xp, x.dtype, a, b)
        out = self._empty_as(xp, x)
        grid, block, per_chunk = self._shape(x, self.map_blocks)
        with self._launch_context(x):
            self._launch("scale_shift", grid, block, x, centre, a, shift,
                         x if residual is None else residual, out, per_chunk,
                         residual is not None, activation == "relu")
        return out

    def grad_stats(self, dy, x, mean, y=None):
        if self._not_ours(x):
            return super().grad_stats(self._masked(dy, y), x, mean)
        xp, wide = self._wide(x)
        channels = x.shape[1]
        grid, block, per_chunk = self._shape(x, self.reduce_blocks)
        partial = xp.empty((2, grid[1], channels), dtype=wide, device=arrays.device(x))
        sum_dy = xp.empty((channels,), dtype=wide, device=arrays.device(x))
        sum_dy_xmu = xp.empty_like(sum_dy)
        with self._launch_context(x):
            self._launch("grad_stats_partial", grid, block, dy, x, x if y is None else y,
                         mean, partial, per_chunk, y is not None)
            self._launch("grad_stats_merge", *self._merge_shape(channels), partial, sum_dy,
                         sum_dy_xmu)
        return sum_dy, sum_dy_xmu

    def grad_input(self, dy, x, p, q, s, y=None):
        if self._not_ours(x):
            return super().grad_input(self._masked(dy, y), x, p, q, s)
        xp, _ = self._wide(x)
        centre, shift = centred(xp, x.dtype, q, s)
        out = self._empty_as(xp, x)
        grid, block, per_chunk = self._shape(x, self.map_blocks)
        with self._launch_context(x):
            self._launch("grad_input", grid, block, dy, x,
                         x if y is None else y, p, centre, q, shift, out, per_chunk,
                         y is not None)
        return out

    def relu_mask(self, dy, y):
        """dy, 0 where y <= 0, for x-shaped arrays of any rank: walked as one flat row in
        y's memory order (a view of a dense y; the output is laid out as y)."""
        xp = self.namespace(y)
        if self._not_ours(y) or len(y.shape) == 0:
            return _composed.relu_mask(None, xp, dy, y)
        order = self._memory_order(y)
        out = self._empty_as(xp, y)
        flat = (1, 1, arrays.size(y))   # out's is a view: it is dense in that order
        dy3, y3, out3 = (xp.reshape(xp.permute_dims(v, order), flat) for v in (dy, y, out))
        grid, block, per_chunk = self._shape(y3, self.map_blocks)
        with self._launch_context(y3):
            self._launch("relu_mask", grid, block, dy3, y3, out3, per_chunk)
        return out

    # --- helpers ------------------------------------------------------------------------

    def _not_ours(self, x):
        """Arrays the kernels leave to the array-API path: bfloat16, and no values."""
        return halves.name_of(x.dtype) not in KERNEL_DTYPES or arrays.size(x) == 0

    def _wide(self, x):
        xp = self.namespace(x)
        return xp, arrays.wide_dtype(xp, arrays.device(x))

    def _shape(self, x3, blocks):
        return launch_shape(tuple(x3.shape), channels_adjacent(x3), self.threads, blocks)

    @staticmethod
    def _merge_shape(channels):
        return (-(-channels // MERGE_THREADS),), (MERGE_THREADS,)

    def _launch(self, name, grid, block, *args):
        kernel = self._kernel(name)
        kernel[grid, block, self._stream()](*(self._argument(a) for a in args))

    @staticmethod
    def _memory_order(v):
        """v's axes from the farthest apart in memory to the nearest (axes of one element
        last), or in order where the library gives no strides."""
        strides = getattr(v, "strides", None)
        if strides is None:
            return tuple(range(len(v.shape)))
        return tuple(sorted(range(len(v.shape)),
                            key=lambda k: -abs(strides[k]) if v.shape[k] > 1 else 0))

    def _empty_as(self, xp, x3):
        """An uninitialised array of x3's shape and dtype (any rank), laid out in memory as
        x3 is (its axes in the order of x3's strides), so that the kernels' writes
        coalesce as their reads do."""
        order = self._memory_order(x3)
        buffer = xp.empty(tuple(x3.shape[k] for k in order), dtype=x3.dtype,
                          device=arrays.device(x3))
        return xp.permute_dims(buffer, tuple(order.index(k) for k in range(len(order))))

    def _masked(self, dy, y):
        """dy through relu, by array ops (the composition's mask); dy without y."""
        return dy if y is None else _composed.relu_mask(None, self.namespace(y), dy, y)
