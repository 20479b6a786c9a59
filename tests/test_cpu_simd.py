"""The cpu backend's AVX2 + FMA statistics loops (cext/simd.c) give bitwise the results of
the portable loops they stand in for: on both layout paths, for every tail of a plane
(inner mod 16) and of a row (C mod 4), and for values spread so widely that every sum
and product rounds (where another order of additions, or a fused multiply-add, would
round differently)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import normops
from normops._backends import _cpu

pytestmark = pytest.mark.skipif(not _cpu.simd_enabled(),
                                reason="this CPU or build has no AVX2 + FMA loops to compare")
CPU = normops.get_backend("cpu")


@st.composite
def stat_shapes(draw):
    """(outer, C, inner): rows (inner 1) over more than one chunk of 64 rows and every
    column tail; or planes of every length mod 16, short ones grouped into units."""
    if draw(st.booleans()):
        return draw(st.integers(2, 150)), draw(st.integers(1, 13)), 1
    return draw(st.integers(1, 9)), draw(st.integers(1, 3)), draw(st.integers(2, 70))


def harsh_values(rng, shape):
    """Magnitudes over twenty decades (about 66 bits, so even sums of a few deviations
    round, and their order shows) around per-channel offsets, with mixed signs."""
    magnitude = 10.0 ** rng.uniform(-10, 10, shape)
    offset = 10.0 ** rng.uniform(0, 3, (1, shape[1], 1))
    return (offset + rng.choice([-1.0, 1.0], shape) * magnitude).astype(np.float32)


def run_everything(x3, dy3):
    """Every output of the ops whose statistics take the AVX2 loops, as bytes."""
    channels = x3.shape[1]
    gamma = np.linspace(0.5, 2.0, channels, dtype=np.float32)
    beta = np.linspace(-1.0, 1.0, channels, dtype=np.float32)
    running_mean = np.zeros(channels, np.float32)
    running_var = np.ones(channels, np.float32)
    y, saved = normops.batch_norm(x3, gamma, beta, running_mean, running_var, training=True,
                                  backend="cpu")
    dx, dgamma, dbeta = normops.batch_norm_backward(dy3, x3, saved, gamma, backend="cpu")
    count, mean, m2 = CPU.batch_stats(x3)
    sum_dy, sum_dy_xmu = CPU.grad_stats(dy3, x3, mean)
    outputs = (y, saved.mean, saved.invstd, running_mean, running_var, dx, dgamma, dbeta,
               mean, m2, sum_dy, sum_dy_xmu)
    return [a.tobytes() for a in outputs]


@given(shape=stat_shapes(), seed=st.integers(0, 2**32 - 1))
def test_avx2_loops_give_the_portable_bits(shape, seed):
    rng = np.random.default_rng(seed)
    x3, dy3 = harsh_values(rng, shape), rng.normal(size=shape).astype(np.float32)
    with_simd = run_everything(x3, dy3)
    try:
        _cpu._set_simd(False)
        assert not _cpu.simd_enabled()
        portable = run_everything(x3, dy3)
    finally:
        _cpu._set_simd(True)
    assert _cpu.simd_enabled()
    names = ["y", "mean", "invstd", "running_mean", "running_var", "dx", "dgamma", "dbeta",
             "batch_stats mean", "batch_stats m2", "sum_dy", "sum_dy_xmu"]
    differing = [name for name, a, b in zip(names, with_simd, portable) if a != b]
    assert not differing, f"AVX2 and portable loops differ in {differing} for shape {shape}"


def test_show_config_reports_the_simd_loops():
    assert normops._config.config()["simd"].startswith("AVX2 + FMA")
