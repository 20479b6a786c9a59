"""Stateful BatchNorm and BatchRenorm layers: parameters, running statistics, train/eval
mode, forward/backward with gradients kept for an optimizer, and state dicts with the
keys of PyTorch's ``BatchNorm*d``.

A layer's array library and device are those of its parameters, fixed when it is made:

* ``like=None`` (the default): NumPy arrays; ``device`` must then be None or "cpu".
* ``like=`` an array of an array-API library (``torch.empty(0)``, ``cupy.empty(0)``, an
  ``array_api_strict`` array, anything array-api-compat knows): gamma, beta and the
  running statistics are arrays of that library, made through its array-API namespace,
  on ``device`` (default: like's device). Like's values, shape and dtype do not matter.
  Libraries with immutable arrays (JAX) are refused: a layer updates in place.
* ``dtype``: float32, float64, float16 or bfloat16, as a NumPy dtype or its name
  ("float32", "bfloat16"; ml_dtypes.bfloat16), which maps to the library's own dtype
  (torch.float32), or as the library's own dtype object (torch.bfloat16). It is the
  dtype of the parameters and running statistics, and of the gradients ``grads()``
  holds. x must have it, except that a float32 layer also takes float16 and bfloat16 x
  (PyTorch's mixed precision: float32 master weights); y and dx have x's dtype.

``forward(x)`` and ``backward(dy)`` take arrays of the layer's library on its device
(NumPy layers also take what ``np.asarray`` converts, such as lists) and refuse any
other with a TypeError (another library) or ValueError (another device) that names the
layer's library and device, rather than converting: convert the array, or create the
layer with ``like=x``. The layer passes its arrays to the public ops, which pick the
backend from x's type (unless ``backend=``) and do the numeric work, so every check of
the ops applies. Outputs, dx, ``params()``, ``grads()`` and the running statistics are
arrays of the layer's library on its device; ``num_batches_tracked`` is an int.

``activation="relu"`` makes the layer the fused tail of a residual block: ``forward(x,
residual=z)`` returns y = relu(BN(x) + z) (z optional, of x's shape, dtype and library)
and ``backward(dy)`` returns dx, or ``(dx, dz)`` after a forward with a residual. The
layer keeps y for the backward's mask (see batch_norm_backward) until the next forward.

``comm=`` an mpi4py intracommunicator makes the layer synchronized (data parallel): its
forward and backward run the ops with ``comm``, so that training normalizes with the
statistics of every rank's batch, dgamma and dbeta are sums over every rank's batch,
and a fault on any rank (the layer's own checks included) raises on every rank.
``recompute_population_stats`` pools over the layers' communicator.

``state_dict()`` returns copies in the layer's library, ``num_batches_tracked`` as a
0-d int64 array of that library on the layer's device (a NumPy array for NumPy
layers, a tensor for torch layers, as torch's own state dicts hold). ``load_state_dict``
takes values of any library (tensors, NumPy arrays, lists), checks them all, then copies
them into the layer's arrays, on its device, in its dtype. ``eval_affine()``,
``recompute_population_stats`` and ``fold_into_linear`` / ``fold_into_conv`` work on
layers of any library through the array API; folding takes W and b of the layer's
library on its device.
"""
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, TypeAlias, TypeVar, cast

import numpy as np

from . import _arrays as arrays
from . import _distributed as distributed
from . import _halves as halves
from . import _validation as check
from ._saved import BatchNormSaved, BatchRenormSaved
from ._typing import Array, ArrayLike, Comm, DTypeLike
from .ops import batch_norm, batch_norm_backward, batch_renorm, batch_renorm_backward

# An array library's namespace: the numpy module, or an array-API namespace (a module, or
# any object with the standard's functions, as a library's __array_namespace__ gives it).
_Namespace: TypeAlias = Any
# A device as the layer's library spells it: "cpu" for NumPy, a torch.device, a
# cupy.cuda.Device, ...; its type is the library's own.
_Device: TypeAlias = Any
# rmax or dmax of a BatchRenorm: a number, or a schedule step -> value (normops.schedules)
_Clip: TypeAlias = float | Callable[[int], float]
_Layer = TypeVar("_Layer", bound="_Norm")

# state-dict key -> attribute; PyTorch names gamma "weight" and beta "bias"
_PARAM_KEYS = {"weight": "gamma", "bias": "beta"}
# what a loaded spread must be: a running_var may be 0 (a constant channel), a running_std
# divides; NaN fails both
_SPREAD_RULES: dict[str, tuple[str, np.ufunc]] = {
    "running_var": ("non-negative", np.greater_equal),
    "running_std": ("positive", np.greater)}


# (the lint of the source sees no __init__, and so no parameters, in a NamedTuple)
class LoadResult(NamedTuple):  # numpydoc ignore=PR02
    """What ``load_state_dict(..., strict=False)`` left out.

    Parameters
    ----------
    missing_keys : list of str
        The layer's keys the state dict lacked (num_batches_tracked is never missing:
        as in PyTorch, a state without it keeps the layer's count).
    unexpected_keys : list of str
        The state dict's keys the layer does not have.
    """

    missing_keys: list[str]
    unexpected_keys: list[str]


# the fields' docstrings (NamedTuple's own say "Alias for field number 0")
LoadResult.missing_keys.__doc__ = "The layer's keys the state dict lacked."
LoadResult.unexpected_keys.__doc__ = "The state dict's keys the layer does not have."


def _type_name(value: object) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _other_library_array(value: object) -> bool:
    """Whether ``value`` is an array of a library other than NumPy (a tensor, say)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return False
    return (hasattr(value, "__array_namespace__") or hasattr(value, "__dlpack__")
            or arrays.namespace_or_none(value) is not None)


def _to_numpy(value: object, key: str) -> Array:
    """A NumPy array from an array of any library (copied to the host) or a list; a
    bfloat16 one widened to float64 (exactly), which NumPy's dtype tests understand."""
    arr = check.as_array(np, arrays.to_host(value), key)
    return arr.astype(np.float64) if arr.dtype.name == "bfloat16" else arr


def _real(xp: _Namespace, key: str, value: Array) -> Array:
    """value, which a state dict holds under key, if it holds real numbers."""
    if xp is np:
        if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
            raise TypeError(f"{key} must hold real numbers, got dtype {value.dtype}")
    elif not xp.isdtype(value.dtype, ("real floating", "integral")):
        raise TypeError(f"{key} must hold real numbers, got dtype {arrays.dtype_name(value.dtype)}")
    return value


def _check_spread(xp: _Namespace, key: str, value: Array) -> None:
    bound, holds = _SPREAD_RULES[key]
    ok: bool | np.bool_
    if xp is np:
        ok = np.all(holds(value, 0))
    else:
        ok = bool(xp.all(value >= 0 if key == "running_var" else value > 0))
    if not ok:
        raise ValueError(f"{key} must be {bound} (and not NaN), got {value}")


def _library(like: Array | None, device: _Device) -> tuple[_Namespace, _Device]:
    """(namespace, device) of a new layer's arrays: (numpy, "cpu") without ``like``,
    else like's library and ``device`` (default: like's device)."""
    if like is None or isinstance(like, (np.ndarray, np.generic)):
        if device is not None and not (isinstance(device, str) and device == "cpu"):
            hint = "" if like is not None else (
                f"; to hold the parameters in another library, pass like= an array of it "
                f"too (like=torch.empty(0), device={device!r})")
            raise ValueError(f"a NumPy layer lives on device 'cpu', got device={device!r}{hint}")
        return np, "cpu"
    check.supported(like, "like")   # a meta tensor: a layer that could never run
    xp = arrays.namespace_or_none(like)
    if xp is None:
        missing = "" if arrays.has_compat() else (
            f" (other libraries than NumPy need array-api-compat: {arrays.COMPAT_INSTALL})")
        raise TypeError(f"like must be an array of the array library the layer holds its "
                        f"parameters in: a numpy.ndarray, torch.Tensor, cupy.ndarray, "
                        f"array_api_strict array or another array-API library's array, got "
                        f"{_type_name(like)}{missing}")
    return xp, arrays.device(like) if device is None else device


LAYER_DTYPES = ("float32", "float64") + halves.HALF_NAMES


def _numpy_dtype(dtype: DTypeLike) -> np.dtype[Any] | None:
    """np.dtype(dtype), with "bfloat16" found through ml_dtypes (NumPy knows the name
    only once ml_dtypes is imported); None for what names no dtype."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        bfloat16: np.dtype[Any] = halves.bfloat16()
        return bfloat16
    try:
        found: np.dtype[Any] = np.dtype(dtype)
    except TypeError:
        return None
    return found


def _library_dtype(xp: _Namespace, dtype: DTypeLike) -> DTypeLike:
    """The layer's dtype: for NumPy a numpy float32/float64/float16/bfloat16 dtype; for
    another library its own dtype of those names (where it has it), given as that dtype
    or as a NumPy dtype or dtype name."""
    if xp is not np:
        for own in arrays.input_dtypes(xp):
            # the library's own dtype objects compare among themselves (an array's dtype
            # need not be the namespace's object); comparing them with NumPy's may warn
            if dtype is own or (type(dtype) is type(own) and dtype == own):
                return _dtype_object(own)
    found = _numpy_dtype(dtype)
    # (np.dtype(None) == None: test None first)
    if found is None or found.name not in LAYER_DTYPES or (
            xp is not np and getattr(xp, found.name, None) is None):
        accepted = "a NumPy dtype or its name" if xp is np else f"a NumPy dtype, its name or {check.library(xp)}'s own"
        hint = ""
        if found is None and xp is np and not isinstance(dtype, str):
            hint = "; for another library's dtype, pass like= an array of that library too"
        elif found is not None and found.name in LAYER_DTYPES:
            hint = f"; {check.library(xp)} has no {found.name}"
        shown = repr(dtype) if found is None else found
        raise TypeError(f"dtype must be {check.INPUT_DTYPES} ({accepted}), got {shown}{hint}")
    return found if xp is np else _dtype_object(getattr(xp, found.name))


def _dtype_object(dtype: DTypeLike) -> DTypeLike:
    """A library's dtype as its arrays' ``.dtype`` reads: CuPy names its dtypes by NumPy's
    scalar types (cupy.float32 is numpy.float32), whose arrays have a numpy.dtype."""
    return np.dtype(dtype) if isinstance(dtype, type) and issubclass(dtype, np.generic) else dtype


class _Norm:
    """What BatchNorm and BatchRenorm share; subclasses name their spread statistic
    (``_spread``) and run their op (``_op_forward`` / ``_op_backward``).

    The array library and device: ``like=`` an array of the library to hold the
    parameters and running statistics in (default: NumPy) and ``device=`` (default:
    like's; a NumPy layer's is "cpu"). ``dtype``: float32 or float64, as a NumPy dtype
    or name, or the library's own dtype. ``xp`` is the layer's array namespace and
    ``device`` its device.
    """

    # set by the subclasses: the name of the running spread statistic, its initial value
    _spread: ClassVar[str]
    _spread_init: ClassVar[float] = 1.0

    comm: Comm | None
    activation: Literal["relu"] | None
    num_features: int
    eps: float
    momentum: float | None
    dtype: DTypeLike
    axis: int
    track_running_stats: bool
    backend: str | None
    device: _Device
    gamma: Array | None
    beta: Array | None
    running_mean: Array | None   # None without track_running_stats
    num_batches_tracked: int | None
    training: bool
    _like: Array | None
    _x: Array | None
    _saved: BatchNormSaved | BatchRenormSaved | None
    _y: Array | None
    _grads: dict[str, Array] | None
    # a _population.PooledMoments while recompute_population_stats collects, else None
    _collector: Any

    if TYPE_CHECKING:   # defined by the subclasses
        def _op_forward(self, x: Array, *, training: bool, momentum: float,
                        running: tuple[Array | None, Array | None] | None,
                        **fused: Any) -> tuple[Array, BatchNormSaved | BatchRenormSaved]: ...

        # saved: the subclass's own saved type
        def _op_backward(self, dy: ArrayLike, x: Array, saved: Any,
                         y: Array | None = None) -> tuple[Array, ...]: ...

        def _eval_invstd(self, xp: _Namespace, wide: DTypeLike) -> Array: ...

        def _set_population(self, count: int, mean: Array, m2: Array) -> None: ...

    def __init__(self, num_features: int, *, eps: float, momentum: float | None, affine: bool,
                 center: bool, scale: bool, track_running_stats: bool, axis: int,
                 dtype: DTypeLike, backend: str | None, like: Array | None, device: _Device,
                 comm: Comm | None, activation: Literal["relu"] | None) -> None:
        self.comm = None if comm is None else distributed.intracomm(comm)
        self.activation = check.activation(activation)
        self.num_features = check.integer(num_features, "num_features")
        if self.num_features < 1:
            raise ValueError(f"num_features must be at least 1, got {self.num_features}")
        self.eps = check.number(eps, "eps", low=0.0, low_open=True, finite=True)
        self.momentum = None if momentum is None else check.number(momentum, "momentum", low=0.0, high=1.0)
        xp, device = _library(like, device)
        self.dtype = _library_dtype(xp, dtype)
        self.axis = check.integer(axis, "axis")
        affine = check.flag(affine, "affine")
        self.track_running_stats = check.flag(track_running_stats, "track_running_stats")
        self.backend = backend
        scale, center = check.flag(scale, "scale"), check.flag(center, "center")
        # _like: an empty array of the layer's library on its device (None: NumPy); it
        # names the library (a module would make the layer unpicklable) and the device
        self._like = None
        self.device = device
        if xp is not np:
            self._like = self._empty_array(xp, device)
            self.device = arrays.device(self._like)   # the library's own spelling of it
        self.gamma = self._full(1.0) if affine and scale else None
        self.beta = self._full(0.0) if affine and center else None
        self.reset_running_stats()
        self.training = True
        self._x = self._saved = self._y = None
        self._grads = None
        self._collector = None   # set by recompute_population_stats

    def _empty_array(self, xp: _Namespace, device: _Device) -> Array:
        """An empty array of the layer's dtype on ``device``, with a clear error where the
        library cannot make one or cannot write it in place."""
        lib = check.library(xp)
        try:
            empty = xp.empty((0,), dtype=self.dtype, device=device)
        except Exception as exc:   # libraries raise their own types for a bad device
            raise ValueError(f"cannot make {lib} arrays of dtype {arrays.dtype_name(self.dtype)} "
                             f"on device {device!r}: {exc}") from exc
        if not arrays.writeable(empty):
            raise TypeError(f"{lib} arrays are immutable, but a layer updates its parameters "
                            f"and running statistics in place: use the ops (normops.batch_norm, "
                            f"...) with arrays of {lib}, or a layer of another library")
        return empty

    @property
    def xp(self) -> _Namespace:
        """The array namespace of the layer's library.

        The numpy module for a NumPy layer, else the library's array-API namespace
        (array-api-compat's for torch and cupy).
        """
        return np if self._like is None else arrays.namespace_or_none(self._like)

    def _full(self, value: float) -> Array:
        """A new (C,) array of ``value`` in the layer's library, dtype and device."""
        if self._like is None:
            return np.full(self.num_features, value, self.dtype)
        return self.xp.full((self.num_features,), value, dtype=self.dtype, device=self.device)

    def _wide(self) -> DTypeLike:
        """The dtype eval_affine and the population statistics are computed in."""
        return np.float64 if self._like is None else arrays.wide_dtype(self.xp, self.device)

    def _copy(self, arr: Array) -> Array:
        return arr.copy() if self._like is None else self.xp.asarray(arr, copy=True)

    def _write(self, target: Array, value: Array) -> None:
        """value (of the layer's library, any float dtype) into the layer's array target,
        rounded once to its dtype."""
        target[...] = halves.cast(self.xp, value, target.dtype)

    # -- modes and state ------------------------------------------------------------
    def train(self: _Layer, mode: bool = True) -> _Layer:
        """Set training mode (or eval mode with ``mode=False``).

        Parameters
        ----------
        mode : bool, default True
            Training mode: forward normalizes with the batch statistics and updates the
            running ones. Eval mode: it normalizes with the running statistics (with the
            batch statistics when they are not tracked).

        Returns
        -------
        BatchNorm or BatchRenorm
            The layer itself.

        Raises
        ------
        TypeError
            If ``mode`` is not a bool.
        """
        self.training = check.flag(mode, "mode")
        return self

    def eval(self: _Layer) -> _Layer:
        """Set eval mode: ``train(False)``.

        Returns
        -------
        BatchNorm or BatchRenorm
            The layer itself.
        """
        return self.train(False)

    def reset_running_stats(self) -> None:
        """Reset the running statistics: mean 0, spread 1, no batches tracked.

        Without ``track_running_stats`` they stay None. Existing arrays are reset in
        place, so references to them stay valid.
        """
        if self.track_running_stats:
            xp = self.xp
            for name, value in (("running_mean", 0.0), (self._spread, self._spread_init)):
                if arrays.is_array(xp, getattr(self, name, None)):
                    getattr(self, name)[...] = value
                else:
                    setattr(self, name, self._full(value))
            self.num_batches_tracked = 0
        else:
            self.running_mean = self.num_batches_tracked = None
            setattr(self, self._spread, None)

    def _running(self) -> tuple[Array | None, Array | None]:
        return (self.running_mean, getattr(self, self._spread)) if self.track_running_stats else (None, None)

    def _step_momentum(self) -> float:
        """The weight of this step's batch: ``momentum``, or 1/k at the k-th tracked batch
        (a cumulative average of the batch statistics) when momentum is None."""
        # (called only when tracking: num_batches_tracked is an int)
        return 1.0 / (cast(int, self.num_batches_tracked) + 1) if self.momentum is None \
            else self.momentum

    # -- forward and backward ---------------------------------------------------------
    def _refuse_other_library(self, value: object, name: str) -> None:
        """A TypeError (another library's array) or ValueError (another device) unless
        ``value`` may go to the layer's op as it is; NumPy layers also take what
        np.asarray converts (lists), as the ops do."""
        if self._like is None:
            if _other_library_array(value):
                raise TypeError(f"{self!r} holds NumPy arrays but {name} is a "
                                f"{_type_name(value)}: pass {name} as a NumPy array, or create "
                                f"the layer with like={name} to hold its parameters in "
                                f"{name}'s library and device")
            return
        xp = self.xp
        if not arrays.is_array(xp, value):
            raise TypeError(f"{self!r} holds {check.library(xp)} arrays on device {self.device} "
                            f"but {name} is a {_type_name(value)}: pass {name} as a "
                            f"{check.library(xp)} array on that device, or create the layer "
                            f"with like={name} to hold its parameters in {name}'s library")
        where = arrays.device(value)
        if where != self.device:
            raise ValueError(f"{self!r} holds its parameters on device {self.device} but {name} "
                             f"is on device {where}: move {name} to {self.device}, or create "
                             f"the layer with like={name} (or device={where!r})")

    def _check_input(self, x: ArrayLike) -> tuple[Array, int]:
        """x (an array of this layer's dtype, or a half dtype for a float32 layer, and of
        its channels) and its channel axis (>= 0)."""
        if self._like is None:
            if type(x) is not np.ndarray:
                self._refuse_other_library(x, "x")
            given = x
            x = check.as_input(np, x, shared_batch=self._synced() is not None)
            if x.dtype != self.dtype and not self._master_weights(x):
                raise TypeError(f"{self!r} holds {self.dtype} parameters but x has dtype {x.dtype}: "
                                f"convert x ({_conversion(given, self.dtype)}) or create the layer "
                                f"with dtype={_spelled(x.dtype)}{_mixed_hint(self.dtype)}")
        else:
            self._refuse_other_library(x, "x")
            x = check.as_input(self.xp, x, shared_batch=self._synced() is not None)
            if x.dtype != self.dtype and not self._master_weights(x):
                ours, theirs = arrays.dtype_name(self.dtype), arrays.dtype_name(x.dtype)
                raise TypeError(f"{self!r} holds {ours} parameters but x has dtype {theirs}: "
                                f"convert x to {ours} or create the layer with dtype={theirs!r}"
                                f"{_mixed_hint(self.dtype)}")
        axis = check.channel_axis(self.axis, x.ndim)
        if x.shape[axis] != self.num_features:
            raise ValueError(f"{self!r} expects {self.num_features} channels on axis {self.axis}, "
                             f"got x of shape {tuple(x.shape)}")
        return x, axis

    def _master_weights(self, x: Array) -> bool:
        """Whether x is float16/bfloat16 and the layer float32 (PyTorch's mixed precision)."""
        return bool(arrays.dtype_name(self.dtype) == "float32" and halves.is_half(x.dtype))

    def forward(self, x: ArrayLike, residual: ArrayLike | None = None) -> Array:
        """Normalize a batch x; calling the layer is the same.

        Training: normalize with the batch statistics and update the running statistics
        (when tracked). Eval: normalize with the running statistics (with the batch
        statistics when they are not tracked).

        Parameters
        ----------
        x : Array
            The batch, an array of the layer's library on its device, of the layer's
            dtype (a float32 layer also takes float16 and bfloat16 x) with
            ``num_features`` channels on its axis. NumPy layers also take what
            ``np.asarray`` converts, such as lists.
        residual : Array, optional
            The residual z, of x's shape, dtype and library, added before the layer's
            activation: y = act(BN(x) + z).

        Returns
        -------
        Array
            The output y, of x's shape and dtype, in the layer's library.

        Raises
        ------
        TypeError
            If x (or ``residual``) is an array of another library than the layer's, or x
            has a dtype the layer does not take.
        ValueError
            If x is on another device than the layer, has another number of channels,
            or fails the checks of the op (see :func:`batch_norm`).

        Notes
        -----
        The layer keeps a reference to x (and, with an activation, to y) for backward:
        do not modify them in place before calling it. A failed forward leaves nothing
        to differentiate.
        """
        # a failed forward leaves nothing to differentiate
        self._x = self._saved = self._y = self._grads = None
        with distributed.step(self._synced(), f"{type(self).__name__}.forward"):
            x, axis = self._check_input(x)
            if residual is not None:
                self._refuse_other_library(residual, "residual")
            fused = {"residual": residual, "activation": self.activation}
            if self._collector is not None:
                self._collector.add(x, axis)
                y, saved = self._op_forward(x, training=True, momentum=0.0, running=None, **fused)
            elif self.training and self.track_running_stats:
                y, saved = self._op_forward(x, training=True, momentum=self._step_momentum(),
                                            running=self._running(), **fused)
                # (tracking: num_batches_tracked is an int)
                self.num_batches_tracked = cast(int, self.num_batches_tracked) + 1
            else:
                batch_stats = self.training or not self.track_running_stats
                y, saved = self._op_forward(x, training=batch_stats, momentum=0.0,
                                            running=self._running(), **fused)
        self._x, self._saved = x, saved
        self._y = None if self.activation is None else y
        return y

    __call__ = forward

    # -> Any, not Array | tuple[Array, Array]: which of the two depends on the last forward,
    # and a union would make every caller test the type of what it knows it gets
    def backward(self, dy: ArrayLike) -> Any:
        """Backpropagate the upstream gradient dy of the last forward.

        Keeps the gradients of gamma and beta for ``grads()``.

        Parameters
        ----------
        dy : Array
            The gradient of the loss with respect to the last forward's y: an array of
            the layer's library on its device, of y's shape and dtype.

        Returns
        -------
        Array or tuple of Array
            The gradient dx, of x's shape and dtype; ``(dx, dz)`` when the last forward
            had a residual z.

        Raises
        ------
        RuntimeError
            If no forward came before.
        TypeError
            If dy is an array of another library than the layer's, or has another dtype
            than x.
        ValueError
            If dy is on another device than the layer, or not of x's shape.
        """
        # synchronized as the forward was (a backward without a forward: as the layer is)
        comm = self.comm if self._saved is None else self._saved.comm
        with distributed.step(comm, f"{type(self).__name__}.backward"):
            if self._saved is None:
                raise RuntimeError(f"{self!r}: backward(dy) needs a forward(x) first")
            if type(dy) is not np.ndarray or self._like is not None:
                self._refuse_other_library(dy, "dy")
            dx, dgamma, dbeta, *dz = self._op_backward(dy, self._x, self._saved, self._y)
        self._grads = {name: g for name, g in (("gamma", dgamma), ("beta", dbeta))
                       if getattr(self, name) is not None}
        return (dx, *dz) if dz else dx

    def _synced(self) -> Comm | None:
        """The communicator the ops run with: the layer's, except while collecting
        population statistics (each batch is then normalized locally; the pooled
        statistics meet the other ranks' once, at the end)."""
        return self.comm if self._collector is None else None

    def params(self) -> dict[str, Array]:
        """The trainable parameters by name.

        An optimizer updates them in place: ``p -= lr * grads()[name]``.

        Returns
        -------
        dict of str to Array
            "gamma" and "beta" (absent ones left out): the layer's own arrays.
        """
        return {name: getattr(self, name) for name in ("gamma", "beta") if getattr(self, name) is not None}

    def grads(self) -> dict[str, Array]:
        """The gradients of the last backward.

        Returns
        -------
        dict of str to Array
            The gradients dgamma and dbeta under the keys of ``params()``, in the
            layer's dtype.

        Raises
        ------
        RuntimeError
            If no backward came after the last forward.
        """
        if self._grads is None:
            raise RuntimeError(f"{self!r}: no gradients yet; call backward(dy) after forward(x)")
        return dict(self._grads)

    def eval_affine(self) -> tuple[Array, Array]:
        """The per-channel affine map of eval mode.

        Folding into a preceding layer uses it.

        Returns
        -------
        scale, shift : Array
            Per channel, with eval-mode y = scale * x + shift: float64 arrays of the
            layer's library on its device (float32 on a device without float64).

        Raises
        ------
        ValueError
            If the layer tracks no running statistics (in eval mode it then normalizes
            with each batch's, which no fixed affine map matches).
        """
        if not self.track_running_stats:
            raise ValueError(f"{self!r} tracks no running statistics: in eval mode it "
                             f"normalizes with each batch's, which no fixed affine map matches")
        xp, wide = self.xp, self._wide()
        invstd = self._eval_invstd(xp, wide)
        scale = invstd if self.gamma is None else arrays.astype(xp, self.gamma, wide) * invstd
        shift = -scale * arrays.astype(xp, self.running_mean, wide)
        if self.beta is not None:
            shift = shift + arrays.astype(xp, self.beta, wide)
        return scale, shift

    # -- state dicts ------------------------------------------------------------------
    def _state_attrs(self) -> dict[str, str]:
        """state-dict key -> attribute name, in PyTorch's order."""
        keys = {k: a for k, a in _PARAM_KEYS.items() if getattr(self, a) is not None}
        if self.track_running_stats:
            keys.update(running_mean="running_mean", **{self._spread: self._spread},
                        num_batches_tracked="num_batches_tracked")
        return keys

    def _count_array(self) -> Array:
        """num_batches_tracked as a 0-d int64 array of the layer's library on its device
        (its default integer dtype on a device without int64)."""
        n = self.num_batches_tracked
        if self._like is None:
            return np.array(n, np.int64)
        xp = self.xp
        try:
            return xp.asarray(n, dtype=xp.int64, device=self.device)
        except Exception:   # a device without int64
            return xp.asarray(n, device=self.device)

    def state_dict(self) -> dict[str, Array]:
        """Copies of the parameters and running statistics under PyTorch's keys.

        Returns
        -------
        dict of str to Array
            ``weight``, ``bias``, ``running_mean``, ``running_var`` or ``running_std``,
            ``num_batches_tracked`` (absent ones left out): arrays of the layer's
            library on its device. ``num_batches_tracked`` is a 0-d int64 array (of the
            layer's library too: a 0-d int64 tensor for a torch layer, as in torch's own
            state dicts).
        """
        out = {}
        for key, attr in self._state_attrs().items():
            value = getattr(self, attr)
            out[key] = self._count_array() if key == "num_batches_tracked" else self._copy(value)
        return out

    def _state_array(self, value: object, key: str) -> tuple[_Namespace, Array]:
        """(namespace, array) of a state-dict value: an array of the layer's library as it
        is, anything else (another library's array, a list) as a NumPy array."""
        xp = self.xp
        if xp is not np and arrays.is_array(xp, value):
            detach = getattr(value, "detach", None)   # a parameter of torch's keep_vars=True
            return xp, detach() if callable(detach) else value
        return np, _to_numpy(value, key)

    def _into_layer(self, xp: _Namespace, value: Array) -> Array:
        """A checked (C,) state value (of namespace xp) as the layer's dtype, library and
        device, ready to be written into its array."""
        if self._like is None:
            return halves.round_to(value, self.dtype) if value.dtype == np.float64 \
                else value.astype(self.dtype, copy=False)
        ours = self.xp
        if xp is np:
            if halves.is_half(self.dtype):   # NumPy may lack the dtype: widen, then round once
                wide = arrays.wide_dtype(ours, self.device)
                return halves.cast(ours, ours.asarray(value.astype(arrays.dtype_name(wide)),
                                                      device=self.device), self.dtype)
            host = value.astype(np.dtype(arrays.dtype_name(self.dtype)))
            return ours.asarray(host, device=self.device)
        value = halves.cast(ours, value, self.dtype) if halves.is_half(self.dtype) \
            else arrays.astype(ours, value, self.dtype)
        if arrays.device(value) != self.device:
            value = arrays.compat().to_device(value, self.device)
        return value

    def _convert_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        return dict(state)

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> LoadResult:
        """Load parameters and running statistics.

        Loads what ``state_dict`` or PyTorch's ``BatchNorm*d.state_dict()`` saved: values
        of any array library (tensors, NumPy arrays) or lists. They are all checked,
        then copied into the layer's arrays (an optimizer holding them keeps working),
        on its device, cast to its dtype.

        Parameters
        ----------
        state : Mapping
            Values by key, with the keys of ``state_dict``. A state without
            ``num_batches_tracked`` keeps the current count, as in PyTorch.
        strict : bool, default True
            Missing or unexpected keys are an error; else they are returned.

        Returns
        -------
        LoadResult
            The missing and unexpected keys (empty lists after a strict load).

        Raises
        ------
        TypeError
            If ``state`` is not a mapping, or a value does not hold real numbers.
        KeyError
            If ``strict`` and keys are missing or unexpected.
        ValueError
            If a value has the wrong shape, a running spread is negative (running_var)
            or not positive (running_std) or NaN, a value lies beyond the range of the
            layer's dtype, or num_batches_tracked is not a non-negative integer.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping of names to values (a state dict), "
                            f"got {type(state).__name__}")
        state = self._convert_state(state)
        attrs = self._state_attrs()
        # as PyTorch does, a state without num_batches_tracked keeps the current count
        missing = [k for k in attrs if k not in state and k != "num_batches_tracked"]
        unexpected = [k for k in state if k not in attrs]
        if strict and (missing or unexpected):
            raise KeyError(f"{self!r}: state dict does not match: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        loaded = {}
        for key, attr in attrs.items():
            if key not in state:
                continue
            check.supported(state[key], key)   # a tensor without plain values (meta, sparse)
            xp, value = self._state_array(state[key], key)
            if key == "num_batches_tracked":
                loaded[attr] = _count(xp, value)
                continue
            if tuple(value.shape) != (self.num_features,):
                raise ValueError(f"{key} must have shape ({self.num_features},), got {tuple(value.shape)}")
            value = _real(xp, key, value)
            finite = bool(xp.all(xp.isfinite(value))) if xp.isdtype(value.dtype, "real floating") \
                else True
            with np.errstate(over="ignore"):      # overflow is refused just below
                value = self._into_layer(xp, value)   # checked as the layer will hold it
            if finite and not bool(self.xp.all(self.xp.isfinite(value))):
                raise ValueError(f"{key} holds values beyond the range of the layer's dtype "
                                 f"{arrays.dtype_name(self.dtype)}")
            if key in _SPREAD_RULES:
                _check_spread(self.xp, key, value)
            loaded[attr] = value
        for attr, value in loaded.items():    # every value checked before any is written
            if attr == "num_batches_tracked":
                self.num_batches_tracked = value
            else:
                getattr(self, attr)[...] = value
        return LoadResult(missing, unexpected)

    def _describe(self) -> list[str]:
        parts = [str(self.num_features), f"eps={self.eps:g}", f"momentum={self.momentum}"]
        if self.gamma is None or self.beta is None:
            parts.append(f"scale={self.gamma is not None}, center={self.beta is not None}")
        if self.axis != 1:
            parts.append(f"axis={self.axis}")
        if arrays.dtype_name(self.dtype) != "float32":
            parts.append(f"dtype={arrays.dtype_name(self.dtype)}")
        if self._like is not None:
            parts.append(f"like={check.library(self.xp)}, device={self.device}")
        if self.comm is not None:
            parts.append(f"comm=<{self.comm.Get_size()} ranks>")
        if self.activation is not None:
            parts.append(f"activation={self.activation!r}")
        return parts

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self._describe())})"


def _spelled(dtype: np.dtype[Any]) -> str:
    """How a message spells a NumPy dtype in code."""
    return "ml_dtypes.bfloat16" if dtype.name == "bfloat16" else f"np.{dtype.name}"


def _conversion(x: object, dtype: np.dtype[Any]) -> str:
    """How a message spells the conversion of x, given to a NumPy layer, to ``dtype``: its
    astype method for an array, np.asarray for what is not one (a list, say)."""
    if isinstance(x, np.ndarray):
        return f"x.astype({_spelled(dtype)})"
    return f"np.asarray(x, dtype={_spelled(dtype)})"


def _mixed_hint(dtype: DTypeLike) -> str:
    """The mixed pairs a layer of ``dtype`` could offer instead."""
    return ("" if arrays.dtype_name(dtype) == "float32" else
            "; a float32 layer also takes float16 and bfloat16 x (master weights)")


def _count(xp: _Namespace, value: Array) -> int:
    """A loaded num_batches_tracked as an int: a 0-d non-negative integer."""
    if xp is np:
        ok = value.shape == () and np.issubdtype(value.dtype, np.integer) and value >= 0
    else:
        ok = tuple(value.shape) == () and xp.isdtype(value.dtype, "integral") and int(value) >= 0
    if not ok:
        raise ValueError(f"num_batches_tracked must be a non-negative integer, got {value!r}")
    return int(value)


class BatchNorm(_Norm):
    """Batch normalization layer.

    It holds gamma, beta and the running statistics, runs :func:`batch_norm` forward
    and :func:`batch_norm_backward` backward, and keeps the gradients for an optimizer.

    Parameters
    ----------
    num_features : int
        The number of channels C, >= 1.
    eps : float, default 1e-5
        Added to the variance before its square root, > 0 and finite.
    momentum : float or None, default 0.1
        The weight of each batch in the running statistics, in [0, 1] (PyTorch's;
        Keras's ``momentum`` and TF's ``decay`` are 1 minus it), or None for a
        cumulative average: running_mean becomes the mean of the batch means and
        running_var the mean of the batch variances (unbiased or biased, as
        ``convention`` says).
    affine : bool, default True
        False (PyTorch) drops gamma and beta.
    center : bool, default True
        False (TensorFlow) drops beta.
    scale : bool, default True
        False (TensorFlow) drops gamma.
    track_running_stats : bool, default True
        False: no running statistics, batch statistics in eval mode too.
    axis : int, default 1
        The channel axis of x.
    dtype : dtype or str, default np.float32
        The dtype of the parameters and running statistics, and of the gradients
        ``grads()`` holds: float32, float64, float16 or bfloat16, as a NumPy dtype or
        its name ("float32", "bfloat16"; ml_dtypes.bfloat16), which maps to the
        library's own dtype (torch.float32), or as the library's own dtype object
        (torch.bfloat16). x must have it, except that a float32 layer also takes
        float16 and bfloat16 x (PyTorch's mixed precision: float32 master weights).
    convention : {"pytorch", "keras"}, default "pytorch"
        The variance kept in running_var: unbiased ("pytorch") or biased ("keras").
    backend : str, optional
        The name of the backend the ops run on; default: the one selected for x's
        library.
    like : Array, optional
        An array of the library to hold the parameters and running statistics in
        (``torch.empty(0)``, ``cupy.empty(0)``, an array-API library's array; its
        values, shape and dtype do not matter). Default: NumPy. Libraries with
        immutable arrays (JAX) are refused: a layer updates in place.
    device : str or device object, optional
        The device of the parameters, as the library names it ("cuda:0",
        torch.device("cuda", 0), ...). Default: like's device; a NumPy layer's is
        "cpu".
    comm : mpi4py.MPI.Comm, optional
        An mpi4py intracommunicator: the layer is synchronized (data parallel), see
        Notes.
    activation : {None, "relu"}, optional
        "relu" makes the layer the fused tail of a residual block:
        ``forward(x, residual=z)`` returns y = relu(BN(x) + z), z optional.

    Attributes
    ----------
    gamma, beta : Array or None
        The parameters, shape (C,) (None when dropped).
    running_mean, running_var : Array or None
        The running statistics, shape (C,) (None without ``track_running_stats``).
    num_batches_tracked : int or None
        The number of training forwards that updated the running statistics (None
        without ``track_running_stats``).
    training : bool
        Whether the layer is in training mode (see ``train``).
    device : str or device object
        The device of the layer's arrays, as its library spells it.
    dtype : dtype
        The dtype of the layer's arrays, as its library spells it.

    Raises
    ------
    TypeError
        If an argument has the wrong type: num_features or axis not an int, a flag not
        a bool, a dtype the layer does not take, ``like`` not an array of a known
        library (or of one with immutable arrays), ``comm`` not an mpi4py
        intracommunicator.
    ValueError
        If a value is out of range: num_features < 1, ``eps`` or ``momentum`` out of
        range, an unknown ``convention`` or ``activation``, a ``device`` the library
        cannot make arrays on (or other than "cpu" for a NumPy layer), a null ``comm``.

    Notes
    -----
    ``forward(x)`` and ``backward(dy)`` take arrays of the layer's library on its
    device (NumPy layers also take what ``np.asarray`` converts, such as lists) and
    refuse any other with a TypeError (another library) or ValueError (another device)
    that names the layer's library and device, rather than converting: convert the
    array, or create the layer with ``like=x``. Outputs, dx, ``params()``, ``grads()``
    and the running statistics are arrays of the layer's library on its device; y and
    dx have x's dtype.

    With ``activation="relu"``, ``backward(dy)`` returns dx, or ``(dx, dz)`` after a
    forward with a residual; the layer keeps y for the backward's mask (see
    :func:`batch_norm_backward`) until the next forward.

    With ``comm``, forward and backward run the ops with ``comm``, so that training
    normalizes with the statistics of every rank's batch, dgamma and dbeta are sums
    over every rank's batch, and a fault on any rank (the layer's own checks included)
    raises on every rank. ``recompute_population_stats`` pools over the layers'
    communicator.

    ``state_dict()`` has the keys of PyTorch's ``BatchNorm*d``; ``load_state_dict``
    takes values of any library.
    """

    _spread = "running_var"
    running_var: Array | None   # None without track_running_stats
    convention: Literal["pytorch", "keras"]

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, center: bool = True, scale: bool = True,
                 track_running_stats: bool = True, axis: int = 1,
                 dtype: DTypeLike = np.float32,
                 convention: Literal["pytorch", "keras"] = "pytorch",
                 backend: str | None = None, like: Array | None = None,
                 device: _Device = None, comm: Comm | None = None,
                 activation: Literal["relu"] | None = None) -> None:
        self.convention = check.convention(convention)
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, center=center,
                         scale=scale, track_running_stats=track_running_stats, axis=axis,
                         dtype=dtype, backend=backend, like=like, device=device, comm=comm,
                         activation=activation)

    def _op_forward(self, x: Array, *, training: bool, momentum: float,
                    running: tuple[Array | None, Array | None] | None,
                    **fused: Any) -> tuple[Array, BatchNormSaved]:
        running = running or (None, None)   # None: collecting population statistics
        return batch_norm(x, self.gamma, self.beta, *running, training=training, momentum=momentum,
                          eps=self.eps, axis=self.axis, convention=self.convention,
                          comm=self._synced(), backend=self.backend, **fused)

    def _op_backward(self, dy: ArrayLike, x: Array, saved: BatchNormSaved,
                     y: Array | None = None) -> tuple[Array, ...]:
        return batch_norm_backward(dy, x, saved, self.gamma, y=y, backend=self.backend)

    def _eval_invstd(self, xp: _Namespace, wide: DTypeLike) -> Array:
        return 1.0 / xp.sqrt(arrays.astype(xp, self.running_var, wide) + self.eps)

    def _set_population(self, count: int, mean: Array, m2: Array) -> None:
        self._write(self.running_mean, mean)
        self._write(self.running_var, m2 / (count - 1 if self.convention == "pytorch" else count))

    def _describe(self) -> list[str]:
        parts = super()._describe()
        if not self.track_running_stats:
            parts.append("track_running_stats=False")
        if self.convention != "pytorch":
            parts.append(f"convention={self.convention!r}")
        return parts


def _scheduled(value: _Clip, name: str, low: float) -> _Clip:
    if callable(value):
        return value
    number: float = check.number(value, name, low=low)
    return number


class BatchRenorm(_Norm):
    """Batch renormalization layer (Ioffe, 2017).

    It tracks the running mean and the running standard deviation sigma (initially 0
    and 1), runs :func:`batch_renorm` forward and :func:`batch_renorm_backward`
    backward, and keeps the gradients for an optimizer.

    Parameters
    ----------
    num_features : int
        The number of channels C, >= 1.
    rmax : float or callable, default 3.0
        The clip of r, >= 1: a number, or a schedule ``step -> value`` evaluated at the
        number of training forwards done so far, ``num_batches_tracked`` (with
        microbatches, several per optimizer step: scale the schedule by them);
        ``normops.schedules.renorm_paper()`` is the paper's warm-up.
    dmax : float or callable, default 5.0
        The clip of d, >= 0: a number or a schedule, as ``rmax``.
    momentum : float or None, default 0.01
        The weight of each batch in the running statistics, in [0, 1], or None for
        cumulative averages of the batch means and of the batch sigmas
        sqrt(var_B + eps).
    eps : float, default 1e-5
        Added to the batch variance before its square root, > 0 and finite.
    affine, center, scale : bool, default True
        As for BatchNorm: False drops gamma and beta, beta, gamma.
    axis : int, default 1
        The channel axis of x.
    dtype : dtype or str, default np.float32
        As for BatchNorm.
    backend : str, optional
        As for BatchNorm.
    like : Array, optional
        As for BatchNorm.
    device : str or device object, optional
        As for BatchNorm.
    comm : mpi4py.MPI.Comm, optional
        As for BatchNorm.
    activation : {None, "relu"}, optional
        As for BatchNorm.

    Attributes
    ----------
    gamma, beta : Array or None
        The parameters, shape (C,) (None when dropped).
    running_mean, running_std : Array
        The running mean mu and standard deviation sigma, shape (C,).
    num_batches_tracked : int
        The number of training forwards so far.
    rmax, dmax : float or callable
        The clips, numbers or schedules (see ``clips``).
    training : bool
        Whether the layer is in training mode (see ``train``).

    Raises
    ------
    TypeError
        As for BatchNorm, or if ``rmax`` or ``dmax`` is neither a real number nor
        callable.
    ValueError
        As for BatchNorm, or if ``rmax < 1`` or ``dmax < 0``.

    Notes
    -----
    ``state_dict`` has ``running_std`` where BatchNorm has ``running_var``;
    ``load_state_dict`` also takes a BatchNorm's state (its ``running_var`` loads as
    sigma = sqrt(running_var + eps)), and ``batch_norm_state_dict`` exports the
    eval-equivalent BN state. Library, device, dtype, the fused activation and ``comm``
    work as for BatchNorm.
    """

    _spread = "running_std"
    # always tracked
    running_mean: Array
    running_std: Array
    num_batches_tracked: int
    rmax: _Clip
    dmax: _Clip

    def __init__(self, num_features: int, *, rmax: _Clip = 3.0, dmax: _Clip = 5.0,
                 momentum: float | None = 0.01, eps: float = 1e-5, affine: bool = True,
                 center: bool = True, scale: bool = True, axis: int = 1,
                 dtype: DTypeLike = np.float32, backend: str | None = None,
                 like: Array | None = None, device: _Device = None, comm: Comm | None = None,
                 activation: Literal["relu"] | None = None) -> None:
        self.rmax = _scheduled(rmax, "rmax", 1.0)
        self.dmax = _scheduled(dmax, "dmax", 0.0)
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, center=center,
                         scale=scale, track_running_stats=True, axis=axis, dtype=dtype,
                         backend=backend, like=like, device=device, comm=comm,
                         activation=activation)

    def clips(self, step: int | None = None) -> tuple[float, float]:
        """The clips rmax and dmax at a training step.

        Parameters
        ----------
        step : int, optional
            The step: the number of training forwards before it. Default: the next
            training step, ``num_batches_tracked``.

        Returns
        -------
        rmax, dmax : float
            The clips: the numbers, or the schedules' values at ``step``.
        """
        step = self.num_batches_tracked if step is None else step
        rmax, dmax = self.rmax, self.dmax
        return (rmax(step) if callable(rmax) else rmax, dmax(step) if callable(dmax) else dmax)

    def _op_forward(self, x: Array, *, training: bool, momentum: float,
                    running: tuple[Array | None, Array | None] | None,
                    **fused: Any) -> tuple[Array, BatchRenormSaved]:
        if running is None:
            # collecting population statistics: normalize with the batch's own statistics
            # (rmax = 1, dmax = 0 is BN) and leave the running statistics alone
            running, (rmax, dmax) = tuple(self._copy(a) for a in self._running()), (1.0, 0.0)
        elif training:
            rmax, dmax = self.clips()
        else:
            rmax, dmax = 1.0, 0.0   # unused in eval mode
        return batch_renorm(x, self.gamma, self.beta, *running, training=training, rmax=rmax,
                            dmax=dmax, momentum=momentum, eps=self.eps, axis=self.axis,
                            comm=self._synced(), backend=self.backend, **fused)

    def _op_backward(self, dy: ArrayLike, x: Array, saved: BatchRenormSaved,
                     y: Array | None = None) -> tuple[Array, ...]:
        return batch_renorm_backward(dy, x, saved, self.gamma, y=y, backend=self.backend)

    def _eval_invstd(self, xp: _Namespace, wide: DTypeLike) -> Array:
        return 1.0 / arrays.astype(xp, self.running_std, wide)

    def _set_population(self, count: int, mean: Array, m2: Array) -> None:
        self._write(self.running_mean, mean)
        self._write(self.running_std, self.xp.sqrt(m2 / count + self.eps))

    def _convert_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """A BN state (``running_var``) loads as sigma = sqrt(running_var + eps)."""
        state = dict(state)
        if "running_std" not in state and "running_var" in state:
            xp, var = self._state_array(state.pop("running_var"), "running_var")
            var = _real(xp, "running_var", var)
            wide = np.float64 if xp is np else arrays.wide_dtype(xp, arrays.device(var))
            var = arrays.astype(xp, var, wide)
            _check_spread(xp, "running_var", var)
            state["running_std"] = xp.sqrt(var + self.eps)
        return state

    def batch_norm_state_dict(self) -> dict[str, Array]:
        """The state of a BatchNorm whose eval mode matches this layer's.

        A BatchNorm (or PyTorch BatchNorm*d) with this layer's eps that loads it
        normalizes in eval mode as this layer does: running_var = sigma^2 - eps (never
        below 0).

        Returns
        -------
        dict of str to Array
            The state, with the keys of ``BatchNorm.state_dict()``, in this layer's
            library, device and dtype. Without gamma or beta (scale=False /
            center=False) it lacks weight or bias, which PyTorch's affine layers
            require.
        """
        state = self.state_dict()
        xp = self.xp
        sigma = arrays.astype(xp, state.pop("running_std"), self._wide())
        var = sigma * sigma - self.eps
        var = np.maximum(var, 0.0) if xp is np else xp.where(var < 0, xp.zeros_like(var), var)
        state["running_var"] = halves.cast(xp, var, self.dtype)
        state["num_batches_tracked"] = state.pop("num_batches_tracked")   # PyTorch's key order
        return state

    def _describe(self) -> list[str]:
        parts = super()._describe()
        parts.insert(1, f"rmax={self.rmax!r}, dmax={self.dmax!r}")
        return parts


def is_layer(obj: object) -> bool:
    """Whether ``obj`` is a BatchNorm or BatchRenorm layer.

    Parameters
    ----------
    obj : object
        Anything.

    Returns
    -------
    bool
        True for a BatchNorm or BatchRenorm (or an instance of a subclass).
    """
    return isinstance(obj, _Norm)

