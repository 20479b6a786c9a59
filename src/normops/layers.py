"""Stateful BatchNorm and BatchRenorm layers for NumPy networks: parameters, running
statistics, train/eval mode, forward/backward with gradients kept for an optimizer, and
state dicts with the keys of PyTorch's ``BatchNorm*d``.

The layers hold NumPy arrays and call the public ops, so every check of the ops applies
and any backend for NumPy arrays may run them (``backend=``).
"""
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

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


def _to_numpy(value, key):
    """A NumPy array from an array, list or PyTorch tensor (without importing torch)."""
    detach = getattr(value, "detach", None)
    if callable(detach):
        tensor = detach().cpu()
        try:
            value = tensor.numpy()
        except TypeError:            # a dtype NumPy lacks (bfloat16): widen it first
            value = tensor.double().numpy()
    return check.as_array(np, value, key)


def _real(key, value):
    """value, which a state dict holds under key, if it holds real numbers."""
    if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
        raise TypeError(f"{key} must hold real numbers, got dtype {value.dtype}")
    return value


def _check_spread(key, value):
    bound, holds = _SPREAD_RULES[key]
    if not np.all(holds(value, 0)):
        raise ValueError(f"{key} must be {bound} (and not NaN), got {value}")


class _Norm:
    """What BatchNorm and BatchRenorm share; subclasses name their spread statistic
    (``_spread``) and run their op (``_op_forward`` / ``_op_backward``)."""

    _spread = None
    _spread_init = 1.0

    def __init__(self, num_features, *, eps, momentum, affine, center, scale,
                 track_running_stats, axis, dtype, backend):
        self.num_features = check.integer(num_features, "num_features")
        if self.num_features < 1:
            raise ValueError(f"num_features must be at least 1, got {self.num_features}")
        self.eps = check.number(eps, "eps", low=0.0, low_open=True, finite=True)
        self.momentum = None if momentum is None else check.number(momentum, "momentum", low=0.0, high=1.0)
        self.dtype = np.dtype(dtype)
        if self.dtype not in check.FLOATS:
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.axis = check.integer(axis, "axis")
        affine = check.flag(affine, "affine")
        self.track_running_stats = check.flag(track_running_stats, "track_running_stats")
        self.backend = backend
        c = self.num_features
        scale, center = check.flag(scale, "scale"), check.flag(center, "center")
        self.gamma = np.ones(c, self.dtype) if affine and scale else None
        self.beta = np.zeros(c, self.dtype) if affine and center else None
        self.reset_running_stats()
        self.training = True
        self._x = self._saved = None
        self._grads = None
        self._collector = None   # set by recompute_population_stats

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
            c = self.num_features
            for name, value in (("running_mean", 0.0), (self._spread, self._spread_init)):
                if isinstance(getattr(self, name, None), np.ndarray):
                    getattr(self, name)[...] = value
                else:
                    setattr(self, name, np.full(c, value, self.dtype))
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
    def _check_input(self, x):
        """x (an array of this layer's dtype and channels) and its channel axis (>= 0)."""
        x = check.as_input(np, x)
        if x.dtype != self.dtype:
            raise TypeError(f"{self!r} holds {self.dtype} parameters but x has dtype {x.dtype}: "
                            f"convert x (x.astype(np.{self.dtype})) or create the layer with "
                            f"dtype=np.{x.dtype}")
        axis = check.channel_axis(self.axis, x.ndim)
        if x.shape[axis] != self.num_features:
            raise ValueError(f"{self!r} expects {self.num_features} channels on axis {self.axis}, "
                             f"got x of shape {x.shape}")
        return x, axis

    def forward(self, x):
        """y for a batch x. Training: normalize with the batch statistics and update the
        running statistics (when tracked); eval: normalize with the running statistics
        (with the batch statistics when they are not tracked). The layer keeps a
        reference to x for backward: do not modify x in place before calling it."""
        self._x = self._saved = self._grads = None   # a failed forward leaves nothing to differentiate
        x, axis = self._check_input(x)
        if self._collector is not None:
            self._collector.add(x, axis)
            y, saved = self._op_forward(x, training=True, momentum=0.0, running=None)
        elif self.training and self.track_running_stats:
            y, saved = self._op_forward(x, training=True, momentum=self._step_momentum(),
                                        running=self._running())
            self.num_batches_tracked += 1
        else:
            batch_stats = self.training or not self.track_running_stats
            y, saved = self._op_forward(x, training=batch_stats, momentum=0.0,
                                        running=self._running())
        self._x, self._saved = x, saved
        return y

    __call__ = forward

    def backward(self, dy):
        """dx for the upstream gradient dy of the last forward; keeps the gradients of
        gamma and beta for ``grads()``."""
        if self._saved is None:
            raise RuntimeError(f"{self!r}: backward(dy) needs a forward(x) first")
        dx, dgamma, dbeta = self._op_backward(dy, self._x, self._saved)
        self._grads = {name: g for name, g in (("gamma", dgamma), ("beta", dbeta))
                       if getattr(self, name) is not None}
        return dx

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
        """``(scale, shift)``, float64 per channel, with eval-mode y = scale * x + shift
        (what folding into a preceding layer uses)."""
        if not self.track_running_stats:
            raise ValueError(f"{self!r} tracks no running statistics: in eval mode it "
                             f"normalizes with each batch's, which no fixed affine map matches")
        invstd = self._eval_invstd()
        scale = invstd if self.gamma is None else self.gamma.astype(np.float64) * invstd
        shift = -scale * self.running_mean.astype(np.float64)
        if self.beta is not None:
            shift = shift + self.beta
        return scale, shift

    # -- state dicts ------------------------------------------------------------------
    def _state_attrs(self):
        """state-dict key -> attribute name, in PyTorch's order."""
        keys = {k: a for k, a in _PARAM_KEYS.items() if getattr(self, a) is not None}
        if self.track_running_stats:
            keys.update(running_mean="running_mean", **{self._spread: self._spread},
                        num_batches_tracked="num_batches_tracked")
        return keys

    def state_dict(self):
        """Copies of the parameters and running statistics under PyTorch's keys
        (``weight``, ``bias``, ``running_mean``, ``running_var`` or ``running_std``,
        ``num_batches_tracked`` as a 0-d int64 array)."""
        out = {}
        for key, attr in self._state_attrs().items():
            value = getattr(self, attr)
            out[key] = np.array(value, np.int64) if key == "num_batches_tracked" else value.copy()
        return out

    def _convert_state(self, state):
        return dict(state)

    def load_state_dict(self, state, strict=True):
        """Load parameters and running statistics saved by ``state_dict`` or by PyTorch's
        ``BatchNorm*d.state_dict()`` (tensors are accepted). Values are copied into the
        layer's arrays (an optimizer holding them keeps working) and cast to its dtype.
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
            value = _to_numpy(state[key], key)
            if key == "num_batches_tracked":
                if value.shape != () or not np.issubdtype(value.dtype, np.integer) or value < 0:
                    raise ValueError(f"num_batches_tracked must be a non-negative integer, got {value!r}")
                loaded[attr] = int(value)
                continue
            if value.shape != (self.num_features,):
                raise ValueError(f"{key} must have shape ({self.num_features},), got {value.shape}")
            value = _real(key, value)
            if key in _SPREAD_RULES:
                _check_spread(key, value)
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
        if self.dtype != np.float32:
            parts.append(f"dtype={self.dtype}")
        return parts

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(self._describe())})"


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
    """

    _spread = "running_var"

    def __init__(self, num_features, *, eps=1e-5, momentum=0.1, affine=True, center=True,
                 scale=True, track_running_stats=True, axis=1, dtype=np.float32,
                 convention="pytorch", backend=None):
        self.convention = check.convention(convention)
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, center=center,
                         scale=scale, track_running_stats=track_running_stats, axis=axis,
                         dtype=dtype, backend=backend)

    def _op_forward(self, x, *, training, momentum, running):
        running = running or (None, None)   # None: collecting population statistics
        return batch_norm(x, self.gamma, self.beta, *running, training=training, momentum=momentum,
                          eps=self.eps, axis=self.axis, convention=self.convention, backend=self.backend)

    def _op_backward(self, dy, x, saved):
        return batch_norm_backward(dy, x, saved, self.gamma, backend=self.backend)

    def _eval_invstd(self):
        return 1.0 / np.sqrt(self.running_var.astype(np.float64) + self.eps)

    def _set_population(self, count, mean, m2):
        self.running_mean[...] = mean
        self.running_var[...] = m2 / (count - 1 if self.convention == "pytorch" else count)

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
    """

    _spread = "running_std"

    def __init__(self, num_features, *, rmax=3.0, dmax=5.0, momentum=0.01, eps=1e-5, affine=True,
                 center=True, scale=True, axis=1, dtype=np.float32, backend=None):
        self.rmax = _scheduled(rmax, "rmax", 1.0)
        self.dmax = _scheduled(dmax, "dmax", 0.0)
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine, center=center,
                         scale=scale, track_running_stats=True, axis=axis, dtype=dtype,
                         backend=backend)

    def clips(self, step=None):
        """``(rmax, dmax)`` at ``step`` (default: the next training step)."""
        step = self.num_batches_tracked if step is None else step
        return tuple(v(step) if callable(v) else v for v in (self.rmax, self.dmax))

    def _op_forward(self, x, *, training, momentum, running):
        if running is None:
            # collecting population statistics: normalize with the batch's own statistics
            # (rmax = 1, dmax = 0 is BN) and leave the running statistics alone
            running, (rmax, dmax) = tuple(a.copy() for a in self._running()), (1.0, 0.0)
        elif training:
            rmax, dmax = self.clips()
        else:
            rmax, dmax = 1.0, 0.0   # unused in eval mode
        return batch_renorm(x, self.gamma, self.beta, *running, training=training, rmax=rmax,
                            dmax=dmax, momentum=momentum, eps=self.eps, axis=self.axis,
                            backend=self.backend)

    def _op_backward(self, dy, x, saved):
        return batch_renorm_backward(dy, x, saved, self.gamma, backend=self.backend)

    def _eval_invstd(self):
        return 1.0 / self.running_std.astype(np.float64)

    def _set_population(self, count, mean, m2):
        self.running_mean[...] = mean
        self.running_std[...] = np.sqrt(m2 / count + self.eps)

    def _convert_state(self, state):
        """A BN state (``running_var``) loads as sigma = sqrt(running_var + eps)."""
        state = dict(state)
        if "running_std" not in state and "running_var" in state:
            var = _real("running_var", _to_numpy(state.pop("running_var"), "running_var"))
            var = var.astype(np.float64)
            _check_spread("running_var", var)
            state["running_std"] = np.sqrt(var + self.eps)
        return state

    def batch_norm_state_dict(self):
        """The state of a BatchNorm (or PyTorch BatchNorm*d) with this layer's eps whose
        eval mode matches this layer's: running_var = sigma^2 - eps (never below 0).
        Without gamma or beta (scale=False / center=False) it lacks weight or bias, which
        PyTorch's affine layers require."""
        state = self.state_dict()
        sigma = state.pop("running_std").astype(np.float64)
        state["running_var"] = np.maximum(sigma * sigma - self.eps, 0.0).astype(self.dtype)
        state["num_batches_tracked"] = state.pop("num_batches_tracked")   # PyTorch's key order
        return state

    def _describe(self):
        parts = super()._describe()
        parts.insert(1, f"rmax={self.rmax!r}, dmax={self.dmax!r}")
        return parts


def is_layer(obj):
    return isinstance(obj, _Norm)

