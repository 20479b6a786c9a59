"""Argument checks shared by every op: bad input gets a clear exception here, before
any backend sees it (backends may assume what these functions guarantee).

Every array handed to a backend is in native byte order, and a per-channel one is also
aligned and steps by whole items: a valid array that is not (byte-swapped, a field of a
record array, a view into a byte buffer at an odd offset) is copied, so that compiled
kernels can take it as it is.

The checks run on any array library: NumPy arrays directly (the cpu backend's hot path),
others through the array API standard (see _arrays); every per-channel array and dy
must be on x's device.

The cpu backend's plain ops (see _interface) take the common case of a call before these
checks: its bindings test cheaply that the checks here would pass the arguments as they
are, and leave any other call to them, so that every error is raised here."""
import dataclasses
import math
import numbers
import operator

import numpy

from . import _arrays as arrays
from . import _halves as halves
from ._saved import BatchNormSaved, BatchRenormSaved

CONVENTIONS = ("pytorch", "keras")


FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
F32, F64 = FLOATS
INPUT_DTYPES = "float32, float64, float16 or bfloat16"


def _no_mask(arr, name):
    if type(arr) is not numpy.ndarray and isinstance(arr, numpy.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array; normops has no notion of a mask "
                        f"(pass {name}.filled(...) or the unmasked values)")


def as_array(xp, value, name, dtype=None, device=None):
    """xp.asarray (on ``device`` when given), with a failed conversion (strings, ragged
    lists, huge ints) reported under the argument's name."""
    try:
        if device is None or xp is numpy:
            return xp.asarray(value, dtype=dtype)
        return xp.asarray(value, dtype=dtype, device=device)
    except (TypeError, ValueError, OverflowError, RuntimeError) as exc:
        kind = TypeError if isinstance(exc, TypeError) else ValueError
        raise kind(f"{name} could not be converted to an array: {exc}") from exc


def library(xp):
    """How messages name an array library ("numpy", "torch", "array_api_strict")."""
    return xp.__name__.removeprefix("array_api_compat.")


def array_kind(xp):
    """How messages name the arrays of xp's library, with the article."""
    if xp is numpy:
        return "a numpy.ndarray"
    name = library(xp)
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name} array"


def foreign(arr, name, xp):
    """The TypeError for an array of another library than x's (xp's)."""
    raise TypeError(f"{name} is a {type(arr).__module__}.{type(arr).__qualname__} "
                    f"but x is {array_kind(xp)}; pass {name} as one")


def not_updatable(arr, name, xp):
    """The TypeError for a running statistic to update in place that is not an array."""
    raise TypeError(f"{name} must be {array_kind(xp)} (it is updated in place), "
                    f"got {type(arr).__name__}")


def read_only(arr, name, xp):
    """The ValueError for a running statistic to update that cannot be written."""
    if getattr(arr, "flags", None) is not None:   # NumPy's (and CuPy's) read-only arrays
        raise ValueError(f"{name} is read-only; running statistics are updated in place "
                         f"when training, so pass a writeable array")
    why = (f"{library(xp)} arrays are immutable" if not callable(getattr(arr, "is_inference", None))
           else "an inference tensor, made under torch.inference_mode(), outside it")
    raise ValueError(f"{name} cannot be written in place ({why}); running statistics are "
                     f"updated in place when training: pass none (batch statistics only) or "
                     f"use training=False")


def not_saved_array(value, name, xp, hint=""):
    """The TypeError for a field of saved that is not an array of x's library."""
    raise TypeError(f"{name} must be {array_kind(xp)} as the forward op returned it, "
                    f"got {type(value).__name__}{hint}")


def same_device(arr, name, x):
    """A per-channel array (or dy) must live where x does."""
    if type(arr) is not numpy.ndarray:
        where, there = arrays.device(arr), arrays.device(x)
        if where != there:
            raise ValueError(f"{name} is on device {where} but x is on device {there}; "
                             f"move it to x's device")


def _native(dtype):
    """dtype in native byte order: a byte-swapped float holds the same numbers."""
    return dtype.newbyteorder("=")


def _kernel_ready(arr):
    """A 1-D array compiled kernels can step through as it is: native byte order,
    aligned, and a stride of whole items (a field of a record array has neither)."""
    return (arr.dtype.isnative and getattr(arr.flags, "aligned", True)
            and arr.strides[0] % arr.itemsize == 0)


def as_input(xp, x, name="x", shared_batch=False):
    """An array of dtype float32/float64/float16/bfloat16 (native byte order: a
    byte-swapped one is converted) with ndim >= 2 and at least one element
    (``shared_batch``: the batch is split over ranks, and this rank's part may be empty)."""
    if xp is not numpy:
        return _standard_input(xp, x, name, shared_batch)
    if type(x) is xp.ndarray:
        arr = x
    else:
        _no_mask(x, name)
        arr = as_array(xp, x, name)
    if arr.dtype not in FLOATS:   # (a tuple test: float32/float64 pay nothing more)
        native = _native(arr.dtype)
        if native not in FLOATS and native.name not in halves.HALF_NAMES:
            raise TypeError(f"{name} must have dtype {INPUT_DTYPES}, got {arr.dtype}")
        if native != arr.dtype:
            arr = arr.astype(native)
    if arr.ndim >= 2 and arr.size:   # the common case, without a call (a tiny op costs ~15 us)
        return arr
    return _input_shape(arr, name, shared_batch)


def _standard_input(xp, x, name, shared_batch):
    """as_input for an array-API library."""
    arr = x if arrays.is_array(xp, x) else as_array(xp, x, name)
    supported(arr, name)
    if arr.dtype not in arrays.input_dtypes(xp):
        raise TypeError(f"{name} must have dtype {INPUT_DTYPES}, got {arrays.dtype_name(arr.dtype)}")
    return _input_shape(arr, name, shared_batch)


def supported(arr, name):
    """A form of array normops does not take (sparse, nested, without values) is refused."""
    why = arrays.unsupported(arr)
    if why is not None:
        raise TypeError(f"{name} is {why}; normops takes dense arrays holding values")


def _input_shape(arr, name, shared_batch):
    if arr.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (batch and channel), got shape {tuple(arr.shape)}"
        )
    if arrays.size(arr) == 0 and not shared_batch:
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)}); batch norm needs values to normalize")
    return arr


def integer(value, name):
    """An int (NumPy integers too; bools and floats refused)."""
    if isinstance(value, (bool, numpy.bool_)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None


def channel_axis(axis, ndim, name="axis"):
    """``axis`` as a non-negative int, checked against ``ndim``."""
    axis = integer(axis, name)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an input with {ndim} dimensions "
                         f"(valid: {-ndim} to {ndim - 1})")
    return axis % ndim


def flag(value, name):
    if not isinstance(value, (bool, numpy.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def number(value, name, *, low, high=math.inf, low_open=False, finite=False):
    """A real number in [low, high] (or (low, high] with low_open), NaN refused; with
    ``finite`` (and no finite ``high``) inf is refused too."""
    if type(value) is float and low < value < high:  # the common case: strictly inside
        return value
    if isinstance(value, numpy.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an int beyond float's range: as far out as inf
        value = math.inf if value > 0 else -math.inf
    too_low = value <= low if low_open else value < low
    if math.isnan(value) or too_low or value > high or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be {_interval(low, high, low_open, finite)}, got {value}")
    return value


def _interval(low, high, low_open, finite):
    if math.isinf(high) and finite:
        return f"a finite number {'>' if low_open else '>='} {low}"
    return f"in {'(' if low_open else '['}{low}, {high}]"


def convention(value):
    if not isinstance(value, str) or value not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(map(repr, CONVENTIONS))}, got {value!r}")
    return value


def list_dtype(dtype):
    """The dtype per-channel values that are not arrays (lists) get, for x of ``dtype``:
    x's, or float32 for half x (PyTorch's master weights)."""
    return F32 if halves.is_half(dtype) else dtype


def per_channel(xp, arr, name, channels, dtype, x=None):
    """gamma/beta (and running statistics that are only read): None, or shape (C,), on
    the device of ``x`` (when given). An array must have x's dtype ``dtype`` (in either
    byte order), or float32 when x is float16 or bfloat16 (PyTorch's mixed precision);
    anything else (a list, say) is converted to x's dtype, or float32 for half x. An
    array the kernels cannot take as it is comes back as a copy."""
    if arr is None:
        return None
    if xp is not numpy:
        return _standard_per_channel(xp, arr, name, channels, dtype, x)
    if (type(arr) is xp.ndarray and arr.dtype == dtype and arr.shape == (channels,)
            and getattr(arr.flags, "carray", False)):
        return arr   # the common case: nothing to convert or report
    _no_mask(arr, name)
    if type(arr) is not xp.ndarray:
        not_foreign(xp, arr, name)
        arr = as_array(xp, arr, name, None if hasattr(arr, "dtype") else list_dtype(dtype))
    _check_channel_array(arr, name, channels, dtype)
    return arr if _kernel_ready(arr) else arr.astype(_native(arr.dtype))


def not_foreign(xp, arr, name):
    """An array of another array-API library than x's is refused, not converted (lists,
    and objects that only offer __array__, are converted)."""
    if xp is numpy:
        if not isinstance(arr, numpy.ndarray) and arrays.namespace_or_none(arr) is not None:
            foreign(arr, name, xp)
    elif hasattr(arr, "shape") and hasattr(arr, "dtype") and not arrays.is_array(xp, arr):
        foreign(arr, name, xp)


def _standard_per_channel(xp, arr, name, channels, dtype, x):
    """per_channel for an array-API library: its arrays, or values converted to one on
    x's device."""
    if not arrays.is_array(xp, arr):
        not_foreign(xp, arr, name)
        half = halves.is_half(dtype)
        arr = as_array(xp, arr, name, xp.float32 if half else dtype,
                       None if x is None else arrays.device(x))
    supported(arr, name)
    if arr.dtype != dtype and not (arr.dtype == xp.float32 and halves.is_half(dtype)):
        halves.wrong_pair(name, arr.dtype, dtype)
    _one_per_channel(arr, name, channels)
    if x is not None:
        same_device(arr, name, x)
    return arr


def running_stat(xp, arr, name, channels, dtype, *, written, x=None):
    """A running statistic of shape (C,) and x's dtype. When ``written`` (training) it is
    updated in place, so it must be a writeable array of the backend's type whose
    channels are distinct elements. One the kernels cannot write as it is (byte-swapped,
    unaligned, a field of a record array) comes back as a copy for the backend to
    update, which ``copy_back`` then writes into it."""
    if not written:
        return per_channel(xp, arr, name, channels, dtype, x)
    if not arrays.is_array(xp, arr):
        not_updatable(arr, name, xp)
    checked = per_channel(xp, arr, name, channels, dtype, x)
    if xp is numpy and arr.flags.carray:
        return checked   # writeable and contiguous: the common case
    if not arrays.writeable(arr):
        read_only(arr, name, xp)
    step = arrays.step_bytes(arr)
    itemsize = arrays.itemsize(arr)
    if channels > 1 and step is not None and abs(step) < itemsize:
        raise ValueError(f"{name} steps {step} bytes between its {itemsize}-byte "
                         f"values, so its channels overlap in memory (a broadcast view?); "
                         f"running statistics are updated in place when training, so give "
                         f"each channel its own element")
    return checked


def copy_back(copies):
    """Writes the running statistics a backend updated in copies (see running_stat) into
    the caller's arrays: ``copies`` holds (caller's array, copy) pairs."""
    for given, used in copies:
        given[...] = used


def _check_channel_array(arr, name, channels, dtype):
    native = _native(arr.dtype)
    if native != dtype and not (native == F32 and halves.is_half(dtype)):
        halves.wrong_pair(name, native, dtype)
    _one_per_channel(arr, name, channels)


def _one_per_channel(arr, name, channels):
    if tuple(arr.shape) != (channels,):
        raise ValueError(f"{name} must have shape ({channels},) (one value per channel), "
                         f"got shape {tuple(arr.shape)}")


def paired(first, second, names):
    if (first is None) != (second is None):
        raise ValueError(f"{names[0]} and {names[1]} must be given together")


def no_overlap(xp, written, read):
    """Running statistics are written in place: they may not alias each other or the inputs.
    ``written`` and ``read`` are sequences of (name, array or None)."""
    if xp is not numpy:
        return _no_overlap_of_spans(xp, written, read)
    written = [(n, a, _owns_memory(a)) for n, a in written if a is not None]
    read = [(n, a, _owns_memory(a)) for n, a in read if a is not None]
    for i, (name, arr, owns) in enumerate(written):
        for other_name, other, other_owns in written[i + 1:] + read:
            if owns and other_owns and arr is not other:
                continue  # two arrays that each own their memory: separate allocations
            if arrays.may_share_memory(xp, arr, other):
                _shared(name, other_name)


def _no_overlap_of_spans(xp, written, read):
    """no_overlap for an array-API library: each array's memory span measured once
    (PyTorch), else the library's own test (CuPy), else identity."""
    written = [(n, a, arrays.memory_span(a)) for n, a in written if a is not None]
    read = [(n, a, arrays.memory_span(a)) for n, a in read
            if a is not None and arrays.is_array(xp, a)]
    for i, (name, arr, span) in enumerate(written):
        for other_name, other, other_span in written[i + 1:] + read:
            if (arrays.spans_overlap(span, other_span) if span and other_span
                    else arrays.may_share_memory(xp, arr, other)):
                _shared(name, other_name)


def _shared(name, other_name):
    raise ValueError(f"{name} shares memory with {other_name}; running statistics are "
                     f"updated in place, so give them their own arrays")


def _owns_memory(arr):
    """A NumPy array that allocated its own buffer; other libraries' ``owndata`` may only
    mean "has no base" (a CuPy array made on another's pointer says True)."""
    return type(arr) is numpy.ndarray and arr.flags.owndata


def positive_stats(xp, arr, name, *, allow_zero):
    """Running spreads divide (std) or sit under a square root (var): a negative one
    would give a silently wrong or NaN result. NaN passes and propagates."""
    # one value to the host (an array-API library's bool() of a 0-d array): NaN when any
    # value is NaN, and then the exact test below decides
    lowest = arr.min() if xp is numpy else xp.min(arr)   # the method: 1 us less on NumPy
    if lowest >= 0 if allow_zero else lowest > 0:
        return
    bad = arr < 0 if allow_zero else arr <= 0
    if bool(xp.any(bad)):
        kind = "non-negative" if allow_zero else "positive"
        channels = [int(i) for i in arrays.host_list(xp.nonzero(bad)[0], limit=arr.shape[0])]
        raise ValueError(f"{name} must be {kind}; channels {channels} hold "
                         f"{[float(arr[i]) for i in channels]}")


def values_per_channel(shape, axis):
    return math.prod(shape) // shape[axis]


def has_channels(shape, axis):
    """A rank's part of a shared batch may hold no values, but never no channels."""
    if shape[axis] == 0:
        raise ValueError(f"x has no channels: shape {tuple(shape)} with the channel axis {axis}")


def global_count(saved):
    """A synchronized training forward saved the global count of values per channel."""
    if saved.training and not (type(saved.count) is int and saved.count > 1):
        raise ValueError(f"saved.count must be the number of values per channel over all ranks "
                         f"(an int > 1) for a synchronized backward, got {saved.count!r}")


def training_batch(shape, axis):
    """Batch statistics need more than one value per channel (as PyTorch requires)."""
    if values_per_channel(shape, axis) == 1:
        raise ValueError(f"expected more than 1 value per channel when training, got input of "
                         f"shape {tuple(shape)} with the channel axis {axis}")


def gradient(xp, dy, x):
    """dy, of x's shape and dtype (x is checked already)."""
    return like_x(xp, dy, x, "dy")


def like_x(xp, arr, x, name, hint=""):
    """An array of x's shape, dtype, library and device (dy; a residual z; the forward's
    y), x checked already. ``hint`` ends a wrong shape's message."""
    if xp is numpy and type(arr) is xp.ndarray and arr.dtype == x.dtype and arr.shape == x.shape:
        return arr   # the common case: x's checks hold for it
    not_foreign(xp, arr, name)
    # x may be empty only as a rank's part of a shared batch, and arr is then too
    arr = as_input(xp, arr, name, shared_batch=arrays.size(x) == 0)
    if arr.shape != x.shape:
        raise ValueError(f"{name} must have the shape of x {tuple(x.shape)}, got "
                         f"{tuple(arr.shape)}{hint}")
    if arr.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {arrays.dtype_name(arr.dtype)} but x has dtype "
                        f"{arrays.dtype_name(x.dtype)}")
    same_device(arr, name, x)
    return arr


ACTIVATIONS = (None, "relu")


def activation(value, name="activation"):
    """The epilogue's activation: None or "relu"."""
    if value is None or (isinstance(value, str) and value in ACTIVATIONS):
        return value
    raise ValueError(f"{name} must be None or 'relu', got {value!r}")


def forward_output(xp, y, x, saved):
    """The backward's ``y``: the forward's output, which masks dy after a forward with
    activation="relu" (required then); checked against x when given, else None."""
    if y is None:
        if saved.activation is not None:
            raise ValueError(f"y is required: the forward had activation={saved.activation!r}, "
                             f"whose gradient masks dy where y <= 0; pass the y the forward "
                             f"returned, as y=y")
        return None
    return like_x(xp, y, x, "y", hint=" (pass the y the forward returned)")


# the per-channel arrays of each saved state; BRN's r and d are None in eval mode
_SAVED_ARRAYS = {BatchNormSaved: ("mean", "invstd"), BatchRenormSaved: ("mean", "invstd", "r", "d")}
_TRAINING_ONLY = ("r", "d")


def saved_state(xp, saved, expected_type, op_name, x, axis):
    """The forward's saved state, checked against this backward call: returns
    ``(saved, axis)``, the state for the backend and its channel axis. Its per-channel
    arrays must be arrays of the backend's type, of shape (C,) and a float dtype; the
    backend gets them as the forward ops make them, contiguous native float64, converted
    where needed in a copy of ``saved`` (the caller's object is left alone)."""
    if not isinstance(saved, expected_type):
        raise TypeError(f"saved must be the {expected_type.__name__} returned by the forward op "
                        f"{op_name}, got {type(saved).__name__}")
    if xp is not numpy or not _as_made(saved, x.shape):
        saved = _checked_fields(xp, saved, _SAVED_ARRAYS[expected_type], x)
    if axis is not None and channel_axis(axis, x.ndim) != saved.axis:
        raise ValueError(f"axis={axis} differs from the forward call's channel axis {saved.axis}")
    return saved, saved.axis


def _as_made(saved, shape):
    """Whether ``saved`` is as a forward op on an x of this shape makes it, checked
    cheaply (a backward runs in every training step): a bool ``training``, an int
    channel axis, x's shape as a tuple of ints, writeable C-contiguous float64 NumPy
    arrays of shape (C,), and no r and d in eval mode."""
    training, axis, saved_shape = saved.training, saved.axis, saved.shape
    # a float or NumPy integer among the dims makes their product one too
    if not (type(training) is bool and type(axis) is int and saved_shape == shape
            and type(saved.residual) is bool and _plain_activation(saved.activation)
            and type(math.prod(saved_shape)) is int and 0 <= axis < len(shape)):
        return False
    per_channel = (shape[axis],)
    if type(saved) is BatchRenormSaved and not (
            _pair_as_made(saved.r, saved.d, per_channel) if training
            else saved.r is None and saved.d is None):
        return False
    return _pair_as_made(saved.mean, saved.invstd, per_channel)


def _plain_activation(value):
    """An activation as the forward ops record it (None or "relu"), tested without
    comparing an arbitrary object (an array) with a string."""
    return value is None or (type(value) is str and value == "relu")


def _pair_as_made(a, b, per_channel):
    """Two writeable C-contiguous float64 NumPy arrays of shape ``per_channel``."""
    return (type(a) is numpy.ndarray and type(b) is numpy.ndarray and a.dtype == F64
            and b.dtype == F64 and a.shape == per_channel and b.shape == per_channel
            and a.flags.carray and b.flags.carray)


def _checked_fields(xp, saved, fields, x):
    """Every field of ``saved`` checked (named in any error) against ``x``; a copy of it
    where a field needed converting."""
    fixed, shape = {}, tuple(x.shape)
    training, axis, saved_shape = saved.training, saved.axis, saved.shape
    if type(training) is not bool:
        training = fixed["training"] = flag(training, "saved.training")
    if type(axis) is not int:
        axis = fixed["axis"] = integer(axis, "saved.axis")
    if type(saved_shape) is not tuple or not all(type(n) is int for n in saved_shape):
        saved_shape = fixed["shape"] = _shape_of_ints(saved_shape)
    if saved.activation is not None:
        fixed["activation"] = activation(saved.activation, "saved.activation")
    if type(saved.residual) is not bool:
        fixed["residual"] = flag(saved.residual, "saved.residual")
    if not 0 <= axis < len(saved_shape):
        raise ValueError(f"saved.axis={axis} is not a channel axis of shape {saved_shape}")
    if shape != saved_shape:
        raise ValueError(f"x has shape {tuple(shape)} but the forward call's x had shape "
                         f"{saved_shape} (saved.shape); pass the forward's x")
    for field in fields:
        value = getattr(saved, field)
        checked = _saved_array(xp, value, field, x, axis, training)
        if checked is not value:
            fixed[field] = checked
    return dataclasses.replace(saved, **fixed) if fixed else saved


def _shape_of_ints(shape):
    """saved.shape as a tuple of Python ints (NumPy integers are converted)."""
    if isinstance(shape, tuple):   # torch.Size too
        try:
            return tuple(integer(n, "saved.shape") for n in shape)
        except TypeError:
            pass
    raise TypeError(f"saved.shape must be a tuple of ints (the forward's x.shape), "
                    f"got {shape!r:.80}")


def _saved_array(xp, value, field, x, axis, training):
    """saved.<field> for the backend: contiguous native float64 (the sums' dtype on x's
    device, for another library), converted (losslessly) from a narrower float, another
    byte order or another layout. BRN's r and d are None in eval mode, which uses
    neither (arrays given there are checked, then left out)."""
    name, channels = f"saved.{field}", x.shape[axis]
    unused = field in _TRAINING_ONLY and not training
    if value is None and unused:
        return None
    _no_mask(value, name)
    if not arrays.is_array(xp, value):
        needed = " (a training BatchRenormSaved holds r and d)" if field in _TRAINING_ONLY else ""
        not_saved_array(value, name, xp, needed)
    if xp is not numpy:
        return _standard_saved_array(xp, value, name, channels, unused, x)
    if value.dtype.kind != "f" or value.dtype.itemsize > F64.itemsize:
        raise TypeError(f"{name} must have a float dtype of at most 64 bits (the forward "
                        f"op's float64), got {value.dtype}")
    _one_per_channel(value, name, channels)
    if unused:
        return None
    value = xp.asarray(value)   # a subclass as a plain array
    if value.dtype == F64 and value.flags.c_contiguous and getattr(value.flags, "aligned", True):
        return value   # read-only, say: usable as it is
    return xp.array(value, dtype=F64)


def _standard_saved_array(xp, value, name, channels, unused, x):
    supported(value, name)
    wide = arrays.wide_dtype(xp, arrays.device(x))
    if value.dtype != wide and (not xp.isdtype(value.dtype, "real floating")
                                or xp.finfo(value.dtype).bits > 64):
        raise TypeError(f"{name} must have a float dtype of at most 64 bits (the forward "
                        f"op's float64), got {arrays.dtype_name(value.dtype)}")
    _one_per_channel(value, name, channels)
    same_device(value, name, x)
    return None if unused else arrays.astype(xp, value, wide)


def kernel_input(xp, x):
    """x of a backend's kernel called directly (plugin authors compare kernels): an
    (outer, C, inner) array of dtype float32/float64."""
    x = as_input(xp, x)
    if x.ndim != 3:
        raise ValueError(f"x must be a 3-D (outer, C, inner) array, got shape {tuple(x.shape)}")
    return x


def kernel_vector(xp, v, name, channels):
    """A per-channel argument of a backend's kernel called directly: C real numbers."""
    _no_mask(v, name)
    arr = as_array(xp, v, name)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    _one_per_channel(arr, name, channels)
    return arr


def forward_args(xp, x, gamma, beta, stats, stat_names, *, training, momentum, eps, axis,
                 stats_required, shared_batch=False, residual=None):
    """Checks shared by the BN and BRN forward ops.

    ``stats`` is the pair of running statistics (may be (None, None) unless
    ``stats_required``). Returns the checked (x, gamma, beta, stats, training, momentum,
    eps, axis, copies, residual): after the op, ``copy_back(copies)`` writes the running
    statistics the backend updated in copies into the caller's arrays; ``residual`` (z
    of a fused forward, or None) has x's shape, dtype and device. ``shared_batch``: x is this
    rank's part of a batch split over ranks (it may hold 0 or 1 values per channel; the
    global count is checked once the ranks have met).
    """
    # the caller's, before any copy
    inputs = (("x", x), ("gamma", gamma), ("beta", beta), ("residual", residual))
    x = as_input(xp, x, shared_batch=shared_batch)
    if residual is not None:
        residual = like_x(xp, residual, x, "residual")
    axis = channel_axis(axis, x.ndim)
    if shared_batch:
        has_channels(x.shape, axis)
    training = flag(training, "training")
    channels = x.shape[axis]
    gamma = per_channel(xp, gamma, "gamma", channels, x.dtype, x)
    beta = per_channel(xp, beta, "beta", channels, x.dtype, x)
    paired(*stats, stat_names)
    copies = ()
    if stats[0] is None:
        if stats_required:
            raise ValueError(f"{stat_names[0]} and {stat_names[1]} are required")
        if not training:
            raise ValueError(f"training=False normalizes with the running statistics: "
                             f"pass {stat_names[0]} and {stat_names[1]}")
    else:
        checked = (running_stat(xp, stats[0], stat_names[0], channels, x.dtype, written=training, x=x),
                   running_stat(xp, stats[1], stat_names[1], channels, x.dtype, written=training, x=x))
        if training:
            # the caller's arrays are the ones updated (through a copy or not) and read
            no_overlap(xp, zip(stat_names, stats), inputs)
            if checked[0] is not stats[0] or checked[1] is not stats[1]:
                copies = [(given, used) for given, used in zip(stats, checked) if used is not given]
        stats = checked
    if training and not shared_batch:
        training_batch(x.shape, axis)
    momentum = number(momentum, "momentum", low=0.0, high=1.0)
    eps = number(eps, "eps", low=0.0, low_open=True, finite=True)
    return x, gamma, beta, stats, training, momentum, eps, axis, copies, residual
