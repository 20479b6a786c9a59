"""What normops asks of an array library, through the Python array API standard.

NumPy arrays are asked directly (the cpu and reference backends' hot path); any other
library's arrays go through ``array-api-compat``, imported on first use, so that normops
itself needs only NumPy. Facts the standard leaves out (memory strides, writeability,
shared memory) are read where the library offers them and skipped where it does not
(``array-api-strict`` offers none of them).
"""
import contextlib
import math
from typing import Any

import numpy

COMPAT_INSTALL = "pip install 'normops[array-api]' (or: pip install array-api-compat)"

_namespace_by_type: dict[type, Any] = {}   # array type -> its array-API namespace (the lookup costs us)
_wide_by_device: dict[tuple[Any, Any], Any] = {}      # (namespace, device) -> the dtype sums are kept in
_writeable_by_type: dict[type, bool] = {}   # array type without flags -> whether its arrays can be written


def compat():
    """The array_api_compat module, or an ImportError that says what to install."""
    try:
        import array_api_compat
    except ImportError as exc:
        raise ImportError(f"array-api-compat is not installed ({COMPAT_INSTALL})") from exc
    return array_api_compat


def has_compat():
    try:
        compat()
    except ImportError:
        return False
    return True


def namespace_or_none(value):
    """The array-API namespace of ``value``'s library (array-api-compat's wrapper for
    NumPy, CuPy and PyTorch), or None when ``value`` is not an array it knows."""
    kind = type(value)
    try:
        return _namespace_by_type[kind]
    except KeyError:
        pass
    try:
        found = compat()
    except ImportError:
        return None
    if not found.is_array_api_obj(value):
        return None
    xp = _namespace_by_type[kind] = found.array_namespace(value)
    return xp


def is_array(xp, value):
    """Whether ``value`` is an array of the namespace ``xp`` (the numpy module or an
    array-API namespace)."""
    if xp is numpy:
        return isinstance(value, numpy.ndarray)
    return namespace_or_none(value) is xp


def unsupported(arr):
    """Why normops cannot take this array of a known library (a PyTorch tensor that is
    sparse, nested or on the meta device, which holds no values), or None."""
    if getattr(arr, "is_nested", False):
        return "a nested tensor"
    layout = getattr(arr, "layout", None)
    if layout is not None and str(layout) != "torch.strided":
        return f"a tensor of layout {layout}"
    if str(getattr(arr, "device", "")) == "meta":
        return "a tensor on the meta device, which holds no values"
    return None


def float_dtypes(xp):
    return (xp.float32, xp.float64)


def input_dtypes(xp):
    """The dtypes x may have in xp's library: float32, float64, and the half dtypes the
    library has (float16: PyTorch, CuPy; bfloat16: PyTorch)."""
    return float_dtypes(xp) + tuple(getattr(xp, name) for name in ("float16", "bfloat16")
                                    if getattr(xp, name, None) is not None)


def dtype_name(dtype):
    """A dtype's plain name ("float32" for numpy's, torch's and array-api-strict's)."""
    return str(dtype).rpartition(".")[2]


def size(arr):
    return math.prod(arr.shape)


def device(arr):
    """The device of an array (NumPy's: "cpu")."""
    if isinstance(arr, numpy.ndarray):
        return "cpu"
    found = getattr(arr, "device", None)   # the standard's attribute (PyTorch, CuPy, ...)
    if found is not None and not callable(found):
        return found
    return compat().device(arr)   # libraries that predate it


def astype(xp, arr, dtype):
    """``arr`` as ``dtype`` (the array itself when it has it already)."""
    if arr.dtype == dtype:
        return arr
    convert = getattr(xp, "astype", None)   # NumPy < 2 has only the method
    return convert(arr, dtype) if convert is not None else arr.astype(dtype)


def wide_dtype(xp, dev):
    """The dtype sums are kept in: float64, or float32 on a device that lacks float64
    (array-API inspection says which; a library that cannot tell is taken to have it)."""
    if xp is numpy:
        return numpy.float64
    try:
        return _wide_by_device[xp, dev]
    except (KeyError, TypeError):   # not seen yet, or a device that is not hashable
        pass
    wide = xp.float64
    info = getattr(xp, "__array_namespace_info__", None)
    if info is not None:
        try:
            if "float64" not in info().dtypes(device=dev, kind="real floating"):
                wide = xp.float32
        except Exception:   # a library whose inspection does not know this device
            pass
    try:
        _wide_by_device[xp, dev] = wide
    except TypeError:
        pass
    return wide


# -- memory facts the standard leaves out ------------------------------------------

def step_bytes(arr):
    """Bytes between consecutive elements of a 1-D array, or None where the library
    does not say (array-api-strict)."""
    strides = getattr(arr, "strides", None)
    if isinstance(strides, tuple):          # NumPy, CuPy
        return strides[0]
    stride = getattr(arr, "stride", None)   # PyTorch: in elements
    if callable(stride):
        return stride(0) * arr.element_size()
    return None


def itemsize(arr):
    found = getattr(arr, "itemsize", None)
    if isinstance(found, int):
        return found
    if callable(getattr(arr, "element_size", None)):
        return arr.element_size()
    return numpy.dtype(dtype_name(arr.dtype)).itemsize


def no_autograd(x):
    """A context in which a library with autograd (PyTorch) records no graph: normops
    computes gradients explicitly, and updates running statistics in place even where
    they require grad."""
    if callable(getattr(x, "requires_grad_", None)):
        import torch
        return torch.no_grad()
    return contextlib.nullcontext()


def writeable(arr):
    """Whether ``arr`` may be written in place (False for read-only NumPy arrays and for
    libraries with immutable arrays, such as JAX)."""
    flags = getattr(arr, "flags", None)
    if flags is not None and hasattr(flags, "writeable"):
        return bool(flags.writeable)
    is_inference = getattr(arr, "is_inference", None)
    if callable(is_inference) and is_inference():   # PyTorch: only in inference mode
        import torch
        return torch.is_inference_mode_enabled()
    kind = type(arr)   # without flags, writeability is the library's, the same for every array
    if kind not in _writeable_by_type:
        _writeable_by_type[kind] = compat().is_writeable_array(arr)
    return _writeable_by_type[kind]


def _extent(arr):
    """(first byte, end byte) of a PyTorch tensor's memory (its strides are >= 0)."""
    start = arr.data_ptr()
    if arr.ndim == 1:   # a per-channel tensor: the common case, without a generator
        n, step = arr.shape[0], arr.stride(0)
        return start, start + ((n - 1) * step + 1) * arr.element_size() if n else start
    if arr.numel() == 0:
        return start, start
    reach = sum((n - 1) * s for n, s in zip(arr.shape, arr.stride()))
    return start, start + (reach + 1) * arr.element_size()


def memory_span(arr):
    """(device, first byte, end byte) of a PyTorch tensor's memory, None for other
    libraries' arrays: two tensors overlap if and only if their spans do."""
    if not callable(getattr(arr, "data_ptr", None)):
        return None
    start, end = _extent(arr)
    return arr.device, start, end


def spans_overlap(a, b):
    return a[0] == b[0] and a[1] < b[2] and b[1] < a[2]


def may_share_memory(xp, a, b):
    """Whether two arrays of ``xp`` may overlap in memory: the library's own test where
    it has one (NumPy, CuPy), bounds of the storage for PyTorch, identity elsewhere."""
    if a is b:
        return True
    if xp is numpy:   # bounds first (cheap); then the exact test, so interleaved views pass
        try:
            return numpy.may_share_memory(a, b) and numpy.shares_memory(a, b, max_work=10_000)
        except numpy.exceptions.TooHardError:
            return True
    test = getattr(xp, "shares_memory", None) or getattr(xp, "may_share_memory", None)
    if test is not None:
        return bool(test(a, b))
    span_a, span_b = memory_span(a), memory_span(b)
    return span_a is not None and span_b is not None and spans_overlap(span_a, span_b)


def host_list(arr, limit=8):
    """Up to ``limit`` values of a 1-D array as Python floats (for error messages only:
    each one is a transfer to the host)."""
    return [float(arr[i]) for i in range(min(arr.shape[0], limit))]


def to_host(value):
    """A NumPy array of an array of any library (copied to the host where it lives
    elsewhere; a tensor of a dtype NumPy lacks, bfloat16, widened to float64), without
    importing the library; anything else (a list, say) is returned unchanged."""
    if isinstance(value, numpy.ndarray):
        return value
    detach = getattr(value, "detach", None)
    if callable(detach):             # a PyTorch tensor
        tensor = detach().cpu()
        try:
            return tensor.numpy()
        except TypeError:            # a dtype NumPy lacks (bfloat16): widen it first
            return tensor.double().numpy()
    if type(value).__module__.partition(".")[0] == "cupy":
        return value.get()
    if hasattr(value, "__dlpack__"):
        try:
            return numpy.from_dlpack(value)
        except Exception:            # not on the host, or a dtype NumPy lacks
            pass
    return value
