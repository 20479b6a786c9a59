"""Argument checks shared by every op: bad input gets a clear exception here, before
any backend sees it (backends may assume what these functions guarantee)."""
import math
import numbers
import operator

import numpy

CONVENTIONS = ("pytorch", "keras")


def _describe(arr):
    return f"shape {tuple(arr.shape)} and dtype {arr.dtype}"


def as_input(xp, x, name="x"):
    """An array of dtype float32/float64 with ndim >= 2 and at least one element."""
    arr = xp.asarray(x)
    if arr.dtype not in (xp.float32, xp.float64):
        raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (batch and channel), got shape {tuple(arr.shape)}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)}); batch norm needs values to normalize")
    return arr


def channel_axis(axis, ndim):
    """``axis`` as a non-negative int, checked against ``ndim``."""
    if isinstance(axis, (bool, numpy.bool_)):
        raise TypeError(f"axis must be an int, got {axis!r}")
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an int, got {type(axis).__name__}") from None
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for an input with {ndim} dimensions "
                         f"(valid: {-ndim} to {ndim - 1})")
    return axis % ndim


def flag(value, name):
    if not isinstance(value, (bool, numpy.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def number(value, name, *, low, high=math.inf, low_open=False):
    """A real number in [low, high] (or (low, high] with low_open), NaN refused."""
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    if math.isnan(value) or too_low or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value}")
    return value


def convention(value):
    if value not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(map(repr, CONVENTIONS))}, got {value!r}")
    return value


def per_channel(xp, arr, name, channels, dtype):
    """gamma/beta: None, or an array of shape (C,) and x's dtype (never modified)."""
    if arr is None:
        return None
    arr = xp.asarray(arr)
    _check_channel_array(arr, name, channels, dtype)
    return arr


def running_stat(xp, arr, name, channels, dtype, *, written):
    """A running statistic of shape (C,) and x's dtype. When ``written`` (training) it must
    be a writeable array of the backend's type, since it is updated in place."""
    if written and not isinstance(arr, xp.ndarray):
        raise TypeError(f"{name} must be a {xp.__name__}.ndarray (it is updated in place), "
                        f"got {type(arr).__name__}")
    arr = xp.asarray(arr)
    _check_channel_array(arr, name, channels, dtype)
    if written and not getattr(arr.flags, "writeable", True):
        raise ValueError(f"{name} is read-only; running statistics are updated in place "
                         f"when training, so pass a writeable array")
    return arr


def _check_channel_array(arr, name, channels, dtype):
    if arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but x has dtype {dtype}; "
                        f"pass {name}.astype({dtype.name!r})")
    if tuple(arr.shape) != (channels,):
        raise ValueError(f"{name} must have shape ({channels},) (one value per channel), "
                         f"got {_describe(arr)}")


def paired(first, second, names):
    if (first is None) != (second is None):
        raise ValueError(f"{names[0]} and {names[1]} must be given together")


def no_overlap(xp, written, read):
    """Running statistics are written in place: they may not alias each other or the inputs."""
    may_share = getattr(xp, "may_share_memory", None)
    if may_share is None:
        return
    items = [(n, a) for n, a in written.items() if a is not None]
    for i, (name, arr) in enumerate(items):
        others = items[i + 1:] + [(n, a) for n, a in read.items() if a is not None]
        for other_name, other in others:
            if may_share(arr, other):
                raise ValueError(f"{name} shares memory with {other_name}; running statistics are "
                                 f"updated in place, so give them their own arrays")


def values_per_channel(shape, axis):
    return math.prod(shape) // shape[axis]


def training_batch(shape, axis):
    """Batch statistics need more than one value per channel (as PyTorch requires)."""
    if values_per_channel(shape, axis) == 1:
        raise ValueError(f"expected more than 1 value per channel when training, got input of "
                         f"shape {tuple(shape)} with the channel axis {axis}")


def gradient(xp, dy, x):
    dy = as_input(xp, dy, "dy")
    if dy.shape != x.shape:
        raise ValueError(f"dy must have the shape of x {tuple(x.shape)}, got {tuple(dy.shape)}")
    if dy.dtype != x.dtype:
        raise TypeError(f"dy has dtype {dy.dtype} but x has dtype {x.dtype}")
    return dy


def saved_state(saved, expected_type, op_name, x, axis):
    """The forward's saved state matches this backward call; returns the channel axis."""
    if not isinstance(saved, expected_type):
        raise TypeError(f"saved must be the {expected_type.__name__} returned by the forward op "
                        f"{op_name}, got {type(saved).__name__}")
    if axis is not None and channel_axis(axis, x.ndim) != saved.axis:
        raise ValueError(f"axis={axis} differs from the forward call's channel axis {saved.axis}")
    if saved.axis >= x.ndim or tuple(saved.mean.shape) != (x.shape[saved.axis],):
        raise ValueError(f"saved holds statistics for {saved.mean.shape[0]} channels on axis "
                         f"{saved.axis}, which does not fit x of shape {tuple(x.shape)}")
    return saved.axis


def forward_args(xp, x, gamma, beta, stats, stat_names, *, training, momentum, eps, axis,
                 stats_required):
    """Checks shared by the BN and BRN forward ops.

    ``stats`` is the pair of running statistics (may be (None, None) unless
    ``stats_required``). Returns the checked (x, gamma, beta, stats, training, momentum,
    eps, axis).
    """
    x = as_input(xp, x)
    axis = channel_axis(axis, x.ndim)
    training = flag(training, "training")
    channels = x.shape[axis]
    gamma = per_channel(xp, gamma, "gamma", channels, x.dtype)
    beta = per_channel(xp, beta, "beta", channels, x.dtype)
    paired(*stats, stat_names)
    if stats[0] is None:
        if stats_required:
            raise ValueError(f"{stat_names[0]} and {stat_names[1]} are required")
        if not training:
            raise ValueError(f"training=False normalizes with the running statistics: "
                             f"pass {stat_names[0]} and {stat_names[1]}")
    else:
        stats = tuple(running_stat(xp, arr, name, channels, x.dtype, written=training)
                      for arr, name in zip(stats, stat_names))
        if training:
            no_overlap(xp, dict(zip(stat_names, stats)), {"x": x, "gamma": gamma, "beta": beta})
    if training:
        training_batch(x.shape, axis)
    momentum = number(momentum, "momentum", low=0.0, high=1.0)
    eps = number(eps, "eps", low=0.0, low_open=True)
    return x, gamma, beta, stats, training, momentum, eps, axis
