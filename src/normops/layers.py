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
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from . import _arrays as arrays
from . import _distributed as distributed
from . import _halves as halves
from . import _validation as check
from .ops import batch_norm, batch_norm_backward, batch_renorm, batch_renorm_backward

# state-dict key -> attribute; PyTorch names gamma "weight" and beta "bias"
_PARAM_KEYS = {"weight": "gamma", "bias": "beta"}
# what a loaded spread must be: a running_var may be 0 (a constant channel), a running_std
# divides; NaN fails both
_SPREAD_RULES = {"running_var": ("non-negative", np.greater_equal),
                 "running_std": ("positive", np.greater)}


class LoadResult(NamedTuple):
    """What ``load_state_dict(..., strict=False)`` left out."""

    missing_keys: list
    unexpected_keys: list


def _type_name(value):
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _other_library_array(value):
    """Whether ``value`` is an array of a library other than NumPy (a tensor, say)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return False
    return (hasattr(value, "__array_namespace__") or hasattr(value, "__dlpack__")
            or arrays.namespace_or_none(value) is not None)


def _to_numpy(value, key):
    """A NumPy array from an array of any library (copied to the host) or a list; a
    bfloat16 one widened to float64 (exactly), which NumPy's dtype tests understand."""
    arr = check.as_array(np, arrays.to_host(value), key)
    return arr.astype(np.float64) if arr.dtype.name == "bfloat16" else arr


def _real(xp, key, value):
    """value, which a state dict holds under key, if it holds real numbers."""
    if xp is np:
        if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
            raise TypeError(f"{key} must hold real numbers, got dtype {value.dtype}")
    elif not xp.isdtype(value.dtype, ("real floating", "integral")):
        raise TypeError(f"{key} must hold real numbers, got dtype {arrays.dtype_name(value.dtype)}")
    return value


def _check_spread(xp, key, value):
    bound, holds = _SPREAD_RULES[key]
    if xp is np:
        ok = np.all(holds(value, 0))
    else:
        ok = bool(xp.all(value >= 0 if key == "running_var" else value > 0))
    if not ok:
        raise ValueError(f"{key} must be {bound} (and not NaN), got {value}")


def _library(like, device):
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


def _numpy_dtype(dtype):
    """np.dtype(dtype), with "bfloat16" found through ml_dtypes (NumPy knows the name
    only once ml_dtypes is imported); None for what names no dtype."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        return halves.bfloat16()
    try:
        return np.dtype(dtype)
    except TypeError:
        return None


def _library_dtype(xp, dtype):
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


def _dtype_object(dtype):
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

    _spread = None
    _spread_init = 1.0

    def __init__(self, num_features, *, eps, momentum, affine, center, scale,
                 track_running_stats, axis, dtype, backend, like, device, comm, activation):
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

    def _empty_array(self, xp, device):
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
    def xp(self):
        """The array namespace of the layer's library: numpy for a NumPy layer, else the
        library's array-API namespace (array-api-compat's for torch and cupy)."""
        return np if self._like is None else arrays.namespace_or_none(self._like)

    def _full(self, value):
        """A new (C,) array of ``value`` in the layer's library, dtype and device."""
        if self._like is None:
            return np.full(self.num_features, value, self.dtype)
        return self.xp.full((self.num_features,), value, dtype=self.dtype, device=self.device)

    def _wide(self):
        """The dtype eval_affine and the population statistics are computed in."""
        return np.float64 if self._like is None else arrays.wide_dtype(self.xp, self.device)

    def _copy(self, arr):
        return arr.copy() if self._like is None else self.xp.asarray(arr, copy=True)

    def _write(self, target, value):
        """value (of the layer's library, any float dtype) into the layer's array target,
        rounded once to its dtype."""
        target[...] = halves.cast(self.xp, value, target.dtype)

    # -- modes and state ------------------------------------------------------------
    def train(self, mode=True):
        self.training = check.flag(mode, "mode")
        return self

    def eval(self):
        return self.train(False)

    def reset_running_stats(self):
        """Running mean 0, running spread 1, no batches tracked (None when not tracking).
        Existing arrays are reset in place, so references to them stay valid."""
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

    def _running(self):
        return (self.running_mean, getattr(self, self._spread)) if self.track_running_stats else (None, None)

    def _step_momentum(self):
        """The weight of this step's batch: ``momentum``, or 1/k at the k-th tracked batch
        (a cumulative average of the batch statistics) when momentum is None."""
        return 1.0 / (self.num_batches_tracked + 1) if self.momentum is None else self.momentum

    # -- forward and backward ---------------------------------------------------------
    def _refuse_other_library(self, value, name):
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

    def _check_input(self, x):
        """x (an array of this layer's dtype, or a half dtype for a float32 layer, and of
        its channels) and its channel axis (>= 0)."""
        if self._like is None:
            if type(x) is not np.ndarray:
                self._refuse_other_library(x, "x")
            x = check.as_input(np, x, shared_batch=self._synced() is not None)
            if x.dtype != self.dtype and not self._master_weights(x):
                raise TypeError(f"{self!r} holds {self.dtype} parameters but x has dtype {x.dtype}: "
                                f"convert x (x.astype({_spelled(self.dtype)})) or create the layer "
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

    def _master_weights(self, x):
        """Whether x is float16/bfloat16 and the layer float32 (PyTorch's mixed precision)."""
        return arrays.dtype_name(self.dtype) == "float32" and halves.is_half(x.dtype)

    def forward(self, x, residual=None):
        """y for a batch x, an array of the layer's library on its device. Training:
        normalize with the batch statistics and update the running statistics (when
        tracked); eval: normalize with the running statistics (with the batch statistics
        when they are not tracked). ``residual`` z (x's shape, dtype and library) is added
        before the layer's activation: y = act(BN(x) + z). The layer keeps a reference to
        x (and, with an activation, to y) for backward: do not modify them in place
        before calling it."""
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
                self.num_batches_tracked += 1
            else:
                batch_stats = self.training or not self.track_running_stats
                y, saved = self._op_forward(x, training=batch_stats, momentum=0.0,
                                            running=self._running(), **fused)
        self._x, self._saved = x, saved
        self._y = None if self.activation is None else y
        return y

    __call__ = forward

    def backward(self, dy):
        """dx for the upstream gradient dy of the last forward (an array of the layer's
        library on its device), or ``(dx, dz)`` when that forward had a residual z;
        keeps the gradients of gamma and beta for ``grads()``."""
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

    def _synced(self):
        """The communicator the ops run with: the layer's, except while collecting
        population statistics (each batch is then normalized locally; the pooled
        statistics meet the other ranks' once, at the end)."""
        return self.comm if self._collector is None else None

    def params(self):
        """The trainable parameters by name ("gamma", "beta"; absent ones left out). An
        optimizer updates them in place: ``p -= lr * grads()[name]``."""
        return {name: getattr(self, name) for name in ("gamma", "beta") if getattr(self, name) is not None}

    def grads(self):
        """The gradients of the last backward, with the keys of ``params()``."""
        if self._grads is None:
            raise RuntimeError(f"{self!r}: no gradients yet; call backward(dy) after forward(x)")
        return dict(self._grads)

    def eval_affine(self):
        """``(scale, shift)`` per channel with eval-mode y = scale * x + shift (what folding
        into a preceding layer uses): float64 arrays of the layer's library on its device
        (float32 on a device without float64)."""
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
    def _state_attrs(self):
        """state-dict key -> attribute name, in PyTorch's order."""
        keys = {k: a for k, a in _PARAM_KEYS.items() if getattr(self, a) is not None}
        if self.track_running_stats:
            keys.update(running_mean="running_mean", **{self._spread: self._spread},
                        num_batches_tracked="num_batches_tracked")
        return keys

    def _count_array(self):
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

    def state_dict(self):
        """Copies of the parameters and running statistics under PyTorch's keys
        (``weight``, ``bias``, ``running_mean``, ``running_var`` or ``running_std``,
        ``num_batches_tracked``), arrays of the layer's library on its device;
        ``num_batches_tracked`` is a 0-d int64 array (of the layer's library too: a
        0-d int64 tensor for a torch layer, as in torch's own state dicts)."""
        out = {}
        for key, attr in self._state_attrs().items():
            value = getattr(self, attr)
            out[key] = self._count_array() if key == "num_batches_tracked" else self._copy(value)
        return out

    def _state_array(self, value, key):
        """(namespace, array) of a state-dict value: an array of the layer's library as it
        is, anything else (another library's array, a list) as a NumPy array."""
        xp = self.xp
        if xp is not np and arrays.is_array(xp, value):
            detach = getattr(value, "detach", None)   # a parameter of torch's keep_vars=True
            return xp, detach() if callable(detach) else value
        return np, _to_numpy(value, key)

    def _into_layer(self, xp, value):
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

    def _convert_state(self, state):
        return dict(state)

    def load_state_dict(self, state, strict=True):
        """Load parameters and running statistics saved by ``state_dict`` or by PyTorch's
        ``BatchNorm*d.state_dict()``: values of any array library (tensors, NumPy arrays)
        or lists. They are copied into the layer's arrays (an optimizer holding them keeps
        working), on its device, cast to its dtype.
        ``strict``: missing or unexpected keys are an error; else they are returned."""
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

    def _describe(self):
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

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(self._describe())})"


def _spelled(dtype):
    """How a message spells a NumPy dtype in code."""
    return "ml_dtypes.bfloat16" if dtype.name == "bfloat16" else f"np.{dtype.name}"


def _mixed_hint(dtype):
    """The mixed pairs a layer of ``dtype`` could offer instead."""
    return ("" if arrays.dtype_name(dtype) == "float32" else
            "; a float32 layer also takes float16 and bfloat16 x (master weights)")


def _count(xp, value):
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

    ``momentum``: the weight of each batch in the running statistics (PyTorch's; Keras's
    ``momentum`` and TF's ``decay`` are 1 minus it), or None for a cumulative average:
    running_mean becomes the mean of the batch means and running_var the mean of the
    batch variances, unbiased (convention="pytorch") or biased ("keras").
    ``affine=False`` (PyTorch) drops gamma and beta; ``scale=False`` / ``center=False``
    (TensorFlow) drop one of them. ``track_running_stats=False``: no running statistics,
    batch statistics in eval mode too. ``convention``: the variance kept in running_var,
    "pytorch" (unbiased) or "keras" (biased).

    ``like`` / ``device`` / ``dtype``: the array library, device and dtype of the
    parameters and running statistics, which forward(x) and backward(dy) must share:
    NumPy by default; ``like=torch.empty(0)`` for tensors (on like's device, or
    ``device=``), and likewise any array-API library's array. See the module docstring.
    ``activation="relu"``: y = relu(BN(x) + z) with ``forward(x, residual=z)`` (z
    optional); see the module docstring.
    """

    _spread = "running_var"

    def __init__(self, num_features, *, eps=1e-5, momentum=0.1, affine=True, center=True,
                 scale=True, track_running_stats=True, axis=1, dtype=np.float32,
                 convention="pytorch", backend=None, like=None, device=None, comm=None,
                 activation=None):
        self.convention = check.convention(convention)
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, center=center,
                         scale=scale, track_running_stats=track_running_stats, axis=axis,
                         dtype=dtype, backend=backend, like=like, device=device, comm=comm,
                         activation=activation)

    def _op_forward(self, x, *, training, momentum, running, **fused):
        running = running or (None, None)   # None: collecting population statistics
        return batch_norm(x, self.gamma, self.beta, *running, training=training, momentum=momentum,
                          eps=self.eps, axis=self.axis, convention=self.convention,
                          comm=self._synced(), backend=self.backend, **fused)

    def _op_backward(self, dy, x, saved, y=None):
        return batch_norm_backward(dy, x, saved, self.gamma, y=y, backend=self.backend)

    def _eval_invstd(self, xp, wide):
        return 1.0 / xp.sqrt(arrays.astype(xp, self.running_var, wide) + self.eps)

    def _set_population(self, count, mean, m2):
        self._write(self.running_mean, mean)
        self._write(self.running_var, m2 / (count - 1 if self.convention == "pytorch" else count))

    def _describe(self):
        parts = super()._describe()
        if not self.track_running_stats:
            parts.append("track_running_stats=False")
        if self.convention != "pytorch":
            parts.append(f"convention={self.convention!r}")
        return parts


def _scheduled(value, name, low):
    if callable(value):
        return value
    return check.number(value, name, low=low)


class BatchRenorm(_Norm):
    """Batch renormalization layer (Ioffe, 2017), tracking the running mean and the
    running standard deviation sigma (initially 0 and 1).

    ``rmax`` / ``dmax``: numbers, or schedules ``step -> value`` evaluated at the number
    of training forwards done so far, ``num_batches_tracked`` (with microbatches, several
    per optimizer step: scale the schedule by them); ``normops.schedules.renorm_paper()``
    is the paper's warm-up. ``momentum=None``: cumulative averages of the batch means and of the batch
    sigmas sqrt(var_B + eps). ``state_dict`` has ``running_std`` where BatchNorm has
    ``running_var``; ``batch_norm_state_dict`` exports the eval-equivalent BN state.
    ``like`` / ``device`` / ``dtype`` / ``activation``: as for BatchNorm.
    """

    _spread = "running_std"

    def __init__(self, num_features, *, rmax=3.0, dmax=5.0, momentum=0.01, eps=1e-5, affine=True,
                 center=True, scale=True, axis=1, dtype=np.float32, backend=None, like=None,
                 device=None, comm=None, activation=None):
        self.rmax = _scheduled(rmax, "rmax", 1.0)
        self.dmax = _scheduled(dmax, "dmax", 0.0)
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, center=center,
                         scale=scale, track_running_stats=True, axis=axis, dtype=dtype,
                         backend=backend, like=like, device=device, comm=comm,
                         activation=activation)

    def clips(self, step=None):
        """``(rmax, dmax)`` at ``step`` (default: the next training step)."""
        step = self.num_batches_tracked if step is None else step
        return tuple(v(step) if callable(v) else v for v in (self.rmax, self.dmax))

    def _op_forward(self, x, *, training, momentum, running, **fused):
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

    def _op_backward(self, dy, x, saved, y=None):
        return batch_renorm_backward(dy, x, saved, self.gamma, y=y, backend=self.backend)

    def _eval_invstd(self, xp, wide):
        return 1.0 / arrays.astype(xp, self.running_std, wide)

    def _set_population(self, count, mean, m2):
        self._write(self.running_mean, mean)
        self._write(self.running_std, self.xp.sqrt(m2 / count + self.eps))

    def _convert_state(self, state):
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

    def batch_norm_state_dict(self):
        """The state of a BatchNorm (or PyTorch BatchNorm*d) with this layer's eps whose
        eval mode matches this layer's: running_var = sigma^2 - eps (never below 0).
        Without gamma or beta (scale=False / center=False) it lacks weight or bias, which
        PyTorch's affine layers require."""
        state = self.state_dict()
        xp = self.xp
        sigma = arrays.astype(xp, state.pop("running_std"), self._wide())
        var = sigma * sigma - self.eps
        var = np.maximum(var, 0.0) if xp is np else xp.where(var < 0, xp.zeros_like(var), var)
        state["running_var"] = halves.cast(xp, var, self.dtype)
        state["num_batches_tracked"] = state.pop("num_batches_tracked")   # PyTorch's key order
        return state

    def _describe(self):
        parts = super()._describe()
        parts.insert(1, f"rmax={self.rmax!r}, dmax={self.dmax!r}")
        return parts


def is_layer(obj):
    return isinstance(obj, _Norm)

