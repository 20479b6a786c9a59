"""The cpu backend's AVX2 + FMA + F16C loops (cext/simd.c) give bitwise the results of the
portable loops they stand in for, for float32 and the half dtypes: the statistics on both
layout paths, for every tail of a plane (inner mod 16) and of a row (C mod 4), with values
spread so widely that every sum and product rounds (where another order of additions, or
a fused multiply-add, would round differently); the halves' maps; and the maps that write
large outputs around the cache, which they do exactly for runs (planes, rows) of whole
cache lines."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import normops
from normops._backends import _cpu
from normops._backends.cpu import _empty_like

pytestmark = pytest.mark.skipif(not _cpu.simd_enabled(),
                                reason="this CPU or build has no AVX2 + FMA loops to compare")
CPU = normops.get_backend("cpu")
# the dtypes with AVX2 loops: float32, and the halves (their parameters float32, as in
# mixed precision, or their own dtype)
DTYPES = [np.dtype(np.float32), np.dtype(np.float16)]
try:
    import ml_dtypes
    DTYPES.append(np.dtype(ml_dtypes.bfloat16))
except ImportError:   # bfloat16 arrays need ml_dtypes (normops[bf16])
    pass
dtypes = st.sampled_from(DTYPES)
param_kinds = st.sampled_from(["float32", "own"])


@st.composite
def stat_shapes(draw):
    """(outer, C, inner): rows (inner 1) over more than one chunk and every column tail,
    narrow rows (C < 8, taken 8 at a time) with every count of rows left over, wide rows
    in column blocks, rows of 128 to 512 values (whose statistics loops prefetch the next
    rows) and either side of that range; or planes of every length mod 16, short ones
    grouped into units (up to 8 values: read as rows of C planes), in one unit or in
    several with a shorter last one (kernels.c NM_UNIT_MIN: units of 768 values or more)."""
    kind = draw(st.sampled_from(["rows", "wide rows", "prefetched rows", "planes", "units"]))
    if kind == "rows":
        channels = draw(st.integers(1, 13))
        chunk = 64 * -(-64 // channels) if channels < 64 else 64   # kernels.c chunk_len
        return draw(st.integers(2, 2 * chunk + 70)), channels, 1
    if kind == "wide rows":   # one or two chunks of 64 rows, in blocks of 1024+ columns
        return draw(st.integers(2, 130)), draw(st.integers(2040, 2100)), 1
    if kind == "prefetched rows":   # simd.c NM_PREFETCH_LD_MIN .. NM_PREFETCH_LD_MAX
        channels = draw(st.sampled_from([127, *range(128, 138), *range(503, 513), 513]))
        return draw(st.integers(2, 140)), channels, 1
    if kind == "units":   # 3 to 8 planes a unit, 2 to 7 units a channel
        return draw(st.integers(9, 20)), draw(st.integers(1, 3)), draw(st.integers(97, 300))
    return draw(st.integers(1, 9)), draw(st.integers(1, 3)), draw(st.integers(2, 70))


def harsh_values(rng, shape, dtype=np.float32):
    """Magnitudes over twenty decades (about 66 bits, so even sums of a few deviations
    round, and their order shows) around per-channel offsets, with mixed signs; float16,
    whose values end at 65504, over eight decades from its subnormals on."""
    decades = (-7, 4) if dtype == np.float16 else (-10, 10)
    magnitude = 10.0 ** rng.uniform(*decades, shape)
    offset = 10.0 ** rng.uniform(0, 3, (1, shape[1], 1))
    return (offset + rng.choice([-1.0, 1.0], shape) * magnitude).astype(dtype)


def some_channels_wide(rng, x3, wide):
    """x3 with, when ``wide``, some channels scaled by 1e25: their coefficients leave
    float32's safe range, so they map in double (kernels.c wide_map), beside the others
    (the halves map in double anyway; float16 cannot hold such values)."""
    if wide and x3.dtype != np.float16:
        x3 = x3.copy()
        chosen = rng.random(x3.shape[1]) < 0.5
        chosen[rng.integers(x3.shape[1])] = True
        x3[:, chosen] *= x3.dtype.type(1e25)
    return x3


def parameter_dtype(dtype, kind):
    return np.dtype(np.float32) if kind == "float32" else dtype


def run_everything(x3, dy3, params=np.float32):
    """Every output of the ops whose statistics take the AVX2 loops, as bytes; ``params``:
    the dtype of the per-channel arrays."""
    channels = x3.shape[1]
    gamma = np.linspace(0.5, 2.0, channels).astype(params)
    beta = np.linspace(-1.0, 1.0, channels).astype(params)
    running_mean = np.zeros(channels, params)
    running_var = np.ones(channels, params)
    y, saved = normops.batch_norm(x3, gamma, beta, running_mean, running_var, training=True,
                                  backend="cpu")
    dx, dgamma, dbeta = normops.batch_norm_backward(dy3, x3, saved, gamma, backend="cpu")
    y_eval, saved_eval = normops.batch_norm(x3, gamma, beta, running_mean, running_var,
                                            training=False, backend="cpu")
    eval_grads = normops.batch_norm_backward(dy3, x3, saved_eval, gamma, backend="cpu")
    renorm_mean, renorm_std = np.full(channels, 0.5, params), np.full(channels, 2.0, params)
    y_renorm, saved_renorm = normops.batch_renorm(x3, gamma, beta, renorm_mean, renorm_std,
                                                  rmax=1.5, dmax=0.5, backend="cpu")
    renorm_grads = normops.batch_renorm_backward(dy3, x3, saved_renorm, gamma, backend="cpu")
    count, mean, m2 = CPU.batch_stats(x3)
    sum_dy, sum_dy_xmu = CPU.grad_stats(dy3, x3, mean)
    # the maps again, into outputs filled with NaN first: a value a map fails to write shows
    scaled, grad = _empty_like(x3), _empty_like(x3)
    scaled.fill(np.nan)
    grad.fill(np.nan)
    _cpu.forward(x3, scaled, "affine", a=saved.invstd, b=-saved.mean * saved.invstd)
    _cpu.backward(dy3, x3, grad, "grad_input", p=saved.invstd, q=-saved.invstd, s=saved.mean)
    outputs = (y, saved.mean, saved.invstd, running_mean, running_var, dx, dgamma, dbeta,
               mean, m2, sum_dy, sum_dy_xmu, scaled, grad, y_eval, *eval_grads, y_renorm,
               saved_renorm.r, saved_renorm.d, renorm_mean, renorm_std, *renorm_grads)
    return [a.tobytes() for a in outputs]


NAMES = ["y", "mean", "invstd", "running_mean", "running_var", "dx", "dgamma", "dbeta",
         "batch_stats mean", "batch_stats m2", "sum_dy", "sum_dy_xmu", "scale_shift",
         "grad_input", "eval y", "eval dx", "eval dgamma", "eval dbeta", "renorm y", "r", "d",
         "renorm running_mean", "renorm running_std", "renorm dx", "renorm dgamma",
         "renorm dbeta"]
# run_everything's ops that write an array of x's size: the forward and backward of BN
# in training and in eval and of BRN in training, and the two maps
MAPPING_OPS = 8
# those of them whose statistics and map may run pipelined: all but the eval forward and
# the two maps
PIPELINE_OPS = 5


def run_with(x3, dy3, *, simd, stream_bytes=None, params=np.float32):
    default = _cpu.stream_bytes()
    try:
        _cpu._set_simd(simd)
        assert _cpu.simd_enabled() == simd
        if stream_bytes is not None:
            _cpu._set_stream_bytes(stream_bytes)
            if stream_bytes == 0:   # every output starts on a cache line, so whole lines stream
                assert _empty_like(x3).ctypes.data % 64 == 0
        return run_everything(x3, dy3, params)
    finally:
        _cpu._set_simd(True)
        _cpu._set_stream_bytes(default)


@given(shape=stat_shapes(), seed=st.integers(0, 2**32 - 1), wide=st.booleans(), dtype=dtypes,
       params=param_kinds)
def test_avx2_loops_give_the_portable_bits(shape, seed, wide, dtype, params):
    rng = np.random.default_rng(seed)
    x3, dy3 = harsh_values(rng, shape, dtype), rng.normal(size=shape).astype(dtype)
    x3 = some_channels_wide(rng, x3, wide)
    params = parameter_dtype(dtype, params)
    portable = run_with(x3, dy3, simd=False, params=params)
    for label, stream_bytes in (("AVX2 loops", None), ("AVX2 loops, streamed outputs", 0)):
        fast = run_with(x3, dy3, simd=True, stream_bytes=stream_bytes, params=params)
        differing = [name for name, a, b in zip(NAMES, fast, portable) if a != b]
        assert not differing, (f"{label} and portable loops differ in {differing} for shape "
                               f"{shape}, {dtype}")


@given(outer=st.integers(1, 5), channels=st.integers(8, 20),
       inner=st.sampled_from([*range(1024, 1040), 1061, 2061]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**32 - 1), wide=st.booleans(),
       dtype=dtypes, params=param_kinds)
def test_pipelined_planes_give_the_portable_bits(outer, channels, inner, threads, seed, wide,
                                                  dtype, params):
    """Planes of 1024 values or more, with 4 channels or more per thread, take the
    pipelined schedule (kernels.c NM_PIPE_PLANE_MIN, NM_PIPE_CHANNELS) in training, whose
    loops sum one channel while they map another, streamed or not; a channel that maps
    wide is summed and mapped on its own there."""
    rng = np.random.default_rng(seed)
    shape = (outer, channels, inner)
    x3, dy3 = harsh_values(rng, shape, dtype), rng.normal(size=shape).astype(dtype)
    x3 = some_channels_wide(rng, x3, wide)
    params = parameter_dtype(dtype, params)
    before = normops.get_num_threads()
    try:
        normops.set_num_threads(threads)
        _cpu.set_min_values_per_thread(1)     # the team is `threads`, however small the planes
        count = _cpu.pipelined_ops()
        portable = run_with(x3, dy3, simd=False, params=params)
        assert _cpu.pipelined_ops() == count
        for label, stream_bytes in (("pipelined", None), ("pipelined, streamed", 0)):
            count = _cpu.pipelined_ops()
            fast = run_with(x3, dy3, simd=True, stream_bytes=stream_bytes, params=params)
            assert _cpu.pipelined_ops() - count == PIPELINE_OPS
            differing = [name for name, a, b in zip(NAMES, fast, portable) if a != b]
            assert not differing, f"{label} and portable loops differ in {differing} for {shape}"
    finally:
        normops.set_num_threads(before)
        _cpu.set_min_values_per_thread(0)


@st.composite
def streamed_shapes(draw):
    """Runs of whole cache lines, which stream once the threshold is 0 (outputs then start
    on a line): rows of 16, 32 or 48 columns, wide rows in column blocks, rows of short
    planes, or planes of a multiple of 16 values; and neighbours of them that must not
    stream."""
    kind = draw(st.sampled_from(["rows", "wide rows", "short planes", "planes"]))
    if kind == "rows":
        return draw(st.integers(2, 300)), draw(st.sampled_from([16, 32, 48, 17])), 1
    if kind == "wide rows":
        return draw(st.integers(2, 70)), draw(st.sampled_from([2048, 3008, 2049])), 1
    if kind == "short planes":
        return (draw(st.integers(2, 300)), draw(st.sampled_from([2, 3, 8])),
                draw(st.sampled_from([2, 4, 8])))
    return (draw(st.integers(1, 9)), draw(st.integers(1, 3)),
            draw(st.sampled_from([16, 48, 64, 100, 1024])))


def whole_lines(shape, itemsize=4):
    """Whether the runs of a (outer, C, inner) output are whole 64-byte lines: rows, or
    planes, which up to 8 values run as rows of C planes (kernels.c NM_FOLD_MAX)."""
    outer, channels, inner = shape
    run = channels * inner if inner <= 8 else inner
    return run * itemsize % 64 == 0


@given(shape=streamed_shapes(), seed=st.integers(0, 2**32 - 1), dtype=dtypes)
def test_streamed_maps_give_the_portable_bits(shape, seed, dtype):
    rng = np.random.default_rng(seed)
    x3, dy3 = harsh_values(rng, shape, dtype), rng.normal(size=shape).astype(dtype)
    before = _cpu.streamed_ops()
    portable = run_with(x3, dy3, simd=False)
    assert _cpu.streamed_ops() == before
    streamed = run_with(x3, dy3, simd=True, stream_bytes=0)
    # every op that writes an array of x's size streams, or none of them
    expected = MAPPING_OPS if whole_lines(shape, dtype.itemsize) else 0
    assert _cpu.streamed_ops() - before == expected
    differing = [name for name, a, b in zip(NAMES, streamed, portable) if a != b]
    assert not differing, f"streamed and portable maps differ in {differing} for shape {shape}"


def test_an_output_off_a_cache_line_is_not_streamed():
    x3 = harsh_values(np.random.default_rng(1), (50, 32, 1))
    a, b = np.full(32, 0.5), np.full(32, -1.0)
    inside = np.empty(x3.size + 32, np.float32)
    start = -inside.ctypes.data % 64 // 4 + 8   # half a line past one: fine for the vector
                                                # stores, but its lines would be split
    off_line = inside[start:start + x3.size].reshape(x3.shape)
    default = _cpu.stream_bytes()
    try:
        _cpu._set_stream_bytes(0)
        before = _cpu.streamed_ops()
        _cpu.forward(x3, off_line, "affine", a=a, b=b)
        assert _cpu.streamed_ops() == before
    finally:
        _cpu._set_stream_bytes(default)
    expected = np.empty_like(x3)
    _cpu.forward(x3, expected, "affine", a=a, b=b)
    assert off_line.tobytes() == expected.tobytes()


def test_show_config_reports_the_simd_loops():
    report = normops._config.config()["simd"]
    assert report.startswith("AVX2 + FMA")
    assert f"hold {_cpu.stream_bytes() >> 20} MiB or more" in report
