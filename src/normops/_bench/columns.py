"""What the bench times: the three ops on a normops backend and in PyTorch's own batch
norm, as zero-argument callables, and the plain copies that measure the memory
bandwidth."""
from collections import namedtuple

import numpy

import normops

from . import half
from .shapes import CHANNELS_LAST, Inputs

OPS = ("forward-train", "backward", "inference")
# Array-sized reads and writes each op must make at least: forward and inference read x
# and write y; backward reads x and dy and writes dx.
PASSES = {"forward-train": 2, "backward": 3, "inference": 2}
# the column of PyTorch's own batch norm; "torch" is the normops backend for tensors
PYTORCH = "pytorch"
MOMENTUM = 0.1
EPS = 1e-5
GB = 1e9


# ---------------------------------------------------------------------------- copy baseline

def copy_kernels():
    """Plain copies to measure the memory bandwidth with: numpy.copyto (one thread) and,
    once the cpu backend is built, its OpenMP copy (the current thread count)."""
    kernels = {"numpy.copyto": numpy.copyto}
    try:
        from normops._backends._cpu import copy_into
    except (ImportError, AttributeError):
        return kernels
    kernels["copy_into"] = copy_into
    return kernels


def copy_calls(x, kernels):
    """Zero-argument copies of x into a buffer of its size, one per copy kernel.
    numpy.copyto copies x as it is; the others read the buffer protocol, which has no
    bfloat16: they copy a uint16 view of the same memory (the same bytes)."""
    dst = numpy.empty_like(x)
    views = half.buffer_view(dst), half.buffer_view(x)
    return {name: (lambda k=kernel, a=((dst, x) if kernel is numpy.copyto else views): k(*a))
            for name, kernel in kernels.items()}


def copy_gbps(nbytes, timing):
    return 2 * nbytes / timing.median_s / GB  # a copy reads and writes nbytes


# ---------------------------------------------------------------------------- the ops

def as_arrays(kind, torch, inp):
    """``inp`` with every array as the chosen backend's kind of array ("numpy" or "torch",
    see backends.ARRAYS), on the same memory."""
    if kind == "numpy":
        return inp
    fields = {f: getattr(inp, f) for f in ("x", "dy", "gamma", "beta", "running_mean", "running_var")}
    return Inputs(shape=inp.shape, **{f: half.as_tensor(torch, a) for f, a in fields.items()})


def _copy(a):
    return a.clone() if hasattr(a, "clone") else a.copy()


def normops_ops(backend, inp):
    """The three ops on a normops backend as zero-argument callables (NumPy arrays or
    tensors alike). Each op gets its own running statistics so the in-place updates of
    forward-train leave inference's alone."""
    s = inp.shape
    rm, rv = _copy(inp.running_mean), _copy(inp.running_var)
    rm_eval, rv_eval = _copy(inp.running_mean), _copy(inp.running_var)
    common = dict(momentum=MOMENTUM, eps=EPS, axis=s.axis, backend=backend)
    _, saved = normops.batch_norm(inp.x, inp.gamma, inp.beta, _copy(rm), _copy(rv), training=True, **common)
    return {
        "forward-train": lambda: normops.batch_norm(
            inp.x, inp.gamma, inp.beta, rm, rv, training=True, **common),
        "backward": lambda: normops.batch_norm_backward(inp.dy, inp.x, saved, inp.gamma, backend=backend),
        "inference": lambda: normops.batch_norm(
            inp.x, inp.gamma, inp.beta, rm_eval, rv_eval, training=False, **common),
    }


# PyTorch's arguments: x and dy, weight and bias, the running statistics of forward-train
# and of inference, and what native_batch_norm saves for the backward
TorchArgs = namedtuple("TorchArgs", "x dy w b rm rv rm_eval rv_eval save_mean save_invstd")


def torch_view(torch, shape, a):
    """The array ``a`` of ``shape``'s dims (x, dy, or any array like them) as PyTorch holds
    it: a tensor on its memory, and for channels-last data the NCHW (NCDHW) view of it in
    channels_last (channels_last_3d) memory format."""
    t = half.as_tensor(torch, a)
    if shape.layout not in CHANNELS_LAST:
        return t
    ndim = len(shape.dims)
    return t.permute(0, ndim - 1, *range(1, ndim - 1))


def torch_tensors(torch, inp):
    """PyTorch's arguments for ``inp``: tensors sharing the NumPy buffers (or ``inp``'s
    tensors as they are, on their device, as benchmarks/gpu_check.py gives them), with
    running statistics of their own for forward-train and for inference, and the batch
    mean and inverse std that native_batch_norm saves for the backward. NHWC data becomes
    an NCHW tensor in channels_last memory format, which is how PyTorch holds it (NDHWC:
    NCDHW in channels_last_3d). A bfloat16 array becomes a torch.bfloat16 tensor through
    an int16 view of its memory (half.as_tensor); half x with float32 weight and running
    statistics is PyTorch's mixed precision."""
    def as_tensor(a):
        return half.as_tensor(torch, a)

    channels_last = inp.shape.layout in CHANNELS_LAST
    ndim = len(inp.shape.dims)
    x, dy = torch_view(torch, inp.shape, inp.x), torch_view(torch, inp.shape, inp.dy)
    w, b = as_tensor(inp.gamma), as_tensor(inp.beta)
    if channels_last:
        fmt = torch.channels_last if ndim == 4 else torch.channels_last_3d
        assert x.is_contiguous(memory_format=fmt)
    rm, rv = as_tensor(inp.running_mean).clone(), as_tensor(inp.running_var).clone()
    rm_eval, rv_eval = as_tensor(inp.running_mean).clone(), as_tensor(inp.running_var).clone()
    _, save_mean, save_invstd = torch.ops.aten.native_batch_norm(
        x, w, b, rm.clone(), rv.clone(), True, MOMENTUM, EPS)
    return TorchArgs(x, dy, w, b, rm, rv, rm_eval, rv_eval, save_mean, save_invstd)


def pytorch_ops(torch, inp):
    """The same three ops in PyTorch's own batch norm (the "pytorch" column), under
    torch.no_grad(), on torch_tensors(inp): torch.nn.functional.batch_norm forward, and
    for the backward what autograd runs for it, native_batch_norm_backward with the batch
    mean and inverse std saved by native_batch_norm."""
    t = torch_tensors(torch, inp)
    x, dy, w, b, rm, rv, rm_eval, rv_eval = t[:8]
    batch_norm = torch.nn.functional.batch_norm
    backward = native_backward(torch, t)
    return {
        "forward-train": no_grad(torch, lambda: batch_norm(
            x, rm, rv, w, b, training=True, momentum=MOMENTUM, eps=EPS)),
        "backward": no_grad(torch, lambda: backward(dy)),
        "inference": no_grad(torch, lambda: batch_norm(
            x, rm_eval, rv_eval, w, b, training=False, eps=EPS)),
    }


def no_grad(torch, fn):
    """``fn`` run under torch.no_grad()."""
    def run():
        with torch.no_grad():
            return fn()
    return run


def native_backward(torch, t):
    """PyTorch's batch norm backward as autograd runs it, for ``t`` (TorchArgs): a function
    of the upstream gradient that returns (dx, dweight, dbias) from
    native_batch_norm_backward, given x, the weight, the running statistics and the batch
    mean and inverse std saved by native_batch_norm."""
    native = torch.ops.aten.native_batch_norm_backward
    x, w, rm, rv, save_mean, save_invstd = t.x, t.w, t.rm, t.rv, t.save_mean, t.save_invstd
    return lambda dy: native(dy, x, w, rm, rv, save_mean, save_invstd, True, EPS, [True, True, True])


def aten_ops(torch, inp):
    """The three ops as PyTorch's aten operators themselves, called bare (no
    torch.no_grad(): the tensors need no grad): native_batch_norm (training, and with the
    running statistics for inference) and native_batch_norm_backward."""
    x, dy, w, b, rm, rv, rm_eval, rv_eval, save_mean, save_invstd = torch_tensors(torch, inp)
    native, backward = torch.ops.aten.native_batch_norm, torch.ops.aten.native_batch_norm_backward
    return {
        "forward-train": lambda: native(x, w, b, rm, rv, True, MOMENTUM, EPS),
        "backward": lambda: backward(dy, x, w, rm, rv, save_mean, save_invstd, True, EPS,
                                     [True, True, True]),
        "inference": lambda: native(x, w, b, rm_eval, rv_eval, False, MOMENTUM, EPS),
    }
