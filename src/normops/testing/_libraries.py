"""Adapters that run the kit on another array library: the kit draws NumPy cases; an
adapter hands an implementation the same values as arrays of its library on a device,
checks that every result is an array of that library, on that device, of its dtype
(y and dx x's, dgamma and dbeta gamma's or float32 for half x without gamma, running
statistics their own), and gives the kit NumPy copies to compare (``on_library``, in
_implementation, puts an Implementation on an adapter)."""
import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from .._arrays import COMPAT_INSTALL
from .._typing import Array, DTypeLike
from ._dtypes import ALL, FULL

# library -> what installs it
INSTALL: dict[str, str] = {
    "numpy": "numpy",
    "array_api_strict": "pip install array-api-strict",
    "torch": "pip install 'normops[torch]'",
    "cupy": "pip install 'normops[cupy]' (and an NVIDIA GPU)",
}
#: The array libraries the kit runs on: "numpy", "array_api_strict", "torch", "cupy".
LIBRARIES: tuple[str, ...] = tuple(INSTALL)


# (the lint of the source sees no __init__, and so no parameters, in a dataclass)
@dataclass(frozen=True)
class ArrayLibrary:  # numpydoc ignore=PR02
    """One array library on one device, as the kit hands an implementation its arrays.

    ``to_library`` makes its array from a NumPy array (keeping the memory arrangement
    where the library can), ``to_numpy`` the other way; ``array_type`` and ``dtype_of``
    say what its results must be. ``array_library`` makes the kit's adapters; the
    constructor takes the attributes below as its arguments, in this order. Its str is
    the name, and the device where there is one.

    Parameters
    ----------
    name : str
        The library's name (one of ``LIBRARIES`` for the kit's adapters).
    device : object
        The device its arrays are on (the library's own device object), or None.
    array_type : type
        The type of its arrays: every result must be one.
    to_library : callable
        NumPy array -> the library's array on ``device``.
    to_numpy : callable
        The library's array -> a NumPy array.
    dtype_of : callable
        NumPy dtype -> the library's dtype.
    device_of : callable
        The library's array -> its device.
    dtypes : tuple of numpy.dtype
        The NumPy dtypes of x the library has (the kit draws those); float32 and float64
        by default.
    """

    name: str
    device: Any
    array_type: type[Any]
    to_library: Callable[[NDArray[Any]], Array]
    to_numpy: Callable[[Array], NDArray[Any]]
    dtype_of: Callable[[DTypeLike], Any]      # NumPy dtype -> the library's
    device_of: Callable[[Array], Any]         # array -> its device
    dtypes: tuple[np.dtype[Any], ...] = FULL  # the NumPy dtypes of x it has (the kit draws those)

    def __str__(self) -> str:
        return self.name if self.device is None else f"{self.name} on {self.device}"

    def check(self, arr: Array, dtype: DTypeLike, what: str) -> None:
        """Assert that an array is this library's array of a dtype on its device.

        Parameters
        ----------
        arr : Array
            A result of the implementation under test.
        dtype : dtype-like
            The NumPy dtype it must have (as ``dtype_of`` maps it to the library's).
        what : str
            The result's name, for the message.

        Raises
        ------
        AssertionError
            If ``arr`` is not an ``array_type``, or its dtype is not ``dtype_of(dtype)``,
            or it is not on ``device`` (when the library has one); the message says which
            and what was expected.
        """
        if not isinstance(arr, self.array_type):
            raise AssertionError(f"{what} is a {type(arr).__module__}.{type(arr).__qualname__}, "
                                 f"expected a {self.array_type.__module__}.{self.array_type.__qualname__}")
        if arr.dtype != self.dtype_of(dtype):
            raise AssertionError(f"{what} has dtype {arr.dtype}, expected {self.dtype_of(dtype)}")
        if self.device is not None and self.device_of(arr) != self.device:
            raise AssertionError(f"{what} is on device {self.device_of(arr)}, expected {self.device}")


def array_library(name: str, device: Any = None) -> ArrayLibrary:
    """Make the adapter that runs the kit on the arrays of a library.

    Parameters
    ----------
    name : str
        One of ``LIBRARIES``.
    device : object, optional
        The device (the library's device object, or a name or index it takes: "cpu",
        "cuda:1", 0, ...); None: the library's default device.

    Returns
    -------
    ArrayLibrary
        The adapter for library ``name`` on ``device``.

    Raises
    ------
    ValueError
        If ``name`` is not one of ``LIBRARIES``, or ``device`` is not a cpu for NumPy.
    ImportError
        If the library is missing; the message names what to install.
    """
    if name not in INSTALL:
        raise ValueError(f"unknown array library {name!r}; known: {', '.join(LIBRARIES)}")
    try:
        return _ADAPTERS[name](device)
    except ImportError as exc:
        raise ImportError(f"the kit on {name} arrays needs {name} ({INSTALL[name]}): {exc}") from exc


def _numpy(device: Any) -> ArrayLibrary:
    if device not in (None, "cpu"):
        raise ValueError(f"NumPy arrays live on the cpu, not on {device!r}")
    return ArrayLibrary("numpy", None, np.ndarray, lambda a: a, np.asarray, np.dtype,
                        lambda a: "cpu", ALL)


def _compat_device(arr: Array) -> Any:
    try:
        import array_api_compat
    except ImportError as exc:
        raise ImportError(f"array-api-compat is not installed ({COMPAT_INSTALL})") from exc
    return array_api_compat.device(arr)


def _strict(device: Any) -> ArrayLibrary:
    import array_api_strict as xps
    if isinstance(device, str):
        device = xps.Device(device)
    device = device or xps.Device("CPU_DEVICE")
    return ArrayLibrary(
        "array_api_strict", device, type(xps.asarray(0.0)),
        lambda a: xps.asarray(a, device=device), lambda a: np.from_dlpack(a),
        lambda dtype: getattr(xps, np.dtype(dtype).name), _compat_device)


def _torch_tensor(torch: Any, a: NDArray[Any], device: Any) -> Any:
    """``a`` as a tensor on ``device``; on the cpu it shares a's memory and strides
    (NumPy's negative strides, which tensors cannot have, take a copy)."""
    if any(s < 0 for s in a.strides):
        a = a.copy()
    if a.dtype.name == "bfloat16":   # torch.from_numpy does not know ml_dtypes' bfloat16
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).to(device)
    return torch.from_numpy(a).to(device)


def _torch_numpy(torch: Any, t: Any) -> NDArray[Any]:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        from .._halves import bfloat16
        halves: NDArray[Any] = t.view(torch.int16).numpy().view(bfloat16())
        return halves
    values: NDArray[Any] = t.numpy()
    return values


def _torch(device: Any) -> ArrayLibrary:
    import torch
    device = torch.device(device or "cpu")
    if device.type != "cpu" and device.index is None:   # "cuda": tensors say "cuda:0"
        device = torch.empty(0, device=device).device
    return ArrayLibrary(
        "torch", device, torch.Tensor, functools.partial(_torch_tensor, torch, device=device),
        functools.partial(_torch_numpy, torch), lambda dtype: getattr(torch, np.dtype(dtype).name),
        lambda t: t.device, ALL)


def _cupy(device: Any) -> ArrayLibrary:
    import cupy
    device = cupy.cuda.Device(device or 0)

    def to_library(a: NDArray[Any]) -> Any:
        with device:
            return cupy.asarray(a)

    return ArrayLibrary("cupy", device, cupy.ndarray, to_library, cupy.asnumpy, np.dtype,
                        lambda a: a.device, FULL + (np.dtype(np.float16),))


_ADAPTERS: dict[str, Callable[[Any], ArrayLibrary]] = {
    "numpy": _numpy, "array_api_strict": _strict, "torch": _torch, "cupy": _cupy}
