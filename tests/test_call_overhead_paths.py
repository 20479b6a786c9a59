"""The cpu backend's plain ops (the common case of an op call in one call of the bindings,
see normops._interface) against the general path: for inputs that take the plain path
and for inputs that just miss it, results and errors are the general path's.

Every case runs twice on fresh arrays: on "plain-spy" (the cpu backend, recording
whether each call took the plain path) and on "plain-off" (the cpu backend without its
plain ops: every call checks, then runs the whole op). Both run the same kernels, so
their results agree to the bit."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import normops
from memory import unaligned
from normops._backends import _cpu
from normops._backends.cpu import POOLED_BYTES, CpuBackend
from normops._saved import BatchNormSaved, BatchRenormSaved

PLAIN_OPS = ("plain_batch_norm", "plain_batch_renorm", "plain_batch_norm_backward",
             "plain_batch_renorm_backward")


class Spy(CpuBackend):
    """The cpu backend, recording for each call of a plain op whether it took the call."""

    def __init__(self):
        self.took = []


def _spying(name):
    def plain(self, *args, **epilogue):
        result = getattr(super(Spy, self), name)(*args, **epilogue)
        self.took.append(result is not None)
        return result
    return plain


for _name in PLAIN_OPS:
    setattr(Spy, _name, _spying(_name))


class PlainOff(CpuBackend):
    """The cpu backend without plain ops: the general path only."""


for _name in PLAIN_OPS:
    setattr(PlainOff, _name, None)

SPY = Spy()


@pytest.fixture(scope="module", autouse=True)
def backends():
    normops.register_backend("plain-spy", SPY)
    normops.register_backend("plain-off", PlainOff())
    yield
    normops.unregister_backend("plain-spy")
    normops.unregister_backend("plain-off")


# --- running a case on both paths ------------------------------------------------------

def _outcome(call, warned=None):
    """call's result, or the exception it raised (compared by type and message); the
    warnings it gave go to the list ``warned``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return call()
        except Exception as exc:
            return exc
        finally:
            if warned is not None:
                warned.extend((w.category, str(w.message)) for w in caught)


def _same_array(a, b, name):
    if a is None or b is None:
        assert a is None and b is None, name
        return
    assert type(a) is type(b), name
    assert a.dtype == b.dtype and a.shape == b.shape, name
    assert a.strides == b.strides, name   # the same layout (C order, or channels-last)
    assert a.flags.writeable == b.flags.writeable, name
    assert a.tobytes() == b.tobytes(), name


def _same_result(plain, general):
    if isinstance(general, Exception):
        assert type(plain) is type(general) and str(plain) == str(general), (plain, general)
        return
    assert not isinstance(plain, Exception), plain
    assert len(plain) == len(general)
    for i, (a, b) in enumerate(zip(plain, general)):
        if isinstance(b, (BatchNormSaved, BatchRenormSaved)):
            assert type(a) is type(b)
            for field, value in vars(b).items():
                if isinstance(value, np.ndarray):
                    _same_array(getattr(a, field), value, f"saved.{field}")
                else:
                    assert getattr(a, field) == value, field
        else:
            _same_array(a, b, f"output {i}")


def _same_arguments(plain_args, general_args):
    """The arrays of the call after it: running statistics updated alike, inputs unchanged."""
    for name in general_args:
        a, b = plain_args[name], general_args[name]
        if isinstance(b, np.ndarray):
            _same_array(a, b, name)


def both_paths(make, op, plain):
    """Runs ``op(backend, **make())`` on each path; ``plain``: whether the plain path must
    take the call (False: it must leave it to the general path)."""
    SPY.took.clear()
    plain_args, general_args = make(), make()
    plain_warned, general_warned = [], []
    got = _outcome(lambda: op("plain-spy", **plain_args), plain_warned)
    expected = _outcome(lambda: op("plain-off", **general_args), general_warned)
    _same_result(got, expected)
    _same_arguments(plain_args, general_args)
    assert plain_warned == general_warned
    assert SPY.took == [plain], f"plain path taken: {SPY.took}, expected {[plain]}"
    return got


def bn(backend, x, gamma=None, beta=None, running_mean=None, running_var=None, **options):
    return normops.batch_norm(x, gamma, beta, running_mean, running_var, backend=backend,
                              **options)


def brn(backend, x, gamma=None, beta=None, running_mean=None, running_std=None, **options):
    return normops.batch_renorm(x, gamma, beta, running_mean, running_std, backend=backend,
                                **options)


# --- inputs ------------------------------------------------------------------------------

def values(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def channels_last(shape, dtype=np.float32, axis=1):
    """An array of ``shape`` whose memory is contiguous with ``axis`` innermost."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(values(shape, dtype), axis, -1)), -1, axis)


def case(shape=(4, 8), dtype=np.float32, axis=1, x=None, stats=True, params=True, **change):
    """A factory of BN arguments: x of ``shape``, gamma, beta and running statistics of
    its channels (those of dimension 1 where ``axis`` names none); ``change`` replaces
    any of them (a callable gets the arguments made so far, an array is copied)."""
    def make():
        arr = values(shape, dtype) if x is None else x()
        ndim = np.ndim(arr)
        c = np.shape(arr)[int(axis) if -ndim <= int(axis) < ndim else 1] if ndim else 1
        args = dict(x=arr, axis=axis)
        if params:
            args.update(gamma=np.linspace(0.5, 2.0, c).astype(dtype),
                        beta=np.linspace(-1.0, 1.0, c).astype(dtype))
        if stats:
            args.update(running_mean=np.full(c, 0.25, dtype), running_var=np.full(c, 2.0, dtype))
        for key, value in change.items():
            args[key] = value(args) if callable(value) else (
                value.copy() if isinstance(value, np.ndarray) else value)
        return args
    return make


def renorm(make):
    """A BN case as a BRN case: running_var becomes running_std."""
    def made():
        args = make()
        args["running_std"] = args.pop("running_var")
        return args
    return made


def strided(arr):
    """arr's values as a view stepping over every other element of a longer array."""
    out = np.empty(arr.shape[0] * 2, arr.dtype)[::2]
    out[...] = arr
    return out


def read_only(arr):
    arr.flags.writeable = False
    return arr


def byte_swapped(arr):
    return arr.astype(arr.dtype.newbyteorder())


TRAINING = [True, False]

PLAIN_FORWARD = {
    "NC float32": case(),
    "NC float64": case(dtype=np.float64),
    "NCHW, rows": case((2, 4, 2, 2)),
    "NCHW, planes": case((2, 3, 5, 5)),
    "NCHW, negative axis": case((2, 3, 5, 5), axis=-3),
    "NHWC (last axis)": case((2, 3, 3, 4), axis=3),
    "NCHW channels-last": case((2, 4, 3, 3), x=lambda: channels_last((2, 4, 3, 3))),
    "NCDHW channels-last, axis 2": case((2, 3, 4, 2, 2), axis=2,
                                        x=lambda: channels_last((2, 3, 4, 2, 2), axis=2)),
    "2-D in Fortran order, axis 0 (channels-last)": case(
        (8, 4), axis=0, x=lambda: np.asfortranarray(values((8, 4)))),
    "channels-last with a dimension of 1": case((1, 4, 3, 1),
                                                x=lambda: channels_last((1, 4, 3, 1))),
    "one channel": case((5, 1)),
    "no gamma, beta": case(params=False),
    "gamma only": case(beta=None),
    "x a read-only view of rows": case(x=lambda: read_only(values((6, 8))[1:5])),
    "read-only gamma and beta": case(gamma=lambda a: read_only(a["gamma"]),
                                     beta=lambda a: read_only(a["beta"])),
    "strided and reversed gamma, beta": case(gamma=lambda a: strided(a["gamma"]),
                                             beta=lambda a: a["beta"][::-1]),
    "strided running statistics": case(running_mean=lambda a: strided(a["running_mean"]),
                                       running_var=lambda a: strided(a["running_var"])),
    "running statistics halves of one array": case(
        running_mean=lambda a: np.concatenate([a["running_mean"], a["running_var"]])[:8],
        running_var=lambda a: np.concatenate([a["running_mean"], a["running_var"]])[8:]),
    "running_var beside gamma in one array": case(
        gamma=lambda a: np.ones(16, np.float32)[:8],
        running_var=lambda a: a["gamma"].base[8:]),
    "momentum 0, tiny eps": case(momentum=0.0, eps=5e-324),
    "momentum 1": case(momentum=1.0),
    "keras convention": case(convention="keras"),
}


@pytest.mark.parametrize("training", TRAINING)
@pytest.mark.parametrize("name", PLAIN_FORWARD)
def test_plain_forward_is_the_general_one(name, training):
    make = PLAIN_FORWARD[name]
    both_paths(make, lambda be, **a: bn(be, training=training, **a), plain=True)


def test_plain_training_without_running_statistics():
    both_paths(case(stats=False), lambda be, **a: bn(be, training=True, **a), plain=True)


@pytest.mark.parametrize("training", TRAINING)
@pytest.mark.parametrize("name", ["NC float32", "NCHW, planes", "NCHW channels-last",
                                  "strided running statistics", "no gamma, beta"])
def test_plain_batch_renorm_is_the_general_one(name, training):
    make = renorm(PLAIN_FORWARD[name])
    for options in (dict(rmax=1.5, dmax=0.5), dict(rmax=float("inf"), dmax=0.0)):
        both_paths(make, lambda be, **a: brn(be, training=training, **options, **a), plain=True)


def test_eval_statistics_the_check_lets_through_are_plain():
    # NaN passes positive_stats (and propagates); a zero variance is allowed in BN
    odd = case(running_var=lambda a: np.array([np.nan, 0.0, -0.0, 1, 2, 3, 4, 5], np.float32),
               running_mean=lambda a: read_only(a["running_mean"]))
    both_paths(odd, lambda be, **a: bn(be, training=False, **a), plain=True)


# inputs that miss the plain path, and the result or error the general path gives them
NEAR_MISSES = {
    # x
    "x not contiguous": case((4, 16), x=lambda: values((4, 16))[:, ::2], gamma=None, beta=None,
                             running_mean=np.zeros(8, np.float32),
                             running_var=np.ones(8, np.float32)),
    "x reversed": case(x=lambda: values((4, 8))[::-1]),
    "x in Fortran order": case((4, 3, 5), x=lambda: np.asfortranarray(values((4, 3, 5)))),
    "x unaligned": case(x=lambda: unaligned(values((4, 8)))),
    "x byte-swapped": case(x=lambda: byte_swapped(values((4, 8)))),
    "x float16": case(dtype=np.float16),
    "x int": case(x=lambda: np.ones((4, 8), np.int64)),
    "x a list": case(x=lambda: values((4, 8)).tolist(), dtype=np.float64),
    "x 0-d": case(x=lambda: np.float32(1.0), axis=0, stats=False, params=False),
    "x 1-D": case(x=lambda: values((8,)), axis=0),
    "x empty": case(x=lambda: values((0, 8))),
    "x a subclass": case(x=lambda: values((4, 8)).view(np.matrix)),
    "x masked": case(x=lambda: np.ma.masked_array(values((4, 8)))),
    "channels-last x with a padded row": case(
        (2, 4, 3, 3), x=lambda: np.moveaxis(np.zeros((2, 3, 3, 5), np.float32)[..., :4], -1, 1)),
    # axis
    "axis a NumPy int": case(axis=np.int64(1)),
    "axis out of range": case(axis=2),
    "axis a bool": case(axis=True),
    "axis huge": case(axis=2**70),
    # per-channel arrays
    "gamma float64 with float32 x": case(gamma=lambda a: a["gamma"].astype(np.float64)),
    "gamma a list": case(gamma=lambda a: a["gamma"].tolist()),
    "gamma too long": case(gamma=lambda a: np.ones(9, np.float32)),
    "gamma 2-D": case(gamma=lambda a: a["gamma"][None]),
    "gamma a subclass": case(gamma=lambda a: a["gamma"].view(np.ma.MaskedArray)),
    "gamma byte-swapped": case(gamma=lambda a: byte_swapped(a["gamma"])),
    "gamma unaligned": case(gamma=lambda a: unaligned(a["gamma"])),
    "beta a field of a record array": case(
        beta=lambda a: np.zeros(8, [("a", "i1"), ("b", "f4")])["b"]),
    "one running statistic": case(running_var=None),
    "running_mean a list": case(running_mean=lambda a: a["running_mean"].tolist()),
    "running statistics byte-swapped": case(running_mean=lambda a: byte_swapped(a["running_mean"])),
    "running statistics unaligned": case(running_var=lambda a: unaligned(a["running_var"])),
    "running statistics float64": case(running_var=lambda a: a["running_var"].astype(np.float64)),
    # numbers
    "momentum NaN": case(momentum=float("nan")),
    "momentum above 1": case(momentum=1.5),
    "momentum an int": case(momentum=0),
    "momentum a NumPy float": case(momentum=np.float64(0.1)),
    "momentum a 0-d array": case(momentum=np.array(0.1)),
    "eps 0": case(eps=0.0),
    "eps negative": case(eps=-1e-5),
    "eps inf": case(eps=float("inf")),
    "eps NaN": case(eps=float("nan")),
    "eps an int": case(eps=1),
    "convention unknown": case(convention="tensorflow"),
    "convention not a str": case(convention=None),
}

# misses in training only, where the running statistics are written (in eval mode they
# are only read, and these calls are plain)
TRAINING_MISSES = {
    "running statistics read-only": case(running_var=lambda a: read_only(a["running_var"])),
    "running statistics broadcast": case(
        running_mean=lambda a: np.lib.stride_tricks.as_strided(a["running_mean"], strides=(0,))),
    "one value per channel": case((1, 8)),
    # aliasing
    "running statistics one array": case(running_var=lambda a: a["running_mean"]),
    "running statistics interleaved": case(
        running_mean=lambda a: np.zeros(16, np.float32)[::2],
        running_var=lambda a: a["running_mean"].base[1::2]),
    "running_mean a view of x": case(x=lambda: values((4, 8)),
                                     running_mean=lambda a: a["x"][0]),
    "running_var a view of gamma": case(running_var=lambda a: a["gamma"][:]),
    "running_var a view of gamma, reversed": case(running_var=lambda a: a["gamma"][::-1]),
    "running_mean overlapping running_var": case(
        running_mean=lambda a: np.ones(12, np.float32)[:8],
        running_var=lambda a: a["running_mean"].base[4:]),
}


@pytest.mark.parametrize("training", TRAINING)
@pytest.mark.parametrize("name", NEAR_MISSES)
def test_near_misses_take_the_general_path(name, training):
    both_paths(NEAR_MISSES[name], lambda be, **a: bn(be, training=training, **a), plain=False)


@pytest.mark.parametrize("training", TRAINING)
@pytest.mark.parametrize("name", TRAINING_MISSES)
def test_training_misses_take_the_general_path(name, training):
    both_paths(TRAINING_MISSES[name], lambda be, **a: bn(be, training=training, **a),
               plain=not training)


@pytest.mark.parametrize("training, name", [
    (np.bool_(True), "a NumPy bool"), (1, "an int"), (None, "None")])
def test_training_not_a_bool(training, name):
    both_paths(case(), lambda be, **a: bn(be, training=training, **a), plain=False)


@pytest.mark.parametrize("make", [
    case(running_var=lambda a: np.array([1, 2, -1, 0, 1, 1, 1, 1], np.float32)),
    case(running_var=None, running_mean=None)], ids=["negative variance", "no statistics"])
def test_eval_refusals(make):
    both_paths(make, lambda be, **a: bn(be, training=False, **a), plain=False)


@pytest.mark.parametrize("training", TRAINING)
@pytest.mark.parametrize("std, options", [
    (np.array([1, 2, 0, 1, 1, 1, 1, 1], np.float32), {}),
    (np.array([1, 2, -0.0, 1, 1, 1, 1, 1], np.float32), {}),
    (None, {}),
    (np.ones(8, np.float32), dict(rmax=0.5)),
    (np.ones(8, np.float32), dict(rmax=float("nan"))),
    (np.ones(8, np.float32), dict(rmax=2)),
    (np.ones(8, np.float32), dict(dmax=-1.0)),
], ids=["zero std", "negative zero std", "no statistics", "rmax below 1", "rmax NaN",
        "rmax an int", "dmax negative"])
def test_batch_renorm_near_misses(std, options, training):
    make = renorm(case(running_var=std, running_mean=None if std is None else
                       (lambda a: a["running_mean"])))
    both_paths(make, lambda be, **a: brn(be, training=training, **options, **a), plain=False)


def test_outputs_of_pooled_or_streamed_memory_take_the_general_path():
    big = case((POOLED_BYTES // (4 * 8), 8))
    both_paths(big, lambda be, **a: bn(be, training=True, **a), plain=False)
    default = _cpu.stream_bytes()
    try:
        _cpu._set_stream_bytes(0)
        got = both_paths(case(), lambda be, **a: bn(be, training=True, **a),
                         plain=not _cpu.simd_enabled())
        if _cpu.simd_enabled():   # streamed stores write whole cache lines
            assert got[0].ctypes.data % 64 == 0
    finally:
        _cpu._set_stream_bytes(default)


# random calls: layouts, flags and values, plain or not; both paths agree --------------------

def _laid_out(arr, layout, axis):
    """arr's values in one of several memory layouts."""
    if layout == "channels-last":
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(arr, axis, -1)), -1, axis)
    if layout == "strided":
        wide = np.repeat(arr, 2, axis=-1)
        return wide[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(arr[::-1])[::-1]
    if layout == "read-only":
        return read_only(arr.copy())
    return arr.copy()


LAYOUTS = ["C", "channels-last", "strided", "reversed", "read-only"]
VECTOR_LAYOUTS = ["C", "strided", "reversed", "read-only"]


@st.composite
def calls(draw):
    ndim = draw(st.integers(2, 4))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    axis = draw(st.integers(-ndim, ndim - 1))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x = (values(shape, dtype, seed=draw(st.integers(0, 9))), draw(st.sampled_from(LAYOUTS)))
    c = shape[axis]
    vector = st.tuples(st.sampled_from(["gamma", "beta", "mean", "var"]),
                       st.sampled_from(VECTOR_LAYOUTS))
    layouts = dict(draw(st.lists(vector, max_size=4)))
    params = {name: None if draw(st.integers(0, 5)) == 0 else layouts.get(name, "C")
              for name in ("gamma", "beta", "mean", "var")}
    options = dict(training=draw(st.booleans()), axis=axis,
                   momentum=draw(st.sampled_from([0.0, 0.1, 1.0, 1.5, float("nan"), 0])),
                   eps=draw(st.sampled_from([1e-5, 0.0, float("inf"), 1e-3])),
                   convention=draw(st.sampled_from(["pytorch", "keras"])))
    spread = draw(st.sampled_from([1.0, 0.0, -1.0, float("nan")]))
    return x, c, params, options, spread


@given(call=calls())
def test_random_calls_agree(call):
    (arr, layout), c, params, options, spread = call
    axis = options["axis"] % arr.ndim
    per_channel = dict(gamma=np.linspace(0.5, 2.0, c), beta=np.linspace(-1.0, 1.0, c),
                       mean=np.full(c, 0.5), var=np.full(c, 2.0))
    per_channel["var"][0] = spread

    def make():
        args = dict(x=_laid_out(arr, layout, axis))
        for name, key in (("gamma", "gamma"), ("beta", "beta"), ("mean", "running_mean"),
                          ("var", "running_var")):
            if params[name] is not None:
                args[key] = _laid_out(per_channel[name].astype(arr.dtype), params[name], 0)
        return args
    plain_args, general_args = make(), make()
    plain_warned, general_warned = [], []
    got = _outcome(lambda: bn("plain-spy", **plain_args, **options), plain_warned)
    expected = _outcome(lambda: bn("plain-off", **general_args, **options), general_warned)
    _same_result(got, expected)
    _same_arguments(plain_args, general_args)
    assert plain_warned == general_warned
    if not isinstance(expected, Exception):
        dy = values(arr.shape, arr.dtype, seed=1)
        y, saved = expected
        got = _outcome(lambda: bn_backward("plain-spy", dy, general_args["x"], saved,
                                           general_args.get("gamma")))
        _same_result(got, bn_backward("plain-off", dy, general_args["x"], saved,
                                      general_args.get("gamma")))


# --- backward ----------------------------------------------------------------------------

def forward_then(make, training=True, brn_options=None, **change):
    """A factory of backward arguments: the forward (on the general path) of ``make``'s
    arguments, dy of x's shape and layout, and the forward's gamma; ``change`` replaces
    any of them (callables of the arguments made so far)."""
    def made():
        args = make()
        if brn_options is None:
            _, saved = bn("plain-off", training=training, **args)
        else:
            _, saved = brn("plain-off", training=training, **brn_options, **args)
        x = args["x"]
        grad = values(np.shape(x), np.asarray(x).dtype, seed=1)
        if isinstance(x, np.ndarray) and not x.flags.c_contiguous:
            grad = np.moveaxis(np.ascontiguousarray(np.moveaxis(grad, 1, -1)), -1, 1)
        out = dict(dy=grad, x=x, saved=saved, gamma=args.get("gamma"))
        for key, value in change.items():
            out[key] = value(out)
        return out
    return made


def bn_backward(backend, dy, x, saved, gamma, axis=None, **y):
    return normops.batch_norm_backward(dy, x, saved, gamma, axis=axis, backend=backend, **y)


def brn_backward(backend, dy, x, saved, gamma, axis=None, **y):
    return normops.batch_renorm_backward(dy, x, saved, gamma, axis=axis, backend=backend, **y)


@pytest.mark.parametrize("training", TRAINING)
@pytest.mark.parametrize("name", ["NC float32", "NC float64", "NCHW, rows", "NCHW, planes",
                                  "NCHW channels-last", "NHWC (last axis)", "no gamma, beta",
                                  "strided and reversed gamma, beta", "one channel"])
def test_plain_backward_is_the_general_one(name, training):
    make = PLAIN_FORWARD[name]
    both_paths(forward_then(make, training), bn_backward, plain=True)
    both_paths(forward_then(renorm(make), training, dict(rmax=1.5, dmax=0.5)), brn_backward,
               plain=True)


def test_plain_backward_after_a_plain_forward():
    args = case((2, 4, 3, 3), x=lambda: channels_last((2, 4, 3, 3)))()
    SPY.took.clear()
    _, saved = bn("plain-spy", training=True, **args)
    x, gamma = args["x"], args["gamma"]
    dy = values(x.shape, seed=1)
    dy_channels_last = np.moveaxis(np.ascontiguousarray(np.moveaxis(dy, 1, -1)), -1, 1)
    plain = bn_backward("plain-spy", dy_channels_last, x, saved, gamma, axis=-3)
    general = bn_backward("plain-off", dy, x, saved, gamma)
    assert SPY.took == [True, True]
    _same_result(plain, general)


def _saved_with(**fields):
    """A change of the forward's saved state (the dataclass is frozen: a copy)."""
    def change(a):
        saved = a["saved"]
        new = type(saved).__new__(type(saved))
        new.__dict__.update(vars(saved), **{k: v(saved) if callable(v) else v
                                            for k, v in fields.items()})
        return new
    return change


BACKWARD_MISSES = {
    "dy not contiguous": forward_then(case(), dy=lambda a: np.repeat(a["dy"], 2, axis=1)[:, ::2]),
    "dy C order, x channels-last": forward_then(
        case((2, 4, 3, 3), x=lambda: channels_last((2, 4, 3, 3))),
        dy=lambda a: np.ascontiguousarray(a["dy"])),
    "dy float64, x float32": forward_then(case(), dy=lambda a: a["dy"].astype(np.float64)),
    "dy byte-swapped": forward_then(case(), dy=lambda a: byte_swapped(a["dy"])),
    "dy unaligned": forward_then(case(), dy=lambda a: unaligned(a["dy"])),
    "dy another shape": forward_then(case(), dy=lambda a: a["dy"][:3]),
    "dy a list": forward_then(case(), dy=lambda a: a["dy"].tolist()),
    "x of another shape": forward_then(case(), x=lambda a: a["x"][:3], dy=lambda a: a["dy"][:3]),
}


@pytest.mark.parametrize("name", BACKWARD_MISSES)
def test_backward_near_misses_take_the_general_path(name):
    both_paths(BACKWARD_MISSES[name], bn_backward, plain=False)


@pytest.mark.parametrize("change", [
    dict(mean=lambda s: s.mean.astype(np.float32)),
    dict(invstd=lambda s: np.repeat(s.invstd, 2)[::2]),
    dict(invstd=lambda s: byte_swapped(s.invstd)),
    dict(mean=lambda s: s.mean.tolist()),
    dict(mean=lambda s: s.mean[:-1]),
    dict(axis=lambda s: np.int64(s.axis)),
    dict(axis=lambda s: s.axis - 2),
    dict(shape=lambda s: list(s.shape)),
    dict(shape=lambda s: tuple(np.int64(n) for n in s.shape)),
    dict(shape=lambda s: (4, 9)),
    dict(training=lambda s: np.bool_(s.training)),
    dict(training=1),
], ids=["mean float32", "invstd strided", "invstd byte-swapped", "mean a list", "mean short",
        "axis a NumPy int", "axis negative", "shape a list", "shape of NumPy ints",
        "shape another", "training a NumPy bool", "training an int"])
def test_saved_state_near_misses(change):
    both_paths(forward_then(case()), lambda be, **a: bn_backward(
        be, **dict(a, saved=_saved_with(**change)(a))), plain=False)


class SavedSubclass(BatchNormSaved):
    pass


def _saved_as(kind, drop=()):
    """The forward's saved state as an instance of ``kind``, without the fields ``drop``."""
    def change(a):
        new = kind.__new__(kind)
        new.__dict__.update({k: v for k, v in vars(a["saved"]).items() if k not in drop})
        return new
    return change


@pytest.mark.parametrize("change", [_saved_as(SavedSubclass), _saved_as(BatchNormSaved, ("mean",))],
                         ids=["a subclass", "without its mean"])
def test_saved_state_of_another_form(change):
    both_paths(forward_then(case()), lambda be, **a: bn_backward(be, **dict(a, saved=change(a))),
               plain=False)


def test_read_only_saved_arrays_are_plain():
    make = forward_then(case())
    change = _saved_with(mean=lambda s: read_only(s.mean.copy()))
    both_paths(make, lambda be, **a: bn_backward(be, **dict(a, saved=change(a))), plain=True)


@pytest.mark.parametrize("axis, plain", [(1, True), (-1, True), (0, False), (np.int64(1), False),
                                         (5, False)])
def test_backward_axis(axis, plain):
    both_paths(forward_then(case()), lambda be, **a: bn_backward(be, axis=axis, **a), plain=plain)


def test_backward_gamma_near_misses():
    for gamma in (np.ones(8, np.float64), np.ones(8, np.float32).tolist(), np.ones(7, np.float32)):
        both_paths(forward_then(case()), lambda be, **a: bn_backward(be, **dict(a, gamma=gamma)),
                   plain=False)


def test_a_saved_state_of_the_other_op():
    bn_saved = forward_then(case())
    both_paths(bn_saved, brn_backward, plain=False)
    brn_saved = forward_then(renorm(case()), brn_options=dict(rmax=2.0, dmax=1.0))
    both_paths(brn_saved, bn_backward, plain=False)


def test_batch_renorm_eval_saved_with_r_and_d():
    make = forward_then(renorm(case()), training=False, brn_options={})

    def with_r_d(be, saved, **a):
        saved = _saved_with(r=np.ones(8), d=np.zeros(8))(dict(saved=saved))
        return brn_backward(be, saved=saved, **a)
    both_paths(make, with_r_d, plain=False)


# --- beyond the cpu backend's plain ops ----------------------------------------------------

def test_half_dtypes_take_the_general_path():
    both_paths(case(dtype=np.float16), lambda be, **a: bn(be, **a), plain=False)
    ml_dtypes = pytest.importorskip("ml_dtypes")
    both_paths(case(dtype=ml_dtypes.bfloat16), lambda be, **a: bn(be, **a), plain=False)


def test_only_the_cpu_backend_has_plain_ops():
    for name in ("reference", "array-api", "torch", "cupy"):
        info = {i.name: i for i in normops.backends()}[name]
        if info.available:
            backend = normops.get_backend(name)
            assert all(getattr(backend, op, None) is None for op in PLAIN_OPS), name


def test_layer_steps_agree():
    SPY.took.clear()
    layers = [normops.layers.BatchNorm(8, backend=name) for name in ("plain-spy", "plain-off")]
    x, dy = values((4, 8)), values((4, 8), seed=1)
    for training in (True, False, True):
        outputs = []
        for layer in layers:
            layer.train(training)
            outputs.append((layer.forward(x), layer.backward(dy), layer.running_mean.copy(),
                            layer.running_var.copy()))
        for i, (a, b) in enumerate(zip(*outputs)):
            _same_array(a, b, f"step output {i}")
    assert SPY.took and all(SPY.took)


# --- the fused epilogue (residual, relu) ------------------------------------------------

def like_x(args, seed=2):
    """An array of x's values' shape and dtype laid out as x (C order or channels-last)."""
    x = args["x"]
    z = values(x.shape, x.dtype, seed)
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(z, 1, -1)), -1, 1) \
        if not x.flags.c_contiguous else z


EPILOGUES = {"residual and relu": (True, "relu"), "relu alone": (False, "relu"),
             "residual alone": (True, None)}


def fused(make, with_residual, residual=like_x):
    """``make``'s BN arguments with a residual (made by ``residual`` from them)."""
    return case(x=lambda: make()["x"], **{k: v for k, v in make().items() if k != "x"},
                **({"residual": residual} if with_residual else {}))


@pytest.mark.parametrize("training", TRAINING)
@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("name", ["NC float32", "NC float64", "NCHW, rows", "NCHW, planes",
                                  "NCHW channels-last", "NHWC (last axis)", "no gamma, beta",
                                  "strided running statistics"])
def test_plain_fused_ops_are_the_general_ones(name, epilogue, training):
    with_residual, activation = EPILOGUES[epilogue]
    make = fused(PLAIN_FORWARD[name], with_residual)
    both_paths(make, lambda be, **a: bn(be, training=training, activation=activation, **a),
               plain=True)
    both_paths(renorm(make), lambda be, **a: brn(be, training=training, rmax=1.5, dmax=0.5,
                                                 activation=activation, **a), plain=True)

    def backward_args():
        args = make()
        y, saved = bn("plain-off", training=training, activation=activation, **args)
        x = args["x"]
        return dict(dy=like_x(args, seed=3), x=x, saved=saved, gamma=args.get("gamma"), y=y)
    result = both_paths(backward_args, bn_backward, plain=True)
    assert len(result) == (4 if with_residual else 3)


FUSED_MISSES = {
    "residual in another layout than x": case((2, 3, 5, 5), residual=lambda a: np.asfortranarray(
        values((2, 3, 5, 5), seed=2))),
    "residual reversed": case(residual=lambda a: values((4, 8), seed=2)[::-1]),
    "residual a list": case(residual=lambda a: values((4, 8), seed=2).tolist()),
    "residual float64 with float32 x": case(residual=lambda a: values((4, 8), np.float64)),
    "residual of another shape": case(residual=lambda a: values((4, 9))),
    "residual byte-swapped": case(residual=lambda a: byte_swapped(values((4, 8), seed=2))),
    "residual unaligned": case(residual=lambda a: unaligned(values((4, 8), seed=2))),
    "residual sharing memory with running_mean": case(
        residual=lambda a: np.zeros(40, np.float32)[:32].reshape(4, 8),
        running_mean=lambda a: a["residual"].base[28:36]),
    "residual holding running_var": case(
        running_var=lambda a: np.ones(32, np.float32)[8:16],
        residual=lambda a: a["running_var"].base.reshape(4, 8)),
}


@pytest.mark.parametrize("activation", [None, "relu", "ReLU", 1, np.str_("relu")])
@pytest.mark.parametrize("training", TRAINING)
@pytest.mark.parametrize("name", FUSED_MISSES)
def test_fused_near_misses_take_the_general_path(name, training, activation):
    # a residual that overlaps a running statistic is an error only where they are written
    overlaps = name in ("residual sharing memory with running_mean", "residual holding running_var")
    plain = overlaps and not training and (activation is None or type(activation) is str
                                           and activation == "relu")
    both_paths(FUSED_MISSES[name], lambda be, **a: bn(be, training=training,
                                                      activation=activation, **a), plain=plain)


@pytest.mark.parametrize("activation", ["gelu", "ReLU", 0, np.str_("relu")])
def test_activations_other_than_none_and_relu_take_the_general_path(activation):
    both_paths(case(), lambda be, **a: bn(be, activation=activation, **a), plain=False)


def _fused_backward(activation, with_residual, **change):
    def made():
        args = case((2, 3, 4, 4))()
        if with_residual:
            args["residual"] = values((2, 3, 4, 4), seed=2)
        y, saved = bn("plain-off", training=True, activation=activation, **args)
        out = dict(dy=values((2, 3, 4, 4), seed=3), x=args["x"], saved=saved,
                   gamma=args["gamma"], y=y)
        for key, value in change.items():
            out[key] = value(out)
        return out
    return made


@pytest.mark.parametrize("name, activation, with_residual, change", [
    ("no y after relu", "relu", True, dict(y=lambda a: None)),
    ("y in Fortran order", "relu", False, dict(y=lambda a: np.asfortranarray(a["y"]))),
    ("y a list", "relu", True, dict(y=lambda a: a["y"].tolist())),
    ("y of another dtype", "relu", True, dict(y=lambda a: a["y"].astype(np.float64))),
    ("y of another shape", "relu", False, dict(y=lambda a: a["y"][:1])),
    ("y without an activation, in another layout", None, True,
     dict(y=lambda a: np.asfortranarray(a["y"]))),
    ("dy reversed", "relu", True, dict(dy=lambda a: a["dy"][::-1])),
    ("saved.activation unknown", "relu", True,
     dict(saved=lambda a: _saved_with(activation="gelu")(a))),
    ("saved.residual not a bool", "relu", True,
     dict(saved=lambda a: _saved_with(residual=1)(a))),
])
def test_fused_backward_near_misses_take_the_general_path(name, activation, with_residual, change):
    both_paths(_fused_backward(activation, with_residual, **change), bn_backward, plain=False)
