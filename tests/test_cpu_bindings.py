"""The cpu backend's bindings (_cpu.forward/backward) check every array they hand the C
kernels: a wrong dtype, shape, layout or a read-only output raises, never reaches C."""
import numpy as np
import pytest

from normops._backends import _cpu

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
                                 "byte-swapped gamma", "misaligned beta"])
def test_per_channel_arrays_are_checked(bad):
    x, p = arrays()
    if bad == "float64 gamma":
        p["gamma"] = p["gamma"].astype(np.float64)
    elif bad == "byte-swapped gamma":   # same type number as float32, other bytes
        p["gamma"] = p["gamma"].astype(">f4")
    elif bad == "misaligned beta":
        p["beta"] = np.zeros(4 * C + 1, np.uint8)[1:].view(np.float32)
        assert not p["beta"].flags.aligned
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


@pytest.mark.parametrize("bad", ["float16", "2-D", "non-contiguous", "empty", "byte-swapped"])
def test_x_is_checked(bad):
    _, p = arrays()
    x = {"float16": np.zeros((4, C, 3), np.float16), "2-D": np.zeros((4, C), np.float32),
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
