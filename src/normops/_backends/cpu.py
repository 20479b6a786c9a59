"""The "cpu" backend: the C kernels of cext/ (OpenMP, GIL released) on NumPy arrays.

The kernels take C-contiguous (outer, C, inner) arrays. An input whose memory already
has that layout (C-contiguous, or channels-last: contiguous with the channel axis
innermost in memory) is used in place and the output gets the same layout; any other
input (a strided or negative-stride view, Fortran order, an array not aligned to its
itemsize) is copied once into a C-contiguous buffer, and the output is C-contiguous.
Reductions run in double in an order fixed by the shape, so results do not depend on the
thread count.
"""
import math
from typing import TYPE_CHECKING

import numpy as np

from .. import _validation as check
from .._halves import grad_dtype
from .._saved import BatchNormSaved, BatchRenormSaved

if TYPE_CHECKING:   # the compiled bindings, by their full names: the untyped modules
    import normops._backends._buffers    # that pyproject.toml names (mypy would look for
    import normops._backends._cpu        # package attributes in ``from . import`` alone)
from . import _buffers, _cpu
from ._base import BuiltinBackend

# Outputs at least this large take their memory from _buffers, which reuses the blocks
# earlier outputs gave back (page-aligned). The C library often keeps freed blocks below
# 32 MiB for reuse, but not always: in one bench run every 25.7 MB NHWC output got fresh
# pages, and its ops took 3x as long. A block of 4 MiB is already many pages to map.
POOLED_BYTES = 4 << 20
# The kernels write a float32 or half output with streaming stores, in whole cache lines
# only, when the op's arrays hold _cpu.stream_bytes() or more (and the AVX2 loops run); an
# op has at most 3 arrays of its output's size (a backward: dy, x, dx). Such outputs
# start on a cache line.
MOST_ARRAYS = 3
LINE = 64
STREAMED_ITEMSIZE = 4   # float32 and the halves: every dtype but float64
# the rule is the bindings' (fresh_output), for the outputs they make themselves too
_cpu.set_output_rule(POOLED_BYTES, MOST_ARRAYS, STREAMED_ITEMSIZE)


def _empty_like(a, count=None):
    """An uninitialized C-contiguous array of a's shape and dtype (``count`` of them,
    stacked on a first axis, as one block)."""
    shape = a.shape if count is None else (count,) + a.shape
    nbytes = a.nbytes * (1 if count is None else count)
    if _cpu.fresh_output(nbytes, a.itemsize):
        return np.empty(shape, a.dtype)
    if nbytes >= POOLED_BYTES:
        raw = np.frombuffer(_buffers.Block(nbytes), dtype=np.uint8)
    else:   # streamed: on a cache line
        raw = np.empty(nbytes + LINE, np.uint8)
        start = -raw.__array_interface__["data"][0] % LINE
        raw = raw[start:start + nbytes]
    return raw.view(a.dtype).reshape(shape)


class _Arrangement:
    """How an x-shaped array maps to the kernels' contiguous (outer, C, inner) view."""

    __slots__ = ("shape", "axis", "channels", "moved", "view_shape")

    def __init__(self, x, axis):
        shape = x.shape
        self.shape, self.axis = shape, axis
        self.channels = channels = shape[axis]
        last = len(shape) - 1
        # channels-last memory (NHWC, or a torch channels_last NCHW): channels innermost
        self.moved = (axis != last and not x.flags.c_contiguous
                      and np.moveaxis(x, axis, last).flags.c_contiguous)
        if self.moved:
            self.view_shape = (x.size // channels, channels, 1)
        else:
            self.view_shape = (math.prod(shape[:axis]), channels, math.prod(shape[axis + 1:]))

    def view(self, arr):
        """arr (x-shaped) as the kernels' view; a copy only if its memory does not fit
        (not in this order, or not aligned, as in a view into a byte buffer at an odd
        offset)."""
        if self.moved:
            arr = np.moveaxis(arr, self.axis, -1)
        elif arr.flags.c_contiguous and arr.flags.aligned:
            return arr.reshape(self.view_shape)
        return _c_array(arr).reshape(self.view_shape)

    def restore(self, arr3):
        """A kernel output back in x's shape (a view, same memory layout as x)."""
        if not self.moved:
            return arr3.reshape(self.shape)
        moved_shape = tuple(n for i, n in enumerate(self.shape) if i != self.axis) + (self.channels,)
        return np.moveaxis(arr3.reshape(moved_shape), -1, self.axis)


class CpuBackend(BuiltinBackend):
    xp = np
    device = "cpu"
    # the fused epilogue: in the pass that writes y; the backward masks dy with y in a
    # pass of its own, which writes dz (see _interface)
    epilogue = True

    # --- whole ops --------------------------------------------------------------------

    def batch_norm(self, x, gamma, beta, running_mean, running_var, *, training, momentum,
                   eps, axis, convention, residual=None, activation=None):
        return self._forward("bn_train" if training else "bn_eval", x, gamma, beta,
                             running_mean, running_var, axis, eps, momentum,
                             unbiased=convention == "pytorch", residual=residual,
                             activation=activation)

    def batch_renorm(self, x, gamma, beta, running_mean, running_std, *, training, rmax,
                     dmax, momentum, eps, axis, residual=None, activation=None):
        return self._forward("brn_train" if training else "brn_eval", x, gamma, beta,
                             running_mean, running_std, axis, eps, momentum, rmax=rmax, dmax=dmax,
                             residual=residual, activation=activation)

    def batch_norm_backward(self, dy, x, saved, gamma, y=None):
        return self._backward(dy, x, saved, gamma, None, None, y)

    def batch_renorm_backward(self, dy, x, saved, gamma, y=None):
        return self._backward(dy, x, saved, gamma, saved.r, saved.d, y)

    def _forward(self, mode, x, gamma, beta, running_mean, running_spread, axis, eps,
                 momentum, unbiased=True, rmax=1.0, dmax=0.0, residual=None, activation=None):
        """The op; with the epilogue y = act(y + residual) in the same pass (residual: None
        or an array of x's shape and dtype, in any layout)."""
        arrangement = _Arrangement(x, axis)
        x3 = arrangement.view(x)
        z3 = None if residual is None else arrangement.view(residual)
        y3 = _empty_like(x3)
        renorm = mode.startswith("brn")
        training = mode.endswith("_train")
        # the per-channel outputs, one block: mean, invstd (and r, d for renorm training)
        stats = np.empty((4 if renorm and training else 2, arrangement.channels))
        mean, invstd = stats[0], stats[1]
        r, d = (stats[2], stats[3]) if len(stats) == 4 else (None, None)
        _cpu.forward(x3, y3, mode, gamma, beta, running_mean, running_spread, eps=eps,
                     momentum=momentum, rmax=rmax, dmax=dmax, unbiased=unbiased,
                     mean=mean, invstd=invstd, r=r, d=d, residual=z3,
                     relu=activation == "relu")
        y = arrangement.restore(y3)
        fused = dict(activation=activation, residual=residual is not None)
        if renorm:
            return y, BatchRenormSaved(mean, invstd, r, d, training, axis, x.shape, **fused)
        return y, BatchNormSaved(mean, invstd, training, axis, x.shape, **fused)

    def _backward(self, dy, x, saved, gamma, r, d, y=None):
        arrangement = _Arrangement(x, saved.axis)
        x3, dy3 = arrangement.view(x), arrangement.view(dy)
        if saved.activation is None and not saved.residual:
            return self._gradients(arrangement, dy3, x3, _empty_like(x3), saved, gamma, r, d)
        # dz (dy masked by y, or copied), then dx from it: one block (see
        # _cpu._outputs_like: as two, they cost fresh pages in every call)
        dz3, dx3 = _empty_like(x3, 2)
        if saved.activation is None:
            np.copyto(dz3, dy3)
        else:
            _cpu.relu_mask(dy3, arrangement.view(y), dz3)
        grads = self._gradients(arrangement, dz3, x3, dx3, saved, gamma, r, d)
        return grads + (arrangement.restore(dz3),) if saved.residual else grads

    def _gradients(self, arrangement, dy3, x3, dx3, saved, gamma, r, d):
        """(dx, dgamma, dbeta) from the kernels' views, dx into dx3."""
        # one block, two rows: gamma's dtype (float32 for half x without gamma)
        dgamma, dbeta = np.empty((2, arrangement.channels), grad_dtype(x3.dtype, gamma))
        _cpu.backward(dy3, x3, dx3, "fused", training=saved.training, mean=saved.mean,
                      invstd=saved.invstd, r=r, d=d, gamma=gamma, dgamma=dgamma, dbeta=dbeta)
        return arrangement.restore(dx3), dgamma, dbeta

    def relu_mask(self, dy, y):
        """The backward of the forward's relu at its output y: dy where y > 0 or is NaN, +0
        elsewhere (PyTorch's threshold_backward); a new array of dy's shape, dtype and
        layout (y: dy's shape and dtype, any layout)."""
        if dy.ndim == 0:
            return self.relu_mask(dy.reshape(1), y.reshape(1)).reshape(())
        arrangement = _Arrangement(dy, 1 if dy.ndim > 1 else 0)   # any axis: elementwise
        dy3, y3 = arrangement.view(dy), arrangement.view(y)
        out3 = _empty_like(dy3)
        _cpu.relu_mask(dy3, y3, out3)
        return arrangement.restore(out3)

    # --- plain ops (see _interface): the common case in one call of the bindings -----

    plain_batch_norm = staticmethod(_cpu.plain_batch_norm)
    plain_batch_renorm = staticmethod(_cpu.plain_batch_renorm)
    plain_batch_norm_backward = staticmethod(_cpu.plain_batch_norm_backward)
    plain_batch_renorm_backward = staticmethod(_cpu.plain_batch_renorm_backward)

    # --- the four kernels (for the composition, and for plugin authors to compare) ----

    def batch_stats(self, x):
        x, = _kernel_args(x)
        mean, m2 = np.empty(x.shape[1]), np.empty(x.shape[1])
        _cpu.forward(x, None, "stats", mean=mean, m2=m2)
        return x.shape[0] * x.shape[2], mean, m2

    def scale_shift(self, x, a, b, residual=None, activation=None):
        """y = a x + b per channel; then y + residual (an array like x) and relu
        (activation "relu"), in the same pass."""
        activation = check.activation(activation)
        x, a, b = _kernel_args(x, a=a, b=b)
        z = None if residual is None else _c_array(check.like_x(np, residual, x, "residual"))
        y = _empty_like(x)
        _cpu.forward(x, y, "affine", a=a, b=b, residual=z, relu=activation == "relu")
        return y

    def grad_stats(self, dy, x, mean, y=None):
        x, dy, mean = _kernel_args(x, dy, mean=mean)
        dy = self._masked(dy, x, y)
        sum_dy, sum_dy_xmu = np.empty(x.shape[1]), np.empty(x.shape[1])
        _cpu.backward(dy, x, None, "grad_stats", mean=mean, sum_dy=sum_dy, sum_dy_xmu=sum_dy_xmu)
        return sum_dy, sum_dy_xmu

    def grad_input(self, dy, x, p, q, s, y=None):
        x, dy, p, q, s = _kernel_args(x, dy, p=p, q=q, s=s)
        dy = self._masked(dy, x, y)
        dx = _empty_like(x)
        _cpu.backward(dy, x, dx, "grad_input", p=p, q=q, s=s)
        return dx


    def _masked(self, dy, x, y):
        """A kernel's dy through relu at the forward's output y (None: dy as it is)."""
        return dy if y is None else self.relu_mask(dy, _c_array(check.like_x(np, y, x, "y")))


def _kernel_args(x, dy=None, **per_channel):
    """A kernel's arguments as the bindings take them: x (and dy, of x's shape and dtype)
    aligned C-contiguous, per-channel ones contiguous float64. They are checked first,
    naming the bad one, as the kernels are public (plugin authors call them directly)."""
    x = check.kernel_input(np, x)
    arrays = [_c_array(x)] if dy is None else [_c_array(x), _c_array(check.gradient(np, dy, x))]
    return arrays + [_per_channel(check.kernel_vector(np, v, name, x.shape[1]))
                     for name, v in per_channel.items()]


def _c_array(a, dtype=None):
    """a as an aligned C-contiguous array (of ``dtype``), copied only where needed."""
    return np.require(a, dtype, requirements=("C", "A"))


def _per_channel(v):
    return _c_array(v, np.float64)
