"""The cpu backend's fused epilogue, y = relu(op(x) + residual) (cext/normops.h: residual,
relu), gives bitwise the unfused composition: the op's output y0, then numpy.add(y0, z)
and numpy.where(v < 0, 0, v) in x's dtype; on every mode that writes y, every dtype and
every path of the kernels (rows, folded rows, narrow rows taken 8 at a time, rows longer
than the epilogue's scratch, column blocks, short planes several to a piece, long planes
in pieces, the pipelined planes schedule, the wide maps, streamed outputs, the portable
loops), on 1 and 2 threads. And the backward's mask kernel gives numpy.where(y <= 0, 0,
dy) bitwise. Where both the op's value and z are NaN only NaN-ness is compared: which
NaN an addition of two NaNs gives depends on its operands' order (cext/simd.h)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import normops
from normops._backends import _cpu
from memory import unaligned

CPU = normops.get_backend("cpu")
DTYPES = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)]
try:
    import ml_dtypes
    DTYPES.append(np.dtype(ml_dtypes.bfloat16))
except ImportError:   # bfloat16 arrays need ml_dtypes (normops[bf16])
    pass
HALVES = [d for d in DTYPES if d.itemsize == 2]
MODES = ["affine", "bn_train", "bn_eval", "brn_train", "brn_eval"]
TRAINING = ("bn_train", "brn_train")
# the combinations of the epilogue: (residual, relu)
EPILOGUES = [(True, False), (True, True), (False, True)]
SIMD = [False, True] if _cpu.simd_enabled() else [False]


# --- running the ops -----------------------------------------------------------------

class Settings:
    """The kernels' switches for one block: threads (a full team even on small arrays),
    the AVX2 loops on or off, and every output streamed or the default threshold."""

    def __init__(self, threads=1, simd=True, stream=False):
        self.threads, self.simd, self.stream = threads, simd, stream

    def __enter__(self):
        self.before = normops.get_num_threads(), _cpu.stream_bytes()
        normops.set_num_threads(self.threads)
        _cpu.set_min_values_per_thread(1)
        _cpu._set_simd(self.simd)
        if self.stream:
            _cpu._set_stream_bytes(0)
        return self

    def __exit__(self, *exc):
        normops.set_num_threads(self.before[0])
        _cpu.set_min_values_per_thread(0)
        _cpu._set_simd(True)
        _cpu._set_stream_bytes(self.before[1])


GUARD = 64   # bytes around each output, checked untouched


def guarded(shape, dtype):
    """An output on a cache line (so that whole-line runs stream), inside a block whose
    bytes around it hold a pattern; and the check that they still do."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    block = np.empty(nbytes + 3 * GUARD, np.uint8)
    start = -block.ctypes.data % GUARD + GUARD
    block[:] = 0xA5
    out = block[start:start + nbytes].view(dtype).reshape(shape)
    out.view(np.uint8)[...] = 0x5A   # values a kernel that skips them leaves behind

    def intact():
        return (block[:start] == 0xA5).all() and (block[start + nbytes:] == 0xA5).all()
    return out, intact


def params_of(rng, dtype, channels, mode):
    """The per-channel arguments of a mode (the halves' in float32, as in mixed
    precision): a fresh copy of the running statistics each call, as training writes them."""
    p = np.float32 if dtype.itemsize == 2 else dtype
    out = dict(gamma=rng.uniform(0.5, 2.0, channels).astype(p) * rng.choice([-1, 1], channels).astype(p),
               beta=rng.normal(size=channels).astype(p),
               running_mean=rng.normal(size=channels).astype(p),
               running_spread=rng.uniform(0.5, 2.0, channels).astype(p))
    # channels with beta = -0 and gamma = 0: a value of +0 or -0 (eval modes), or beta
    out["beta"][rng.random(channels) < 0.2] = -0.0
    out["gamma"][rng.random(channels) < 0.1] = 0.0
    a, b = rng.normal(size=channels), rng.normal(size=channels)
    a[rng.random(channels) < 0.2] = 0.0          # y = b, signed zeros included
    b[rng.random(channels) < 0.3] = -0.0
    out.update(a=a, b=b)
    return out


def forward(x3, mode, p, residual=None, relu=False, wide=False):
    """y and every per-channel output of one op (bytes), y in a guarded output."""
    channels = x3.shape[1]
    y, intact = guarded(x3.shape, x3.dtype)
    outputs = {}
    if mode == "affine":
        a = p["a"].copy()
        if wide:   # channels whose coefficient leaves the maps' safe range: the wide map
            a[::3] = 2.0 ** -1010
        _cpu.forward(x3, y, "affine", a=a, b=p["b"], residual=residual, relu=relu)
    else:
        rm, rs = p["running_mean"].copy(), p["running_spread"].copy()
        outputs = dict(mean=np.empty(channels), invstd=np.empty(channels), running_mean=rm,
                       running_spread=rs)
        if mode == "brn_train":
            outputs.update(r=np.empty(channels), d=np.empty(channels))
        _cpu.forward(x3, y, mode, p["gamma"], p["beta"], rm, rs, eps=1e-3, momentum=0.1,
                     rmax=1.5, dmax=0.5, unbiased=True, residual=residual, relu=relu,
                     **{k: v for k, v in outputs.items() if k not in ("running_mean", "running_spread")})
    assert intact(), "the kernel wrote outside y"
    return y, {k: v.tobytes() for k, v in outputs.items()}


def unfused(y0, z, relu):
    """numpy's composition in y0's dtype."""
    with np.errstate(all="ignore"):
        v = y0 if z is None else np.add(y0, z)
    assert v.dtype == y0.dtype
    if relu:
        v = np.where(v < 0, np.zeros((), v.dtype), v)
    return v


def assert_same(actual, expected, y0, z, what):
    """bitwise, but NaN-ness alone where y0 and z are both NaN"""
    both = np.isnan(y0.astype(np.float64))
    if z is not None:
        both &= np.isnan(z.astype(np.float64))
    else:
        both[...] = False
    a, e = actual.copy(), expected.copy()
    assert (np.isnan(a[both].astype(np.float64)) == np.isnan(e[both].astype(np.float64))).all(), what
    a[both] = e[both] = 0
    if a.tobytes() != e.tobytes():
        bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
        where = np.flatnonzero(a.view(bits) != e.view(bits))
        i = where[0]
        raise AssertionError(
            f"{what}: {where.size} values differ, first at {np.unravel_index(i, a.shape)}: "
            f"fused {a.reshape(-1)[i]!r} unfused {e.reshape(-1)[i]!r} (y0 {y0.reshape(-1)[i]!r}, "
            f"z {None if z is None else z.reshape(-1)[i]!r})")


# --- values --------------------------------------------------------------------------

def x_values(rng, shape, dtype, specials):
    """Per-channel offsets and spreads; with ``specials``, a NaN or an infinity in some
    channels (whose batch statistics are then NaN) and some constant channels."""
    outer, channels, inner = shape
    x = rng.normal(size=shape) * rng.uniform(0.3, 3.0, (1, channels, 1)) \
        + rng.normal(0, 2, (1, channels, 1))
    x[:, rng.random(channels) < 0.15] = 1.5   # constant: t is exactly beta in training
    x = x.astype(dtype)
    if specials and x.size > 1:
        flat = x.reshape(-1)
        picks = rng.integers(0, flat.size, 3)
        flat[picks] = np.array([np.nan, np.inf, -np.inf]).astype(dtype)
    return x


def z_values(rng, y0, specials=True):
    """z around -y0: exactly -y0 (a sum of +0), -y0 nudged to either side (tiny sums of
    either sign), signed zeros, and (``specials``) infinities and NaN; the rest of y0's
    size, so that the sums fall on both sides of 0."""
    dtype = y0.dtype
    t = y0.astype(np.float64)
    z = rng.normal(size=y0.shape) * np.where(np.isfinite(t), np.abs(t), 1.0) + 0.0
    kind = rng.integers(0, 12, y0.shape)
    z = np.where(kind == 0, -t, z)
    z = np.where(kind == 1, -t * (1 + 2.0 ** -7), z)
    z = np.where(kind == 2, -t * (1 - 2.0 ** -7), z)
    z = np.where(kind == 3, -0.0, z)
    z = np.where(kind == 4, 0.0, z)
    if specials:
        z = np.where(kind == 5, np.where(rng.random(y0.shape) < 0.5, np.inf, -np.inf), z)
        z = np.where(kind == 6, np.nan, z)
    z = z.astype(dtype)
    exact = kind == 0                 # -y0 in y0's own dtype: the sum is exactly 0
    z[exact] = -y0[exact]
    return z


# --- shapes: one strategy per path ------------------------------------------------------

def rows_chunk(width):
    return 64 * -(-64 // width) if width < 64 else 64   # kernels.c chunk_len


@st.composite
def shapes(draw):
    """(outer, C, inner) on each path of the forward's maps (cext/kernels.c, rows.inc,
    planes.inc): NC rows, folded rows (inner 2 .. 8), narrow rows (fewer than 8 values,
    taken 8 at a time, with any rows left over), rows in column blocks whose row is at
    most the scratch (1024 values, block < row), rows longer than it, short planes
    (several to a piece of the scratch), long planes (in pieces), and planes of 1024
    values or more over 8 channels or more, which training on the AVX2 loops pipelines."""
    kind = draw(st.sampled_from(["rows", "folded", "narrow", "blocks", "long rows",
                                 "short planes", "long planes", "pipelined"]))
    if kind == "rows":
        channels = draw(st.integers(8, 300))
        return draw(st.integers(2, 2 * rows_chunk(channels) + 9)), channels, 1
    if kind == "folded":
        inner = draw(st.integers(2, 8))
        channels = draw(st.integers(2, 70))
        return draw(st.integers(2, 140)), channels, inner
    if kind == "narrow":
        channels, inner = draw(st.sampled_from([(1, 1), (3, 1), (7, 1), (2, 3), (3, 2), (1, 7)]))
        return draw(st.integers(2, 1200)), channels, inner
    if kind == "blocks":   # 1024 columns in 2 blocks of 512: t takes the row's stride
        channels, inner = draw(st.sampled_from([(1024, 1), (512, 2), (256, 4)]))
        return draw(st.integers(2, 70)), channels, inner
    if kind == "long rows":
        return draw(st.integers(2, 70)), draw(st.sampled_from([1025, 1040, 2048, 2100])), 1
    if kind == "short planes":
        return draw(st.integers(1, 12)), draw(st.integers(1, 9)), draw(st.integers(9, 600))
    if kind == "long planes":
        return draw(st.integers(1, 4)), draw(st.integers(1, 5)), \
            draw(st.sampled_from([1023, 1024, 1040, 2061, 3136]))
    return draw(st.integers(1, 4)), draw(st.integers(8, 11)), \
        draw(st.sampled_from([1024, 1040, 1061, 2048]))


def whole_lines(shape, itemsize):
    """Whether the runs of an output are whole cache lines (then it streams, at threshold
    0, for float32 and the halves): rows, or planes, which up to 8 values run as rows."""
    outer, channels, inner = shape
    run = channels * inner if inner <= 8 else inner
    return itemsize <= 4 and run * itemsize % 64 == 0


def pipelined(dtype, shape, mode, threads, simd):
    """planes.inc pipeline_ranges: training with the AVX2 loops on planes of 1024 values
    or more, 4 channels or more per thread; float32 and float16 (bfloat16 with an
    epilogue takes the other schedule: kernels.c NM_EPILOGUE_SCRATCH)"""
    return (dtype in (np.float32, np.float16) and mode in TRAINING and simd
            and shape[2] >= 1024 and shape[1] >= 4 * threads)


def check_epilogues(x3, mode, settings, seed, specials=True, wide=False):
    """Every epilogue against the composition on the op's own output, with the same
    settings; the per-channel outputs unchanged by it; the path counters as expected."""
    rng = np.random.default_rng(seed)
    p = params_of(rng, x3.dtype, x3.shape[1], mode)
    with settings:
        y0, stats0 = forward(x3, mode, p, wide=wide)
        z = z_values(rng, y0, specials)
        for with_z, relu in EPILOGUES:
            residual = z if with_z else None
            streamed, piped = _cpu.streamed_ops(), _cpu.pipelined_ops()
            y, stats = forward(x3, mode, p, residual, relu, wide=wide)
            what = (f"{x3.dtype} {x3.shape} {mode} residual={with_z} relu={relu} "
                    f"threads={settings.threads} simd={settings.simd} stream={settings.stream}")
            assert_same(y, unfused(y0, residual, relu), y0, residual, what)
            assert stats == stats0, what
            if settings.stream and settings.simd:
                assert _cpu.streamed_ops() - streamed == whole_lines(x3.shape, x3.dtype.itemsize), what
            expected = pipelined(x3.dtype, x3.shape, mode, settings.threads, settings.simd)
            assert _cpu.pipelined_ops() - piped == expected, what


# --- the forward's epilogue ------------------------------------------------------------

@given(shape=shapes(), dtype=st.sampled_from(DTYPES), mode=st.sampled_from(MODES),
       threads=st.sampled_from([1, 2]), simd=st.sampled_from(SIMD), stream=st.booleans(),
       specials=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_the_epilogue_gives_the_composition_bitwise(shape, dtype, mode, threads, simd, stream,
                                                    specials, seed):
    x3 = x_values(np.random.default_rng(seed), shape, dtype, specials)
    check_epilogues(x3, mode, Settings(threads, simd, stream), seed, specials)


# one shape per path, every dtype, mode and setting, so each runs whatever Hypothesis draws
PATH_SHAPES = {"rows": (150, 48, 1), "folded": (70, 4, 8), "narrow": (300, 3, 2),
               "blocks": (9, 512, 2), "long rows": (5, 2100, 1), "short planes": (6, 7, 96),
               "long planes": (3, 2, 3136), "pipelined": (2, 9, 2048)}


@pytest.mark.parametrize("path", list(PATH_SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_path_every_mode_and_setting(path, dtype):
    shape = PATH_SHAPES[path]
    x3 = x_values(np.random.default_rng(1), shape, dtype, specials=False)
    plain = dtype == np.float64   # no AVX2 loops, nothing streamed: one setting does
    for mode in MODES:
        for threads in (1, 2):
            for simd in [False] if plain else SIMD:
                for stream in (False,) if plain else (False, True):
                    check_epilogues(x3, mode, Settings(threads, simd, stream), seed=threads)


@pytest.mark.parametrize("path", ["rows", "folded", "short planes", "long planes", "pipelined"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_channels_that_map_wide(path, dtype):
    """Channels whose coefficients leave the maps' range take the wide maps (kernels.c
    wide_map): by a tiny scale in the affine mode, and float32 training by a spread of
    1e25 (the halves cannot hold it, and float64's range is far wider)."""
    shape = PATH_SHAPES[path]
    x3 = x_values(np.random.default_rng(2), shape, dtype, specials=False)
    for simd in SIMD:
        for stream in (False, True):
            check_epilogues(x3, "affine", Settings(2, simd, stream), seed=3, wide=True)
    if dtype == np.float32:
        x3 = x3.copy()
        x3[:, ::2] *= np.float32(1e25)
        for mode in MODES[1:]:
            for simd in SIMD:
                check_epilogues(x3, mode, Settings(2, simd, True), seed=4)


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("simd", SIMD)
def test_every_half_value_as_x_and_as_z(dtype, simd):
    """The halves' sums and relu on every bit pattern: x through the identity map (each
    value as t; -0 comes out +0) and every value again as z, in two pairings; NaN as
    bfloat16's NumPy makes it (ml_dtypes gives every NaN sum its sign and no payload)."""
    every = np.arange(1 << 16, dtype=np.uint16).view(dtype)
    if dtype != np.float16:
        nan = np.isnan(every.astype(np.float32))
        every = every.copy()
        every[nan] = np.where(np.signbit(every[nan].astype(np.float32)), -np.nan, np.nan).astype(dtype)
    x3 = every.reshape(256, 256, 1)   # rows
    rng = np.random.default_rng(5)
    a, b = np.ones(256), np.zeros(256)
    with Settings(1, simd, stream=True):
        y0, _ = guarded(x3.shape, dtype)
        _cpu.forward(x3, y0, "affine", a=a, b=b)
        for z in (rng.permutation(every).reshape(x3.shape), every[::-1].reshape(x3.shape).copy()):
            for with_z, relu in EPILOGUES:
                residual = z if with_z else None
                y, intact = guarded(x3.shape, dtype)
                _cpu.forward(x3, y, "affine", a=a, b=b, residual=residual, relu=relu)
                assert intact()
                assert_same(y, unfused(y0, residual, relu), y0, residual,
                            f"{dtype} residual={with_z} relu={relu}")


def test_relu_keeps_negative_zero_and_nan():
    """act(v) = (v < 0) ? +0 : v, as torch.relu: -0 and NaN stay, -inf becomes +0"""
    x3 = np.array([-0.0, 0.0, np.nan, -np.nan, -np.inf, np.inf, -1e-45, 1e-45, -3.0, 3.0],
                  np.float32).reshape(1, 10, 1)
    a, b = np.ones(10), np.full(10, -0.0)   # y = x + -0: each x itself
    y = np.empty_like(x3)
    _cpu.forward(x3, y, "affine", a=a, b=b, relu=True)
    expected = np.array([-0.0, 0.0, np.nan, -np.nan, 0.0, np.inf, 0.0, 1e-45, 0.0, 3.0],
                        np.float32)
    assert y.reshape(-1).tobytes() == expected.tobytes()


def test_large_ops_stream_and_keep_the_bits():
    """An op over the default threshold (simd.h NM_STREAM_BYTES: 32 MiB of x, z and y)
    streams with the epilogue too, through the cpu backend's own outputs: NC rows of 64
    channels, and NCHW planes, which training pipelines."""
    if not _cpu.simd_enabled():
        pytest.skip("no AVX2 loops: nothing streams")
    rng = np.random.default_rng(6)
    for shape in ((45000, 64, 1), (8, 64, 6272)):
        x3 = rng.normal(size=shape).astype(np.float32)
        z = z_values(rng, x3, specials=True)
        stats = np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)
        for mode in ("bn_train", "bn_eval"):
            y0, saved0 = CPU._forward(mode, x3, None, None, *map(np.copy, stats), 1, 1e-5, 0.1)
            before = _cpu.streamed_ops()
            y, saved = CPU._forward(mode, x3, None, None, *map(np.copy, stats), 1, 1e-5, 0.1,
                                    residual=z, activation="relu")
            assert _cpu.streamed_ops() == before + 1
            assert_same(y, unfused(y0, z, True), y0, z, f"{shape} {mode}")
            assert saved.mean.tobytes() == saved0.mean.tobytes()


# --- the cpu backend -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layouts", ["nchw", "channels-last", "channels-last x, nchw z",
                                     "nc", "strided z"])
def test_the_backend_forward_takes_the_residual_in_any_layout(dtype, layouts):
    rng = np.random.default_rng(7)
    if layouts == "nc":
        x = x_values(rng, (40, 24, 1), dtype, False).reshape(40, 24)
    else:
        x = x_values(rng, (4, 6, 35), dtype, False).reshape(4, 6, 5, 7)
    if layouts.startswith("channels-last"):
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1)).transpose(0, 3, 1, 2)
    y_plain, _ = CPU._forward("bn_train", x, None, None, None, None, 1, 1e-5, 0.1)
    z = z_values(rng, y_plain)
    if layouts == "channels-last":
        z = np.ascontiguousarray(np.moveaxis(z, 1, -1)).transpose(0, 3, 1, 2)
    elif layouts == "strided z":
        z = np.repeat(z, 2, axis=0)[::2]
    for relu in (False, True):
        y, saved = CPU._forward("bn_train", x, None, None, None, None, 1, 1e-5, 0.1,
                                residual=z, activation="relu" if relu else None)
        assert y.shape == x.shape and y.strides == y_plain.strides
        assert_same(y, unfused(y_plain, z, relu), y_plain, z, layouts)
    stats_dtype = np.float32 if dtype.itemsize == 2 else dtype
    y, _ = CPU._forward("brn_eval", x, None, None, np.zeros(x.shape[1], stats_dtype),
                        np.ones(x.shape[1], stats_dtype), 1, 1e-5, 0.1, activation="relu")
    assert y.strides == y_plain.strides


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scale_shift_takes_a_residual_and_relu(dtype):
    rng = np.random.default_rng(8)
    x3 = x_values(rng, (5, 6, 40), dtype, True)
    a, b = rng.normal(size=6), rng.normal(size=6)
    y0 = CPU.scale_shift(x3, a, b)
    z = z_values(rng, y0)
    for residual, activation in ((z, None), (z, "relu"), (None, "relu"), (None, None)):
        y = CPU.scale_shift(x3, a, b, residual=residual, activation=activation)
        assert_same(y, unfused(y0, residual, activation == "relu"), y0, residual, activation)
    # a residual in Fortran order is copied to C order first
    y = CPU.scale_shift(x3, a.tolist(), b, residual=np.asfortranarray(z))
    assert_same(y, unfused(y0, z, False), y0, z, "converted residual")


@pytest.mark.parametrize("bad", ["activation", "shape", "dtype", "ndim"])
def test_scale_shift_checks_its_epilogue(bad):
    x3 = np.ones((2, 3, 4), np.float32)
    kwargs = dict(residual=np.ones((2, 3, 4), np.float32), activation=None)
    if bad == "activation":
        kwargs["activation"] = "gelu"
    elif bad == "shape":
        kwargs["residual"] = np.ones((2, 3, 5), np.float32)
    elif bad == "dtype":
        kwargs["residual"] = np.ones((2, 3, 4), np.float64)
    else:
        kwargs["residual"] = np.ones(24, np.float32)
    with pytest.raises((TypeError, ValueError)):
        CPU.scale_shift(x3, np.ones(3), np.zeros(3), **kwargs)


def test_plain_ops_after_fused_ones_have_no_epilogue():
    """The plain-call path fills its own kernel arguments: no residual, no relu"""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(8, 4, 6, 6)).astype(np.float32)
    z = np.full_like(x, 100.0)
    expected, _ = CPU._forward("bn_eval", x, None, None, np.zeros(4, np.float32),
                               np.ones(4, np.float32), 1, 1e-5, 0.1)
    for _ in range(3):
        CPU._forward("bn_eval", x, None, None, np.zeros(4, np.float32),
                     np.ones(4, np.float32), 1, 1e-5, 0.1, residual=z, activation="relu")
        y, _ = normops.batch_norm(x, None, None, np.zeros(4, np.float32), np.ones(4, np.float32),
                                  training=False, backend="cpu")
        assert y.tobytes() == expected.tobytes()


# --- the bindings' checks --------------------------------------------------------------

@pytest.mark.parametrize("bad", ["list", "float64", "other shape", "non-contiguous",
                                 "unaligned", "byte-swapped", "overlaps y", "is y", "stats"])
def test_the_bindings_check_the_residual(bad):
    x = np.ones((4, 3, 16), np.float32)
    y = np.empty_like(x)
    z = np.ones_like(x)
    mode, kwargs = "affine", dict(a=np.ones(3), b=np.zeros(3))
    if bad == "list":
        z = z.tolist()
    elif bad == "float64":
        z = z.astype(np.float64)
    elif bad == "other shape":
        z = np.ones((4, 3, 15), np.float32)
    elif bad == "non-contiguous":
        z = np.ones((4, 3, 32), np.float32)[:, :, ::2]
    elif bad == "unaligned":
        z = unaligned(z)
    elif bad == "byte-swapped":
        z = z.astype(">f4")
    elif bad == "overlaps y":
        block = np.ones(x.size + 8, np.float32)
        y, z = block[:x.size].reshape(x.shape), block[8:].reshape(x.shape)
    elif bad == "is y":
        z = y
    else:
        mode, kwargs, y = "stats", dict(mean=np.empty(3), m2=np.empty(3)), None
    with pytest.raises((TypeError, ValueError)):
        _cpu.forward(x, y, mode, residual=z, **kwargs)
    if bad == "stats":
        with pytest.raises(ValueError):
            _cpu.forward(x, None, "stats", relu=True, **kwargs)


# --- the mask kernel -------------------------------------------------------------------

def mask_expected(dy, y):
    return np.where(y <= 0, np.zeros((), dy.dtype), dy)


def special_values(dtype):
    """zeros, infinities, NaN, the smallest subnormals and normals of each sign, ones"""
    info = ml_dtypes.finfo(dtype) if dtype.name == "bfloat16" else np.finfo(dtype)
    tiny, sub = float(info.tiny), float(info.smallest_subnormal)
    values = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, sub, -sub, tiny, -tiny, 1.0, -1.0,
              float(info.max), -float(info.max)]
    return np.array(values, np.float64).astype(dtype)


@given(n=st.integers(0, 40000), dtype=st.sampled_from(DTYPES), threads=st.sampled_from([1, 2]),
       simd=st.sampled_from(SIMD), stream=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_the_mask_gives_numpys_bits(n, dtype, threads, simd, stream, seed):
    """Pieces of 16384 values shared by the threads, the last one partial; streamed (float32
    and the halves, with the AVX2 loops) in whole lines, the last partial line not."""
    rng = np.random.default_rng(seed)
    pool = np.concatenate([special_values(dtype), rng.normal(size=16).astype(dtype)])
    y = pool[rng.integers(0, pool.size, n)]
    dy = pool[rng.integers(0, pool.size, n)]
    out, intact = guarded((n,), dtype)
    with Settings(threads, simd, stream):
        before = _cpu.streamed_ops()
        _cpu.relu_mask(dy, y, out)
        assert _cpu.streamed_ops() - before == (stream and simd and dtype.itemsize <= 4 and n > 0)
    assert intact()
    assert out.tobytes() == mask_expected(dy, y).tobytes()


@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("simd", SIMD)
@pytest.mark.parametrize("stream", [False, True])
def test_the_mask_on_every_half_value(dtype, simd, stream):
    y = np.arange(1 << 16, dtype=np.uint16).view(dtype)
    dy = np.random.default_rng(10).permutation(y)
    out, intact = guarded(y.shape, dtype)
    with Settings(2, simd, stream):
        _cpu.relu_mask(dy, y, out)
    assert intact()
    assert out.tobytes() == mask_expected(dy, y).tobytes()


def bits_equal(a, b):
    """the same bits, value by value (any layouts)"""
    unsigned = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return a.shape == b.shape and (a.view(unsigned) == b.view(unsigned)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_the_backend_mask_keeps_dys_layout(dtype):
    rng = np.random.default_rng(11)
    pool = np.concatenate([special_values(dtype), rng.normal(size=16).astype(dtype)])
    dy = pool[rng.integers(0, pool.size, (3, 5, 4, 6))]
    y = pool[rng.integers(0, pool.size, dy.shape)]
    channels_last = np.ascontiguousarray(np.moveaxis(dy, 1, -1)).transpose(0, 3, 1, 2)
    for g in (dy, channels_last, np.asfortranarray(dy)):
        for v in (y, np.ascontiguousarray(np.moveaxis(y, 1, -1)).transpose(0, 3, 1, 2)):
            out = CPU.relu_mask(g, v)
            assert out.dtype == dy.dtype
            if g is not channels_last:
                assert out.flags.c_contiguous
            else:
                assert out.strides == g.strides
            assert bits_equal(out, mask_expected(g, v))
    # 1-D, and a 2-D strided view (copied)
    for g, v in ((dy[0, 0, 0], y[0, 0, 0]), (dy[0, :, 0, :], y[0, :, 0, :])):
        assert bits_equal(CPU.relu_mask(g, v), mask_expected(g, v))


@pytest.mark.parametrize("bad", ["dtype", "shape", "non-contiguous", "read-only", "overlap"])
def test_the_mask_bindings_check_their_arrays(bad):
    dy, y, out = (np.ones(32, np.float32) for _ in range(3))
    if bad == "dtype":
        y = y.astype(np.float64)
    elif bad == "shape":
        out = np.ones(31, np.float32)
    elif bad == "non-contiguous":
        dy = np.ones(64, np.float32)[::2]
    elif bad == "read-only":
        out.flags.writeable = False
    else:
        out = dy
    with pytest.raises(ValueError):
        _cpu.relu_mask(dy, y, out)
