"""The cupy backend's fused CUDA kernels (NORMOPS_CUPY_KERNELS=fused) executed in CI:
the numba-cuda kernels and their launch code run in Numba's CUDA simulator on NumPy
arrays (tests/cuda_simulator.py), set against the reference backend and against the
formulas they implement, on layouts, tiles and chunks chosen to reach every branch.
Small blocks (4 threads) make several chunks and partial channel tiles on small arrays.

The simulator rounds every operation; on a GPU, NVVM contracts multiply-adds into FMAs
(one rounding for two), so the checks "bit for bit against the formula" hold here and,
for float16 and float32 results computed in float64, on a GPU too, while float64
results there may differ in their last bits (the comparisons with the reference hold
either way).
"""
import math
import os

import numpy as np
import pytest

from cuda_simulator import SimulatedFusedBackend, simulated

_reason = simulated()
if _reason is not None:
    if os.environ.get("NORMOPS_REQUIRE_NUMBA_CUDA"):
        raise RuntimeError(f"the fused CUDA kernels' simulator tests cannot run: {_reason}")
    pytest.skip(f"{_reason}; pip install numba-cuda runs them", allow_module_level=True)

import normops  # noqa: E402
from normops import testing  # noqa: E402
from normops._backends.array_api import ArrayApiBackend, centred  # noqa: E402
from normops._backends.cuda_fused import channels_adjacent, launch_shape  # noqa: E402
from normops._backends.reference import ReferenceBackend  # noqa: E402

SIM = "cuda-simulator"


@pytest.fixture(scope="module")
def sim():
    return SimulatedFusedBackend()


@pytest.fixture
def registered(register):
    register(SIM, SimulatedFusedBackend)
    return SIM


def _layouts(rng, dtype, offset=0.0):
    """(label, x3): (outer, C, inner) arrays in every memory arrangement the kernels
    tell apart: channels apart (NCHW), adjacent (NC, NHWC), adjacent with inner > 1 (an
    NHWC buffer seen as NCHW), one channel, a partial tile of adjacent channels, one
    position, and a non-contiguous slice."""
    def draw(*shape):
        return (offset + rng.standard_normal(shape) * 3).astype(dtype)

    nhwc = draw(3, 2, 3, 6)                          # N, H, W, C
    sliced = draw(4, 5, 14)[:, :, ::2]
    return [
        ("NCHW 5x3x7", draw(5, 3, 7)),
        ("NC 9x5", draw(9, 5, 1)),
        ("NHWC 20x3", draw(20, 3, 1)),
        ("NHWC buffer as NCHW", nhwc.transpose(0, 3, 1, 2).reshape(3, 6, 6)),
        ("one channel", draw(6, 1, 5)),
        ("one position", draw(1, 6, 1)),
        ("strided", sliced),
    ]


DTYPES = ("float16", "float32", "float64")


def _within(got, want, tol, label):
    """|got - want| <= tol elementwise (tol per channel)."""
    err = np.abs(np.asarray(got, float) - np.asarray(want, float))
    assert (err <= tol).all(), f"{label}: off by {err.max():.3g}, allowed {np.min(tol):.3g}"


def _per_channel(rng, c, low=0.5, high=2.0):
    return rng.uniform(low, high, c) * rng.choice([-1.0, 1.0], c)


# ---------------------------------------------------------------------------- launch shapes

@pytest.mark.parametrize("adjacent", [False, True])
@pytest.mark.parametrize("threads,blocks", [(4, 6), (8, 1), (256, 1024), (256, 8192)])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 3, 7), (9, 5, 1), (3, 37, 2), (2, 40, 33),
                                   (700, 2, 1), (1, 300, 1)])
def test_launch_shape_gives_every_channel_and_position_to_one_thread(shape, adjacent, threads,
                                                                     blocks):
    outer, channels, inner = shape
    (tiles, chunks), (bx, by), per_chunk = launch_shape(shape, adjacent, threads, blocks)
    assert bx * by == threads and by & (by - 1) == 0   # the tree reduction halves by
    assert bx == 1 or adjacent
    assert 1 <= chunks <= 65535 and tiles * bx >= channels > (tiles - 1) * bx
    positions = outer * inner
    visits = np.zeros((channels, positions), dtype=np.int64)
    for gx in range(tiles):
        for gy in range(chunks):
            q0, q1 = gy * per_chunk, min(gy * per_chunk + per_chunk, positions)
            for tx in range(bx):
                c = gx * bx + tx
                if c >= channels:
                    continue
                for ty in range(by):
                    visits[c, q0 + ty:q1:by] += 1
    assert (visits == 1).all()


def test_launch_shape_keeps_the_grid_within_cudas_limit():
    (tiles, chunks), _, per_chunk = launch_shape((10**6, 1, 10**3), False, 256, 10**9)
    assert chunks <= 65535 and chunks * per_chunk >= 10**9 > (chunks - 1) * per_chunk


def test_channels_adjacent_reads_the_layout():
    x = np.zeros((2, 3, 4, 5), np.float32)
    assert not channels_adjacent(x.reshape(2, 3, 20))
    assert channels_adjacent(np.zeros((40, 3, 1)))
    nhwc_as_nchw = np.zeros((2, 4, 5, 3), np.float32).transpose(0, 3, 1, 2).reshape(2, 3, 20)
    assert channels_adjacent(nhwc_as_nchw)
    assert not channels_adjacent(np.zeros((2, 1, 20)))
    assert not channels_adjacent(np.zeros((40, 3), order="F")[:, :, None])   # column-major NC


# ---------------------------------------------------------------------------- the kernels

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_batch_stats_match_the_reference(sim, dtype, offset):
    rng = np.random.default_rng(1)
    for label, x in _layouts(rng, dtype, offset):
        count, mean, m2 = sim.batch_stats(x)
        want_count, want_mean, want_m2 = ReferenceBackend().batch_stats(x)
        assert count == want_count, label
        spread = np.sqrt(want_m2 / count) + 1e-300
        _within(mean, want_mean, 1e-12 * (spread + offset), label)
        _within(m2, want_m2, 1e-11 * want_m2 + 1e-12 * spread.max() ** 2, label)
        again = sim.batch_stats(x)
        assert again[1].tobytes() == mean.tobytes() and again[2].tobytes() == m2.tobytes(), \
            f"{label}: a second run gave other bits"


@pytest.mark.filterwarnings("ignore:.*invalid value:RuntimeWarning")   # the simulator's NumPy
def test_batch_stats_give_nan_to_the_channels_with_nan_or_inf_only(sim):
    rng = np.random.default_rng(2)
    for label, x in _layouts(rng, "float32"):
        if x.shape[1] < 3:
            continue
        x = np.array(x)
        x[-1, 0, -1] = np.nan
        x[0, 2, 0] = np.inf     # the first value: the shift itself
        _, mean, m2 = sim.batch_stats(x)
        bad = np.zeros(x.shape[1], bool)
        bad[[0, 2]] = True
        assert np.isnan(mean[bad]).all() and np.isnan(m2[bad]).all(), label
        assert np.isfinite(mean[~bad]).all() and np.isfinite(m2[~bad]).all(), label


def test_batch_stats_of_many_tiny_chunks():
    """More blocks than positions per thread: chunks of one or two values and threads
    with none, merged by the second kernel (Chan's formula on counts of 1 and 0)."""
    many = SimulatedFusedBackend(threads=2, reduce_blocks=64)
    x = np.random.default_rng(3).standard_normal((7, 2, 3))
    count, mean, m2 = many.batch_stats(x)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2)), rtol=1e-13)
    np.testing.assert_allclose(m2, x.var(axis=(0, 2)) * count, rtol=1e-12)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")   # the squares that overflow
@pytest.mark.parametrize("layout", ["NCHW", "NC"])
def test_batch_stats_with_an_outlier_first_value(sim, layout):
    """The first value of a channel (and of a thread) far from the others: the shifted
    sums lose nothing (the shift is one of the values summed), and where their squares
    overflow (1e154 in float64, while M2 itself does not) the threads redo their values
    with Welford's updates instead of giving NaN."""
    rng = np.random.default_rng(13)
    shape = (24, 2, 5) if layout == "NCHW" else (40, 2, 1)
    for outlier in (1e8, 1e154):
        x = rng.standard_normal(shape)
        x[0, :, 0] = outlier
        count, mean, m2 = sim.batch_stats(x)
        _, want_mean, want_m2 = ReferenceBackend().batch_stats(x)
        assert np.isfinite(mean).all() and np.isfinite(m2).all(), outlier
        spread = np.sqrt(want_m2 / count)
        _within(mean, want_mean, 1e-14 * (np.abs(want_mean) + spread), f"mean, outlier {outlier:g}")
        _within(m2, want_m2, 1e-12 * want_m2, f"M2, outlier {outlier:g}")


def test_launch_shape_refuses_blocks_the_reductions_cannot_halve():
    for threads in (0, 3, 6, 257, 512):
        with pytest.raises(ValueError, match="power of two from 1 to 256"):
            launch_shape((4, 3, 5), False, threads, 8)


def _map_expected(x, a, b, z, relu):
    """The kernel's formula in NumPy: (x - c) a + (b + a c) in float64, rounded to x's
    dtype, then + z in x's dtype, then relu (0 where < 0: -0.0 and NaN stay)."""
    c, shift = centred(np, x.dtype, a, b)
    col = (lambda v: v[None, :, None])
    y = ((x.astype(np.float64) - col(c)) * col(a) + col(shift)).astype(x.dtype)
    if z is not None:
        y = y + z
    if relu:
        y = np.where(y < 0, np.zeros_like(y), y)
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("residual,relu", [(False, False), (True, False), (False, True),
                                           (True, True)])
def test_scale_shift_and_its_epilogue(sim, dtype, residual, relu):
    rng = np.random.default_rng(4)
    for label, x in _layouts(rng, dtype, offset=50.0):
        c = x.shape[1]
        a, b = _per_channel(rng, c), 50.0 * _per_channel(rng, c)
        a[0] = 0.0                                  # no centre: c = 0
        z = None
        if residual:
            z = rng.standard_normal(x.shape).astype(dtype)
            z.flat[::3] = -_map_expected(x, a, b, None, False).flat[::3]   # exact zeros
        y = sim.scale_shift(x, a, b, residual=z, activation="relu" if relu else None)
        want = _map_expected(x, a, b, z, relu)
        assert y.dtype == x.dtype and y.shape == x.shape, label
        assert np.array_equal(y, want, equal_nan=True), label
        assert np.array_equal(np.signbit(y), np.signbit(want)), f"{label}: signed zeros"
        # and within the reference's rounding (it adds z in float64 before rounding)
        ref = ReferenceBackend().scale_shift(x, a, b, residual=z,
                                             activation="relu" if relu else None)
        # the reference rounds a x + b in float64 as it goes: its error grows with |a x|
        terms = np.abs(a[None, :, None] * x) + np.abs(b)[None, :, None]
        tol = 4 * np.finfo(dtype).eps * (terms + (0 if z is None else np.abs(z)) + 1)
        assert (np.abs(y.astype(float) - ref.astype(float)) <= tol).all(), label


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_shift_output_is_laid_out_as_x(sim, dtype):
    x = np.random.default_rng(5).standard_normal((2, 4, 5, 3)).astype(dtype)
    x3 = x.transpose(0, 3, 1, 2).reshape(2, 3, 20)     # NHWC memory
    y = sim.scale_shift(x3, np.ones(3), np.zeros(3))
    assert np.argsort(np.abs(y.strides)).tolist() == np.argsort(np.abs(x3.strides)).tolist()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
def test_grad_stats_match_the_reference(sim, dtype, masked):
    rng = np.random.default_rng(6)
    for label, x in _layouts(rng, dtype, offset=3.0):
        dy = rng.standard_normal(x.shape).astype(dtype)
        y = rng.standard_normal(x.shape).astype(dtype) if masked else None
        if masked:
            y.flat[::5] = 0.0
            y.flat[1::7] = np.nan                       # NaN lets dy through
        mean = x.astype(np.float64).mean(axis=(0, 2)) + 0.25
        got = sim.grad_stats(dy, x, mean, y=y)
        want = ReferenceBackend().grad_stats(dy, x, mean, y=y)
        scale = np.abs(dy.astype(float)).sum(axis=(0, 2)) * (1 + np.abs(x).max())
        for g, w in zip(got, want):
            _within(g, w, 1e-13 * scale, label)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
def test_grad_input_is_its_formula(sim, dtype, masked):
    rng = np.random.default_rng(7)
    for label, x in _layouts(rng, dtype, offset=20.0):
        c = x.shape[1]
        dy = rng.standard_normal(x.shape).astype(dtype)
        y = rng.standard_normal(x.shape).astype(dtype) if masked else None
        p, q, s = _per_channel(rng, c), _per_channel(rng, c, 0.01, 0.1), rng.standard_normal(c)
        got = sim.grad_input(dy, x, p, q, s, y=y)
        g = dy.astype(np.float64)
        if masked:
            g = np.where(y <= 0, 0.0, g)
        cq, shift = centred(np, x.dtype, q, s)
        col = (lambda v: v[None, :, None])
        want = (g * col(p) + ((x.astype(np.float64) - col(cq)) * col(q) + col(shift))).astype(dtype)
        assert np.array_equal(got, want), label
        ref = ReferenceBackend().grad_input(dy, x, p, q, s, y=y)
        np.testing.assert_allclose(got, ref, rtol=8 * np.finfo(dtype).eps,
                                   atol=8 * np.finfo(dtype).eps * np.abs(ref).max(), err_msg=label)


def _relu_mask_inputs(rng):
    """(label, dy, y): every rank, a channels-last view, a strided slice, one element."""
    nhwc = rng.standard_normal((2, 4, 5, 3))
    return [
        ("NCHW", rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))),
        ("1-D", rng.standard_normal(7), rng.standard_normal(7)),
        ("2-D", rng.standard_normal((3, 4)), rng.standard_normal((3, 4))),
        ("channels_last view", rng.standard_normal((2, 3, 4, 5)), nhwc.transpose(0, 3, 1, 2)),
        ("strided", rng.standard_normal((4, 3)), rng.standard_normal((4, 6))[:, ::2]),
        ("one element", rng.standard_normal((1, 1)), -np.ones((1, 1))),
    ]


def test_relu_mask_of_any_rank_and_layout(sim):
    for label, dy, y in _relu_mask_inputs(np.random.default_rng(8)):
        y = np.array(y, copy=True, order="K") if label != "strided" else y
        y.flat[0] = np.nan if y.size > 1 else y.flat[0]
        y.flat[-1] = 0.0 if y.size > 1 else y.flat[-1]
        got = sim.relu_mask(dy, y)
        assert np.array_equal(got, np.where(y <= 0, 0.0, dy)), label
        if label == "channels_last view":   # laid out as y
            assert np.argsort(got.strides).tolist() == np.argsort(y.strides).tolist(), label


def _array_api_on_numpy():
    plain = ArrayApiBackend()
    plain.namespace = lambda v: np
    return plain


@pytest.mark.parametrize("residual", [False, True])
def test_float16_maps_round_as_the_array_api_path(sim, residual):
    """Computed in float64 and rounded once: the same halves as the array-API kernels
    and the composition's epilogue give."""
    rng = np.random.default_rng(9)
    plain = _array_api_on_numpy()
    for label, x in _layouts(rng, "float16", offset=8.0):
        c = x.shape[1]
        a, b = _per_channel(rng, c), 8.0 * _per_channel(rng, c)
        z = rng.standard_normal(x.shape).astype(np.float16) if residual else None
        want = plain.scale_shift(x, a, b)
        if residual:
            want = want + z
            want = np.where(want < 0, np.zeros_like(want), want)
        got = sim.scale_shift(x, a, b, residual=z, activation="relu" if residual else None)
        assert got.dtype == np.float16 and np.array_equal(got, want), label
        assert np.array_equal(np.signbit(got), np.signbit(want)), label
        dy = rng.standard_normal(x.shape).astype(np.float16)
        p, q, s = _per_channel(rng, c), _per_channel(rng, c, 0.01, 0.1), rng.standard_normal(c)
        assert np.array_equal(sim.grad_input(dy, x, p, q, s), plain.grad_input(dy, x, p, q, s)), label


def test_bfloat16_and_empty_arrays_take_the_array_api_kernels(sim):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 3, 5)).astype(ml_dtypes.bfloat16)
    a, b = _per_channel(rng, 3), rng.standard_normal(3)
    plain = _array_api_on_numpy()
    assert np.array_equal(sim.scale_shift(x, a, b), plain.scale_shift(x, a, b))
    for got, want in zip(sim.batch_stats(x)[1:], plain.batch_stats(x)[1:]):
        assert np.array_equal(got, want)
    empty = np.zeros((0, 3, 5), np.float32)
    assert sim.scale_shift(empty, a, b).shape == empty.shape


# ---------------------------------------------------------------------------- the ops

CASES = (
    ("NCHW f32 offset", dict(shape=(6, 3, 4, 5), axis=1, dtype="float32", regime="large_offset")),
    ("NHWC f32", dict(shape=(3, 4, 5, 6), axis=-1, dtype="float32", regime="moderate")),
    ("NC f64 mixed", dict(shape=(17, 5), axis=1, dtype="float64", regime="mixed_scales")),
    ("NCHW f64 channels_last memory", dict(shape=(4, 3, 5, 2), axis=1, dtype="float64",
                                           regime="moderate", memory="channels_last")),
)


@pytest.mark.parametrize("label,recipe", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("renorm", [False, True])
def test_ops_match_the_reference(registered, label, recipe, training, renorm):
    case = testing.make_case(**recipe, seed=11, renorm=renorm)
    impl = testing.backend_implementation(registered)
    reference = testing.backend_implementation("reference")
    step = testing.brn_step if renorm else testing.bn_step
    testing.assert_steps_close(step(impl, case, training=training),
                               step(reference, case, training=training), case)


@pytest.mark.parametrize("renorm", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("axis", [1, -1])
def test_fused_ops_match_the_reference(registered, residual, axis, training, renorm):
    rng = np.random.default_rng(12)
    x = (rng.standard_normal((4, 3, 3, 5)) + 2).astype(np.float32)
    z = rng.standard_normal(x.shape).astype(np.float32) if residual else None
    c = x.shape[axis]
    gamma, beta = _per_channel(rng, c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    forward = normops.batch_renorm if renorm else normops.batch_norm
    backward = normops.batch_renorm_backward if renorm else normops.batch_norm_backward
    outs = {}
    for backend in (registered, "reference"):
        rm = (0.1 * np.arange(c)).astype(np.float32)
        rv = np.linspace(0.5, 1.5, c).astype(np.float32)
        y, saved = forward(x, gamma, beta, rm, rv, training=training, axis=axis,
                           residual=z, activation="relu", backend=backend)
        grads = backward(dy, x, saved, gamma, y=y, backend=backend)
        outs[backend] = (y, rm, rv, *grads)
    assert len(outs[registered]) == 6 + residual
    for got, want in zip(outs[registered], outs["reference"]):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * (np.abs(want).max() + 1))


def test_conformance_kit_passes_on_the_simulated_kernels(registered):
    from hypothesis import settings
    profile = settings(testing.PROFILES["ci"], max_examples=2, deadline=None)
    report = testing.run(testing.backend_implementation(registered), profile=profile)
    assert report.passed, report.failures()
    counts = report.counts()
    assert counts["passed"] >= len(testing.properties()) - counts["n/a"] > 0
