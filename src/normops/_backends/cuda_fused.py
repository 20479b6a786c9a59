"""The four kernels (and the epilogue's, see _interface) as launches of normops' CUDA
kernels (cuda_kernels), for a backend whose arrays a numba-cuda kernel takes: CuPy
arrays on a GPU, or NumPy arrays in Numba's CUDA simulator, where CI runs these very
lines. The whole ops stay the composition (_composed) of these kernels: 2 passes over x
forward (statistics, then the map with its epilogue), 3 backward.

float16 and bfloat16 arrays, and arrays with no values, go to the array-API kernels of
the class this is mixed into (the rounding of a half result, and the empty cases, are
theirs to keep).

Launch shapes depend on the array's shape and layout and the class's three constants
alone, never on the device: a result is the same bit for bit from run to run and from
one GPU to another.
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
REDUCE_BLOCKS = 1024
MAP_BLOCKS = 8192
MAX_GRID_Y = 65535
MERGE_THREADS = 128


def channels_adjacent(x3):
    """Whether neighbouring channels of x3 (outer, C, inner) are nearer in memory than
    neighbouring positions: NHWC and NC, where a warp should span channels."""
    _, channels, inner = x3.shape
    if inner == 1:
        return True
    strides = getattr(x3, "strides", None)
    if strides is None or channels == 1:
        return False
    return abs(strides[1]) < abs(strides[2])


def launch_shape(shape, adjacent, threads, blocks):
    """(grid, block, per_chunk) of a kernel over an (outer, C, inner) array: blocks of
    ``threads`` threads, (bx, by) = (1, threads) for channels apart in memory, else bx
    channels of one position (at most 32, a warp's width); about ``blocks`` blocks in
    all, each over a chunk of per_chunk positions n * inner + i."""
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
    Hooks: ``_kernel(fn)`` (the numba kernel to launch, by name), ``_launch_context(x)``
    (the device), ``_stream()`` and ``_argument(a)`` (an array as a kernel argument)."""

    epilogue = True
    threads = THREADS
    reduce_blocks = REDUCE_BLOCKS
    map_blocks = MAP_BLOCKS

    # --- what the backend class supplies -----------------------------------------------

    def _kernels(self):
        from . import cuda_kernels
        return cuda_kernels

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
            k = self._kernels()
            self._launch(k.batch_stats_partial, grid, block, x, partial, per_chunk)
            self._launch(k.batch_stats_merge, *self._merge_shape(channels), x, partial, mean, m2)
        return x.shape[0] * x.shape[2], mean, m2

    def scale_shift(self, x, a, b, residual=None, activation=None):
        if self._not_ours(x):
            return self._composed_scale_shift(x, a, b, residual, activation)
        xp, _ = self._wide(x)
        centre, shift = centred(xp, x.dtype, a, b)
        out = self._empty_as(xp, x)
        grid, block, per_chunk = self._shape(x, self.map_blocks)
        with self._launch_context(x):
            self._launch(self._kernels().scale_shift, grid, block, x, centre, a, shift,
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
            k = self._kernels()
            self._launch(k.grad_stats_partial, grid, block, dy, x, x if y is None else y,
                         mean, partial, per_chunk, y is not None)
            self._launch(k.grad_stats_merge, *self._merge_shape(channels), partial, sum_dy,
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
            self._launch(self._kernels().grad_input, grid, block, dy, x,
                         x if y is None else y, p, centre, q, shift, out, per_chunk,
                         y is not None)
        return out

    def relu_mask(self, dy, y):
        """dy, 0 where y <= 0, for x-shaped arrays of any rank."""
        xp = self.namespace(y)
        shape = tuple(y.shape)
        if self._not_ours(y) or len(shape) == 0:
            return _composed.relu_mask(None, xp, dy, y)
        dy3, y3 = (xp.reshape(v, (1, 1, math.prod(shape))) if len(shape) != 3 else v
                   for v in (dy, y))
        out = self._empty_as(xp, dy3)
        grid, block, per_chunk = self._shape(y3, self.map_blocks)
        with self._launch_context(y3):
            self._launch(self._kernels().relu_mask, grid, block, dy3, y3, out, per_chunk)
        return xp.reshape(out, shape)

    # --- helpers ------------------------------------------------------------------------

    def _not_ours(self, x):
        """Arrays the kernels leave to the array-API path: halves, and no values."""
        return halves.is_half(x.dtype) or arrays.size(x) == 0

    def _wide(self, x):
        xp = self.namespace(x)
        return xp, arrays.wide_dtype(xp, arrays.device(x))

    def _shape(self, x3, blocks):
        return launch_shape(tuple(x3.shape), channels_adjacent(x3), self.threads, blocks)

    @staticmethod
    def _merge_shape(channels):
        return (-(-channels // MERGE_THREADS),), (MERGE_THREADS,)

    def _launch(self, kernel, grid, block, *args):
        kernel[grid, block, self._stream()](*(self._argument(a) for a in args))

    @staticmethod
    def _empty_as(xp, x3):
        """An uninitialised array of x3's shape and dtype, laid out in memory as x3 is (its
        axes in the order of x3's strides), so that the kernels' writes coalesce as their
        reads do."""
        strides = getattr(x3, "strides", None)
        if strides is None:
            return xp.empty(x3.shape, dtype=x3.dtype, device=arrays.device(x3))
        order = sorted(range(3), key=lambda k: -abs(strides[k]) if x3.shape[k] > 1 else 0)
        buffer = xp.empty(tuple(x3.shape[k] for k in order), dtype=x3.dtype,
                          device=arrays.device(x3))
        return xp.permute_dims(buffer, tuple(order.index(k) for k in range(3)))

    def _masked(self, dy, y):
        """dy through relu, by array ops (the composition's mask); dy without y."""
        return dy if y is None else _composed.relu_mask(None, self.namespace(y), dy, y)

    def _composed_scale_shift(self, x, a, b, residual, activation):
        """The array-API map, then the epilogue with array ops, as _composed applies it
        for a backend without one."""
        y = super().scale_shift(x, a, b)
        if residual is not None:
            y = y + residual
        return y if activation is None else _composed.relu(self.namespace(x), y)
