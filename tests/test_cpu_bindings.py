"""The cpu backend's bindings (_cpu.forward/backward) check every array they hand the C
kernels: a wrong dtype, shape, layout or a read-only output raises, never reaches C."""
import numpy as np
import pytest

from normops._backends import _cpu
from memory import unaligned

C = 5


def arrays(dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, C, 3)).astype(dtype)
    per_channel = {name: np.ones(C, dtype) for name in ("gamma", "beta", "rm", "rv")}
    return x, per_channel


def forward_eval(x, y, gamma, beta, rm, rv, mean=None, invstd=None):
    mean = np.empty(C) if mean is None else mean
    invstd = np.empty(C) if invstd is None else invstd
    _cpu.forward(x, y, "bn_eval", gamma, beta, rm, rv, eps=1e-5, mean=mean, invstd=invstd)


def test_well_formed_arguments_run():
    x, p = arrays()
    y = np.empty_like(x)
    forward_eval(x, y, p["gamma"], p["beta"], p["rm"], p["rv"])
    # gamma = beta = running mean = running var = 1
    np.testing.assert_allclose(y, (x - 1) / np.sqrt(1 + 1e-5) + 1, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", ["float64 gamma", "short gamma", "2-D beta", "list rv",
                                 "byte-swapped gamma"])
def test_per_channel_arrays_are_checked(bad):
    x, p = arrays()
    if bad == "float64 gamma":
        p["gamma"] = p["gamma"].astype(np.float64)
    elif bad == "byte-swapped gamma":   # same type number as float32, other bytes
        p["gamma"] = p["gamma"].astype(">f4")
    elif bad == "short gamma":
        p["gamma"] = p["gamma"][:-1]
    elif bad == "2-D beta":
        p["beta"] = p["beta"].reshape(1, C)
    else:
        p["rv"] = p["rv"].tolist()
    with pytest.raises((TypeError, ValueError)):
        forward_eval(x, np.empty_like(x), p["gamma"], p["beta"], p["rm"], p["rv"])


@pytest.mark.parametrize("bad", ["read-only", "float64", "other shape", "non-contiguous"])
def test_the_output_is_checked(bad):
    x, p = arrays()
    y = np.empty_like(x)
    if bad == "read-only":
        y.flags.writeable = False
    elif bad == "float64":
        y = y.astype(np.float64)
    elif bad == "other shape":
        y = np.empty((4, C, 2), np.float32)
    else:
        y = np.empty((4, C, 6), np.float32)[:, :, ::2]
    with pytest.raises(ValueError):
        forward_eval(x, y, p["gamma"], p["beta"], p["rm"], p["rv"])


@pytest.mark.parametrize("bad", ["int16", "2-D", "non-contiguous", "empty", "byte-swapped",
                                 "float16 with float64 parameters"])
def test_x_is_checked(bad):
    _, p = arrays(np.float64 if bad.startswith("float16") else np.float32)
    x = {"int16": np.zeros((4, C, 3), np.int16), "2-D": np.zeros((4, C), np.float32),
         "float16 with float64 parameters": np.zeros((4, C, 3), np.float16),
         "byte-swapped": np.zeros((4, C, 3), ">f4"),
         "non-contiguous": np.zeros((4, C, 6), np.float32)[:, :, ::2],
         "empty": np.zeros((0, C, 3), np.float32)}[bad]
    with pytest.raises((TypeError, ValueError)):
        forward_eval(x, np.empty_like(x), p["gamma"], p["beta"], p["rm"], p["rv"])


def test_written_per_channel_outputs_must_be_writeable_float64():
    x, p = arrays()
    frozen = np.empty(C)
    frozen.flags.writeable = False
    with pytest.raises(ValueError):
        forward_eval(x, np.empty_like(x), p["gamma"], p["beta"], p["rm"], p["rv"], invstd=frozen)
    with pytest.raises(ValueError):
        forward_eval(x, np.empty_like(x), p["gamma"], p["beta"], p["rm"], p["rv"],
                     mean=np.empty(C, np.float32))


def test_training_writes_running_statistics_only_when_writeable():
    x, p = arrays()
    p["rv"].flags.writeable = False
    with pytest.raises(ValueError, match="running_spread"):
        _cpu.forward(x, np.empty_like(x), "bn_train", p["gamma"], p["beta"], p["rm"], p["rv"],
                     eps=1e-5, momentum=0.1, mean=np.empty(C), invstd=np.empty(C))


def test_backward_checks_dy_and_the_gradient_outputs():
    x, p = arrays()
    saved = dict(mean=np.zeros(C), invstd=np.ones(C))
    good = dict(dgamma=np.empty(C, np.float32), dbeta=np.empty(C, np.float32))
    _cpu.backward(x, x, np.empty_like(x), "fused", gamma=p["gamma"], **saved, **good)
    with pytest.raises(ValueError):   # dy of another shape
        _cpu.backward(x[:, :, :2].copy(), x, np.empty_like(x), "fused", **saved, **good)
    with pytest.raises(ValueError):   # dgamma of the wrong dtype
        _cpu.backward(x, x, np.empty_like(x), "fused", **saved,
                      dgamma=np.empty(C), dbeta=good["dbeta"])
    with pytest.raises(ValueError):   # saved mean too short
        _cpu.backward(x, x, np.empty_like(x), "fused", mean=np.zeros(C - 1),
                      invstd=saved["invstd"], **good)


def test_unaligned_arrays_that_are_only_read_are_copied():
    x, p = arrays()
    expected, got = np.empty_like(x), np.empty_like(x)
    p["beta"] = np.linspace(-1, 1, C, dtype=np.float32)
    forward_eval(x, expected, p["gamma"], p["beta"], p["rm"], p["rv"])
    forward_eval(x, got, p["gamma"], unaligned(p["beta"]), p["rm"], unaligned(p["rv"]))
    assert got.tobytes() == expected.tobytes()


def test_unaligned_or_misshapen_written_arrays_are_refused():
    x, p = arrays()
    with pytest.raises(ValueError, match="running_mean is written"):
        _cpu.forward(x, np.empty_like(x), "bn_train", running_mean=unaligned(p["rm"]),
                     running_spread=p["rv"], mean=np.empty(C), invstd=np.empty(C))
    with pytest.raises(ValueError, match="running_spread is written"):   # broadcast, C > 1
        _cpu.forward(x, np.empty_like(x), "bn_train", running_mean=p["rm"],
                     running_spread=np.broadcast_to(np.ones(1, np.float32), (C,)),
                     mean=np.empty(C), invstd=np.empty(C))
    with pytest.raises(ValueError, match="y must be an aligned"):
        forward_eval(x, unaligned(x), p["gamma"], p["beta"], p["rm"], p["rv"])


def test_a_single_channel_may_be_written_through_a_zero_stride():
    x = np.random.default_rng(1).standard_normal((6, 1, 2)).astype(np.float32)
    rm, rv = np.zeros(()), np.ones(())
    rm32, rv32 = rm.astype(np.float32)[None], rv.astype(np.float32)[None]
    assert rm32.strides == (0,) and rm32.flags.writeable
    _cpu.forward(x, np.empty_like(x), "bn_train", running_mean=rm32, running_spread=rv32,
                 momentum=1.0, eps=1e-5, mean=np.empty(1), invstd=np.empty(1))
    assert rm32[0] == pytest.approx(float(x.mean()), abs=1e-6)


FORWARD_MODES = {          # mode: (arguments it needs, one of which each case leaves out)
    "stats": ("mean", "m2"), "affine": ("a", "b"), "bn_train": ("mean", "invstd"),
    "bn_eval": ("running_mean", "running_spread", "mean", "invstd"),
    "brn_train": ("running_mean", "running_spread", "mean", "invstd", "r", "d"),
    "brn_eval": ("running_mean", "running_spread", "mean", "invstd"),
}


@pytest.mark.parametrize("mode,left_out", [(m, a) for m, need in FORWARD_MODES.items() for a in need])
def test_each_forward_mode_refuses_a_missing_array(mode, left_out):
    x, p = arrays()
    given = {"mean": np.empty(C), "m2": np.empty(C), "invstd": np.empty(C), "r": np.empty(C),
             "d": np.empty(C), "a": np.ones(C), "b": np.zeros(C), "running_mean": p["rm"],
             "running_spread": p["rv"]}
    needed = {name: given[name] for name in FORWARD_MODES[mode] if name != left_out}
    y = None if mode == "stats" else np.empty_like(x)
    with pytest.raises(ValueError, match=f"mode '{mode}' needs"):
        _cpu.forward(x, y, mode, eps=1e-5, **needed)


def test_bn_train_refuses_one_running_statistic_without_the_other():
    x, p = arrays()
    with pytest.raises(ValueError, match="together"):
        _cpu.forward(x, np.empty_like(x), "bn_train", running_mean=p["rm"], eps=1e-5,
                     mean=np.empty(C), invstd=np.empty(C))


@pytest.mark.parametrize("mode,left_out", [
    ("grad_stats", "mean"), ("grad_stats", "sum_dy"), ("grad_stats", "sum_dy_xmu"),
    ("grad_input", "p"), ("grad_input", "q"), ("grad_input", "s"),
    ("fused", "mean"), ("fused", "invstd"), ("fused", "dgamma"), ("fused", "dbeta")])
def test_each_backward_mode_refuses_a_missing_array(mode, left_out):
    x, _ = arrays()
    given = {"grad_stats": {"mean": np.zeros(C), "sum_dy": np.empty(C), "sum_dy_xmu": np.empty(C)},
             "grad_input": {"p": np.ones(C), "q": np.ones(C), "s": np.ones(C)},
             "fused": {"mean": np.zeros(C), "invstd": np.ones(C),
                       "dgamma": np.empty(C, np.float32), "dbeta": np.empty(C, np.float32)}}[mode]
    del given[left_out]
    dx = None if mode == "grad_stats" else np.empty_like(x)
    with pytest.raises(ValueError, match=f"mode '{mode}' needs"):
        _cpu.backward(x, x, dx, mode, **given)


def test_none_for_x_or_dy_is_a_type_error():
    x, p = arrays()
    with pytest.raises(TypeError):
        forward_eval(None, np.empty_like(x), p["gamma"], p["beta"], p["rm"], p["rv"])
    with pytest.raises(TypeError):
        _cpu.backward(None, x, np.empty_like(x), "fused", mean=np.zeros(C), invstd=np.ones(C),
                      dgamma=np.empty(C, np.float32), dbeta=np.empty(C, np.float32))
