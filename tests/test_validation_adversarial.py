"""Odd inputs to every public op on every backend: each one is either accepted, with the
result of the same values given plainly, or refused by the validation layer with a
TypeError or ValueError that names the argument (never a message of the bindings), the
same on every backend."""
import dataclasses

import numpy as np
import pytest

import normops
from conftest import BACKENDS   # the backends that take NumPy arrays
from memory import unaligned

C = 3
OK = None


# -- odd forms of the same per-channel values -------------------------------------------
def record_field(v):
    """A field of a record array: its stride is not a multiple of its itemsize."""
    rec = np.zeros(v.shape, dtype=[("v", v.dtype), ("pad", "i1")])
    rec["v"] = v
    return rec["v"]


def zero_stride(v):
    """One writeable element seen C times."""
    return np.lib.stride_tricks.as_strided(v[:1].copy(), v.shape, (0,))


def overlapping(v):
    """C elements each starting half an element after the one before (every byte is
    0x3f, so each reads as the same small positive number)."""
    buf = np.full((v.size + 1) * v.itemsize, 0x3F, np.uint8)
    return np.ndarray(v.shape, v.dtype, buf, strides=(v.itemsize // 2,))


def read_only(v):
    v = v.copy()
    v.flags.writeable = False
    return v


FORMS = {
    "list": lambda v: v.tolist(),
    "strings": lambda v: ["a"] * v.size,
    "ragged": lambda v: [v.tolist(), [1.0]],
    "dict": lambda v: {},
    "string": lambda v: "abc",
    "0-d": lambda v: np.array(v[0]),
    "short": lambda v: v[:-1].copy(),
    "2-d": lambda v: v[None].copy(),
    "int": lambda v: v.astype(np.int64),
    "bool": lambda v: v.astype(bool),
    "complex": lambda v: v.astype(np.complex128),
    "object": lambda v: v.astype(object),
    "float16": lambda v: v.astype(np.float16),
    "float32": lambda v: v.astype(np.float32),
    "longdouble": lambda v: v.astype(np.longdouble),
    "masked": lambda v: np.ma.masked_array(v),
    "byte-swapped": lambda v: v.astype(v.dtype.newbyteorder()),
    "record field": record_field,
    "unaligned": unaligned,
    "reversed": lambda v: v[::-1].copy()[::-1],
    "zero stride": zero_stride,
    "overlapping": overlapping,
    "read-only": read_only,
    "broadcast": lambda v: np.broadcast_to(v[:1], v.shape),
}
# what each form is taken as: a parameter (gamma, beta) or a running statistic only read
# (eval mode), a running statistic written in place (training), a saved-state array
PARAM, READ, WRITE, SAVED = range(4)
A, T, V = OK, TypeError, ValueError   # accepted, or refused with one of these
EXPECT = {                   # PARAM, READ, WRITE, SAVED
    "list":                   (A, A, T, T),
    "strings":                (V, V, T, T),
    "ragged":                 (V, V, T, T),
    "dict":                   (T, T, T, T),
    "string":                 (V, V, T, T),
    "0-d":                    (V, V, V, V),
    "short":                  (V, V, V, V),
    "2-d":                    (V, V, V, V),
    "int":                    (T, T, T, T),
    "bool":                   (T, T, T, T),
    "complex":                (T, T, T, T),
    "object":                 (T, T, T, T),
    "float16":                (T, T, T, A),
    "float32":                (T, T, T, A),   # x is float64
    "longdouble":             (T, T, T, T),
    "masked":                 (T, T, T, T),
    "byte-swapped":           (A, A, A, A),
    "record field":           (A, A, A, A),
    "unaligned":              (A, A, A, A),
    "reversed":               (A, A, A, A),
    "zero stride":            (A, A, V, A),
    "overlapping":            (A, A, V, A),
    "read-only":              (A, A, V, A),
    "broadcast":              (A, A, V, A),
}
if np.dtype(np.longdouble) == np.float64:   # platforms where long double is double
    EXPECT["longdouble"] = (A, A, A, A)


def values():
    return np.linspace(0.5, 2.0, C)   # distinct per channel, and positive: any statistic


def inputs(renorm):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, C, 2))
    spread = "running_std" if renorm else "running_var"
    return dict(x=x, gamma=values(), beta=values() - 1.0, running_mean=values() - 1.0,
                **{spread: values()})


def forward(renorm, backend, **args):
    op = normops.batch_renorm if renorm else normops.batch_norm
    return op(backend=backend, **args)


def outcome(call):
    """Per backend: ("ok", result) or (exception type, message)."""
    out = {}
    for backend in BACKENDS:
        try:
            out[backend] = ("ok", call(backend))
        except Exception as exc:   # which exception it is, is what is tested
            out[backend] = (type(exc), str(exc))
    return out


def assert_outcome(out, expected, name, plain=None):
    """Every backend refused with ``expected`` naming ``name``, with one message; or
    (``expected`` None) every backend accepted, with the result ``plain(backend)`` gives
    for the same values given plainly."""
    kinds = {backend: kind for backend, (kind, _) in out.items()}
    if expected is None:
        assert set(kinds.values()) == {"ok"}, out
        for backend, (_, result) in out.items():
            for got, want in zip(result, plain(backend), strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        return
    messages = {message for _, message in out.values()}
    assert set(kinds.values()) == {expected} and len(messages) == 1, out
    message = messages.pop()
    assert name in message and not message.startswith("normops._cpu"), message


# -- per-channel arguments of the forward ops -------------------------------------------
FORWARD_CASES = [(renorm, training, name, form)
                 for renorm in (False, True) for training in (True, False)
                 for name in ("gamma", "beta", "running_mean",
                              "running_std" if renorm else "running_var")
                 for form in FORMS]


@pytest.mark.parametrize("renorm, training, name, form", FORWARD_CASES)
def test_forward_per_channel_forms(renorm, training, name, form):
    role = PARAM if name in ("gamma", "beta") else WRITE if training else READ
    plain = inputs(renorm)[name]

    def call(backend, convert=lambda v: v):
        given = {**inputs(renorm), name: convert(FORMS[form](plain))}
        y, saved = forward(renorm, backend, training=training, **given)
        # a running statistic written is updated in place, whatever its form
        return (y, saved.mean, saved.invstd) + ((np.array(given[name]),) if role == WRITE else ())

    assert_outcome(outcome(call), EXPECT[form][role], name,
                   lambda backend: call(backend, lambda v: np.array(v, np.float64)))


def test_written_running_statistics_odd_forms_are_updated_in_place():
    # a field of a record array and a byte-swapped array: the kernels update a copy,
    # which is written back into the caller's array, leaving the rest of the record alone
    x = np.random.default_rng(1).normal(size=(5, C))
    for backend in BACKENDS:
        rec = np.zeros(C, dtype=[("mean", "f8"), ("tag", "i1")])
        rec["tag"] = 7
        var = np.ones(C, ">f8")
        normops.batch_norm(x, None, None, rec["mean"], var, momentum=1.0, backend=backend)
        np.testing.assert_allclose(rec["mean"], x.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(var, x.var(axis=0, ddof=1), rtol=1e-12)
        assert (rec["tag"] == 7).all() and var.dtype == np.dtype(">f8")


# -- x, dy and the scalar arguments -----------------------------------------------------
X_FORMS = {
    "0-d": (lambda x: np.array(1.0), V), "1-d": (lambda x: x[0, :, 0].copy(), V),
    "empty": (lambda x: x[:0], V), "int": (lambda x: x.astype(int), T),
    "bool": (lambda x: x > 0, T), "complex": (lambda x: x.astype(complex), T),
    "float16": (lambda x: x.astype(np.float16), T), "object": (lambda x: x.astype(object), T),
    "strings": (lambda x: np.full(x.shape, "a").tolist(), T), "dict": (lambda x: {}, T),
    "None": (lambda x: None, T), "ragged": (lambda x: [[1.0, 2.0], [3.0]], V),
    "masked": (lambda x: np.ma.masked_less(x, 0.0), T),
    "list": (lambda x: x.tolist(), OK), "byte-swapped": (lambda x: x.astype(x.dtype.newbyteorder()), OK),
    "record field": (record_field, OK), "unaligned": (unaligned, OK),
    "strided": (lambda x: np.repeat(x, 2, axis=2)[..., ::2], OK), "read-only": (read_only, OK),
}


@pytest.mark.parametrize("renorm", [False, True])
@pytest.mark.parametrize("form", X_FORMS)
def test_x_forms(renorm, form):
    make, expected = X_FORMS[form]

    def call(backend, convert=make):
        args = inputs(renorm)
        return forward(renorm, backend, **{**args, "x": convert(args["x"])})[:1]

    assert_outcome(outcome(call), expected, "x", lambda backend: call(backend, lambda x: x))


SCALARS = [
    ("momentum", None, T), ("momentum", "0.1", T), ("momentum", [0.1], T),
    ("momentum", np.array([0.1]), T), ("momentum", 0.1j, T), ("momentum", True, T),
    ("momentum", 10**400, V), ("momentum", -10**400, V), ("momentum", float("nan"), V),
    ("momentum", 1.5, V), ("momentum", np.float32(0.25), OK), ("momentum", np.array(0.25), OK),
    ("momentum", 1, OK), ("eps", float("inf"), V), ("eps", 0, V), ("eps", 10**400, V),
    ("eps", np.float16(1e-3), OK), ("eps", {}, T),
    ("axis", 10**30, V), ("axis", -10**30, V), ("axis", 1.0, T), ("axis", "1", T),
    ("axis", None, T), ("axis", True, T), ("axis", [1], T), ("axis", np.int64(1), OK),
    ("axis", np.array(-2), OK),
    ("training", 1, T), ("training", "yes", T), ("training", None, T), ("training", np.True_, OK),
    ("convention", None, V), ("convention", np.array(["keras"]), V), ("convention", "tf", V),
    ("rmax", 0.5, V), ("rmax", float("inf"), OK), ("rmax", "3", T), ("dmax", -1, V),
    ("dmax", np.int8(2), OK), ("dmax", float("nan"), V),
]


@pytest.mark.parametrize("name, value, expected", SCALARS, ids=lambda v: repr(v)[:20])
def test_scalar_arguments(name, value, expected):
    renorm = name in ("rmax", "dmax")

    def call(backend, given=value):
        return forward(renorm, backend, **{**inputs(renorm), name: given})[:1]

    plain = value if isinstance(value, str) else np.asarray(value).item()   # a Python scalar
    assert_outcome(outcome(call), expected, name, lambda backend: call(backend, plain))


# -- the backward ops: dy, gamma, axis and every field of the saved state --------------
def backward(renorm, backend, dy, x, saved, gamma=None, **kwargs):
    op = normops.batch_renorm_backward if renorm else normops.batch_norm_backward
    return op(dy, x, saved, gamma, backend=backend, **kwargs)


def forward_state(renorm, training):
    args = inputs(renorm)
    y, saved = forward(renorm, "reference", training=training, **args)
    return args["x"], np.cos(args["x"]), args["gamma"], saved


SAVED_FIELDS = [(renorm, training, field, form) for renorm in (False, True)
                for training in (True, False)
                for field in (("mean", "invstd") + (("r", "d") if renorm and training else ()))
                for form in FORMS]


@pytest.mark.parametrize("renorm, training, field, form", SAVED_FIELDS)
def test_saved_array_forms(renorm, training, field, form):
    x, dy, gamma, saved = forward_state(renorm, training)
    odd = FORMS[form](getattr(saved, field))
    given = dataclasses.replace(saved, **{field: odd})
    assert_outcome(outcome(lambda backend: backward(renorm, backend, dy, x, given, gamma)),
                   EXPECT[form][SAVED], f"saved.{field}",
                   lambda backend: backward(renorm, backend, dy, x, dataclasses.replace(
                       saved, **{field: np.array(odd, np.float64)}), gamma))
    assert getattr(given, field) is odd   # the caller's state is left alone


@pytest.mark.parametrize("renorm", [False, True])
@pytest.mark.parametrize("field, value, expected", [
    ("axis", 1.0, T), ("axis", "1", T), ("axis", None, T), ("axis", True, T),
    ("axis", -1, V), ("axis", 3, V), ("axis", np.int64(1), OK),
    ("training", 1, T), ("training", None, T), ("training", "yes", T),
    ("shape", [4, C, 2], T), ("shape", (4.0, C, 2), T), ("shape", None, T), ("shape", "43", T),
    ("shape", (4, C), V), ("shape", tuple(np.array([4, C, 2])), OK),
], ids=lambda v: repr(v)[:20])
def test_saved_scalar_fields(renorm, field, value, expected):
    x, dy, gamma, saved = forward_state(renorm, True)
    given = dataclasses.replace(saved, **{field: value})
    assert_outcome(outcome(lambda backend: backward(renorm, backend, dy, x, given, gamma)),
                   expected, "saved",
                   lambda backend: backward(renorm, backend, dy, x, saved, gamma))


def test_saved_r_and_d_are_arrays_in_training_and_unused_in_eval():
    x, dy, gamma, saved = forward_state(True, True)
    for field in ("r", "d"):
        without = dataclasses.replace(saved, **{field: None})
        assert_outcome(outcome(lambda backend: backward(True, backend, dy, x, without, gamma)),
                       TypeError, f"saved.{field}")
    # eval mode has no r and d: arrays there are checked (and named), then not used
    x, dy, gamma, saved = forward_state(True, False)
    with_rd = dataclasses.replace(saved, r=np.full(C, 2.0), d=np.ones(C))
    assert_outcome(outcome(lambda backend: backward(True, backend, dy, x, with_rd, gamma)),
                   None, "", lambda backend: backward(True, backend, dy, x, saved, gamma))
    bad = dataclasses.replace(saved, r=np.ones(C + 1))
    assert_outcome(outcome(lambda backend: backward(True, backend, dy, x, bad, gamma)),
                   ValueError, "saved.r")


@pytest.mark.parametrize("renorm", [False, True])
@pytest.mark.parametrize("form", FORMS)
def test_backward_gamma_forms(renorm, form):
    x, dy, gamma, saved = forward_state(renorm, True)

    def call(backend, convert=lambda v: v):
        return backward(renorm, backend, dy, x, saved, convert(FORMS[form](gamma)))

    assert_outcome(outcome(call), EXPECT[form][PARAM], "gamma",
                   lambda backend: call(backend, lambda v: np.array(v, np.float64)))


@pytest.mark.parametrize("renorm", [False, True])
@pytest.mark.parametrize("form", X_FORMS)
def test_backward_dy_forms(renorm, form):
    make, expected = X_FORMS[form]
    x, dy, gamma, saved = forward_state(renorm, True)
    assert_outcome(outcome(lambda backend: backward(renorm, backend, make(dy), x, saved, gamma)),
                   expected, "dy", lambda backend: backward(renorm, backend, dy, x, saved, gamma))


@pytest.mark.parametrize("axis, expected", [(10**30, V), (1.0, T), ("1", T), (True, T),
                                            (-2, OK), (np.int64(1), OK), (0, V)])
def test_backward_axis(axis, expected):
    x, dy, gamma, saved = forward_state(False, True)
    assert_outcome(outcome(lambda backend: backward(False, backend, dy, x, saved, gamma,
                                                    axis=axis)),
                   expected, "axis", lambda backend: backward(False, backend, dy, x, saved, gamma))


@pytest.mark.skipif("cpu" not in BACKENDS, reason="the cpu backend's extension is not built")
def test_public_kernels_name_their_arguments():
    # plugin authors call a backend's four kernels directly
    kernels = normops.get_backend("cpu")
    x3 = np.ones((2, C, 4))
    cases = [
        (lambda: kernels.batch_stats(np.ones((2, C))), ValueError, "x"),
        (lambda: kernels.batch_stats(x3.astype(int)), TypeError, "x"),
        (lambda: kernels.scale_shift(x3, np.ones(C - 1), np.ones(C)), ValueError, "a"),
        (lambda: kernels.scale_shift(x3, np.ones(C), ["a"] * C), TypeError, "b"),
        (lambda: kernels.grad_stats(np.ones((2, C, 5)), x3, np.ones(C)), ValueError, "dy"),
        (lambda: kernels.grad_stats(x3, x3, np.ones((1, C))), ValueError, "mean"),
        (lambda: kernels.grad_input(x3, x3, np.ones(C), None, np.ones(C)), TypeError, "q"),
    ]
    for call, error, name in cases:
        with pytest.raises(error, match=rf"^{name} ") as info:
            call()
        assert not str(info.value).startswith("normops._cpu")
    # valid but not as the bindings take it: converted
    count, mean, m2 = kernels.batch_stats(x3.astype(">f8")[:, :, ::-1])
    assert count == 8 and np.array_equal(mean, np.ones(C)) and np.array_equal(m2, np.zeros(C))
    y = kernels.scale_shift(x3, [1, 2, 3], np.zeros(C, ">f8"))
    np.testing.assert_array_equal(y[0, :, 0], [1.0, 2.0, 3.0])


@pytest.mark.skipif("cpu" not in BACKENDS, reason="the cpu backend's extension is not built")
@pytest.mark.parametrize("setter, value, error, name", [
    (normops.set_num_threads, 10**30, ValueError, "set_num_threads"),
    (normops.set_num_threads, 1.5, TypeError, "n"),
    (normops.set_num_threads, "2", TypeError, "n"),
    (normops.set_output_cache, 10**30, ValueError, "max_bytes"),
    (normops.set_output_cache, 2.0, TypeError, "max_bytes"),
], ids=lambda v: repr(v)[:20])
def test_cpu_settings_reach_the_bindings_checked(setter, value, error, name):
    with pytest.raises(error, match=rf"^{name} ") as info:
        setter(value)
    assert not str(info.value).startswith("normops._cpu")
