"""Adapters that run the kit on another array library: the kit draws NumPy cases; an
adapter hands an implementation the same values as arrays of its library on a device,
checks that every result is an array of that library, on that device, of its dtype
(y and dx x's, dgamma and dbeta gamma's or float32 for half x without gamma, running
statistics their own), and gives the kit NumPy copies to compare."""
import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .._arrays import COMPAT_INSTALL
from .._halves import grad_dtype
from ._dtypes import ALL, FULL

# library -> what installs it
INSTALL = {
    "numpy": "numpy",
    "array_api_strict": "pip install array-api-strict",
    "torch": "pip install 'normops[torch]'",
    "cupy": "pip install 'normops[cupy]' (and an NVIDIA GPU)",
}
LIBRARIES = tuple(INSTALL)


@dataclass(frozen=True)
class ArrayLibrary:
    """One array library on one device: ``to_library`` makes its array from a NumPy
    array (keeping the memory arrangement where the library can), ``to_numpy`` the
    other way; ``array_type`` and ``dtype_of`` say what its results must be."""

    name: str
    device: Any
    array_type: type
    to_library: Callable
    to_numpy: Callable
    dtype_of: Callable      # NumPy dtype -> the library's
    device_of: Callable     # array -> its device
    dtypes: tuple = FULL    # the NumPy dtypes of x it has (the kit draws those)

    def __str__(self):
        return self.name if self.device is None else f"{self.name} on {self.device}"

    def check(self, arr, dtype, what):
        """AssertionError unless ``arr`` is this library's array of ``dtype`` on its device."""
        if not isinstance(arr, self.array_type):
            raise AssertionError(f"{what} is a {type(arr).__module__}.{type(arr).__qualname__}, "
                                 f"expected a {self.array_type.__module__}.{self.array_type.__qualname__}")
        if arr.dtype != self.dtype_of(dtype):
            raise AssertionError(f"{what} has dtype {arr.dtype}, expected {self.dtype_of(dtype)}")
        if self.device is not None and self.device_of(arr) != self.device:
            raise AssertionError(f"{what} is on device {self.device_of(arr)}, expected {self.device}")


def array_library(name, device=None):
    """The adapter for library ``name`` (one of LIBRARIES) on ``device`` (the library's
    default device when None); ImportError naming what to install if it is missing."""
    if name not in INSTALL:
        raise ValueError(f"unknown array library {name!r}; known: {', '.join(LIBRARIES)}")
    try:
        return _ADAPTERS[name](device)
    except ImportError as exc:
        raise ImportError(f"the kit on {name} arrays needs {name} ({INSTALL[name]}): {exc}") from exc


def _numpy(device):
    if device not in (None, "cpu"):
        raise ValueError(f"NumPy arrays live on the cpu, not on {device!r}")
    return ArrayLibrary("numpy", None, np.ndarray, lambda a: a, np.asarray, np.dtype,
                        lambda a: "cpu", ALL)


def _compat_device(arr):
    try:
        import array_api_compat
    except ImportError as exc:
        raise ImportError(f"array-api-compat is not installed ({COMPAT_INSTALL})") from exc
    return array_api_compat.device(arr)


def _strict(device):
    import array_api_strict as xps
    if isinstance(device, str):
        device = xps.Device(device)
    device = device or xps.Device("CPU_DEVICE")
    return ArrayLibrary(
        "array_api_strict", device, type(xps.asarray(0.0)),
        lambda a: xps.asarray(a, device=device), lambda a: np.from_dlpack(a),
        lambda dtype: getattr(xps, np.dtype(dtype).name), _compat_device)


def _torch_tensor(torch, a, device):
    """``a`` as a tensor on ``device``; on the cpu it shares a's memory and strides
    (NumPy's negative strides, which tensors cannot have, take a copy)."""
    if any(s < 0 for s in a.strides):
        a = a.copy()
    if a.dtype.name == "bfloat16":   # torch.from_numpy does not know ml_dtypes' bfloat16
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).to(device)
    return torch.from_numpy(a).to(device)


def _torch_numpy(torch, t):
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        from .._halves import bfloat16
        return t.view(torch.int16).numpy().view(bfloat16())
    return t.numpy()


def _torch(device):
    import torch
    device = torch.device(device or "cpu")
    if device.type != "cpu" and device.index is None:   # "cuda": tensors say "cuda:0"
        device = torch.empty(0, device=device).device
    return ArrayLibrary(
        "torch", device, torch.Tensor, functools.partial(_torch_tensor, torch, device=device),
        functools.partial(_torch_numpy, torch), lambda dtype: getattr(torch, np.dtype(dtype).name),
        lambda t: t.device, ALL)


def _cupy(device):
    import cupy
    device = cupy.cuda.Device(device or 0)

    def to_library(a):
        with device:
            return cupy.asarray(a)

    return ArrayLibrary("cupy", device, cupy.ndarray, to_library, cupy.asnumpy, np.dtype,
                        lambda a: a.device, FULL + (np.dtype(np.float16),))


_ADAPTERS = {"numpy": _numpy, "array_api_strict": _strict, "torch": _torch, "cupy": _cupy}


def on_library(impl, library):
    """``impl`` (an Implementation taking arrays of ``library``) as an Implementation
    the kit can run: its arguments converted from NumPy, its results checked and
    converted back; running statistics updated in place are written back into the
    kit's arrays."""
    import dataclasses
    if library.name == "numpy":
        return impl

    def forward(op, x, gamma, beta, running_mean, running_second, **options):
        given = (running_mean, running_second)
        inputs = [None if a is None else library.to_library(a) for a in (x, gamma, beta) + given]
        if options.get("residual") is not None:
            options["residual"] = library.to_library(options["residual"])
        y, saved = op(*inputs, **options)
        library.check(y, x.dtype, "y")
        for kept, used, name in zip(given, inputs[3:], ("running_mean", "running_second")):
            if kept is not None:
                library.check(used, kept.dtype, name)
                kept[...] = library.to_numpy(used)
        return library.to_numpy(y), saved

    def backward(op, dy, x, saved, gamma, **options):
        inputs = [None if a is None else library.to_library(a) for a in (dy, x, gamma)]
        if options.get("y") is not None:   # the fused forward's output, the mask source
            options["y"] = library.to_library(options["y"])
        grads = op(inputs[0], inputs[1], saved, inputs[2], **options)
        wanted = grad_dtype(x.dtype, gamma)
        # dz (after a fused forward with a residual) has x's dtype
        for arr, name, dtype in zip(grads, ("dx", "dgamma", "dbeta", "dz"),
                                    (x.dtype, wanted, wanted, x.dtype)):
            library.check(arr, dtype, name)
        return tuple(library.to_numpy(arr) for arr in grads)

    def wrap(op, adapter):
        return None if op is None else functools.partial(adapter, op)

    return dataclasses.replace(
        impl, name=f"{impl.name} ({library})",
        dtypes=tuple(d for d in map(np.dtype, impl.dtypes) if d in library.dtypes),
        batch_norm=wrap(impl.batch_norm, forward),
        batch_norm_backward=wrap(impl.batch_norm_backward, backward),
        batch_renorm=wrap(impl.batch_renorm, forward),
        batch_renorm_backward=wrap(impl.batch_renorm_backward, backward))
