"""The cpu backend (C kernels): every layout and memory view equals the reference; the
numerics DESIGN.md promises; bitwise determinism over thread counts; thread safety; no
memory growth; the build report."""
import hashlib
import os
import resource
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from hypothesis import given

import normops
from normops import testing
from normops._backends import _cpu
from memory import unaligned
from normops.testing import (Case, as_memory, assert_close, assert_steps_close,
                             backend_implementation, bn_step, brn_step)
from normops.testing.strategies import cases

CPU = normops.get_backend("cpu")   # built from source with the package: never skipped
CPU_OPENMP = normops._config.config().get("openmp") == "on"
ON_CPU, ON_REFERENCE = backend_implementation("cpu"), backend_implementation("reference")


def fixed_case(shape, axis, dtype, seed=0, affine=True):
    rng = np.random.default_rng(seed)
    channels = shape[axis]
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0) + rng.normal() * 3
    dy = rng.normal(size=shape)
    gamma = rng.uniform(0.5, 2.0, channels) if affine else None
    beta = rng.normal(size=channels) if affine else None

    def cast(v):
        return None if v is None else np.asarray(v, dtype=dtype)

    return Case(cast(x), cast(dy), axis, cast(gamma), cast(beta),
                cast(rng.normal(size=channels)), cast(rng.uniform(0.5, 2.0, channels)), 0.1, 1e-5)


def as_view(arr, kind):
    """The same values in a different memory arrangement."""
    return unaligned(arr) if kind == "unaligned" else as_memory(arr, kind)


VIEWS = ["contiguous", "strided", "reversed", "fortran", "channels_last", "unaligned"]
# (shape, axis): NC, NCHW, NHWC, 5-D, axis=2, m = 2, C = 1, 3, 17, inner = 1, 7, 3136;
# (45, 3, 7) and (9, 2, 100) group short planes into units of 19 and 2 planes, the last
# one partial; narrow rows, (64, 1), (70001, 1) and (130, 3), go 8 rows at a time; planes
# of up to 8 values, (3, 5, 7) and (45, 3, 7), and (24, 300, 8) run as rows of C planes;
# (40, 3000) and (24, 300, 8), rows of one chunk, in two column blocks
LAYOUTS = [((2, 3), 1), ((64, 1), 1), ((70001, 1), 1), ((40, 3000), 1), ((24, 300, 8), 1), ((5, 17), 1), ((3, 5, 7), 1), ((2, 3, 4, 5), 1),
           ((2, 5, 6, 3), -1), ((2, 3, 2, 3, 4), 1), ((2, 3, 4, 5), 2), ((2, 17, 56, 56), 1),
           ((130, 3), 1), ((1, 3, 2), 1), ((45, 3, 7), 1), ((9, 2, 100), 1)]


# channels-last memory only exists for inputs with 3+ axes and the channel axis 1
LAYOUT_VIEWS = [(shape, axis, view) for shape, axis in LAYOUTS for view in VIEWS
                if view != "channels_last" or (len(shape) >= 3 and axis == 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis,view", LAYOUT_VIEWS)
def test_every_layout_and_view_matches_reference(shape, axis, view, dtype):
    case = fixed_case(shape, axis, dtype)
    viewed = case.replace(x=as_view(case.x, view), dy=as_view(case.dy, view))
    for training in (True, False):
        assert_steps_close(bn_step(ON_CPU, viewed, training=training),
                           bn_step(ON_REFERENCE, case, training=training), case)
        renorm = case.as_renorm()
        assert_steps_close(brn_step(ON_CPU, viewed.as_renorm(), training=training),
                           brn_step(ON_REFERENCE, renorm, training=training), renorm)


@given(case=cases())
def test_kernels_match_reference_kernels(case):
    ref = normops.get_backend("reference")
    x3 = np.moveaxis(case.x, case.axis, 1).reshape(-1, case.x.shape[case.axis], 1)
    dy3 = np.moveaxis(case.dy, case.axis, 1).reshape(x3.shape)
    (n, mean, m2), (n_ref, mean_ref, m2_ref) = CPU.batch_stats(x3), ref.batch_stats(x3)
    assert n == n_ref
    # each result against the size of its terms: the mean is a sum of values up to
    # x_max, known to tol * x_max, which moves m2 by n * (tol * x_max)^2 at least
    x_max = np.abs(x3).max(axis=(0, 2)).astype(np.float64)
    tol = testing.tolerance(case.x.dtype)
    assert_close(mean, mean_ref, case.x.dtype, scale=x_max, what="mean")
    assert_close(m2, m2_ref, case.x.dtype, scale=m2_ref + n * tol * x_max ** 2, what="m2")
    a, b = np.linspace(-2, 2, x3.shape[1]), np.linspace(1, 3, x3.shape[1])
    col = lambda v: v[None, :, None]  # noqa: E731
    assert_close(CPU.scale_shift(x3, a, b), ref.scale_shift(x3, a, b), case.x.dtype,
                 scale=col(np.abs(a) * x_max + np.abs(b)), what="y")
    dy_sum = np.abs(dy3).sum(axis=(0, 2)).astype(np.float64)
    for got, want, scale in zip(CPU.grad_stats(dy3, x3, mean_ref), ref.grad_stats(dy3, x3, mean_ref),
                                (dy_sum, dy_sum * 2 * x_max)):
        assert_close(got, want, case.x.dtype, scale=scale, what="grad_stats")
    dy_max = np.abs(dy3).max(axis=(0, 2))
    assert_close(CPU.grad_input(dy3, x3, a, b, a), ref.grad_input(dy3, x3, a, b, a),
                 case.x.dtype, scale=col(np.abs(a) * dy_max + np.abs(b) * x_max + np.abs(a)), what="dx")


@pytest.mark.parametrize("shape", [(20000, 2), (4, 2, 5000)], ids=["rows", "planes"])
def test_large_offset_keeps_the_variance(shape):
    x = 1e8 + np.random.default_rng(1).normal(size=shape)
    x3 = x.reshape(shape[0], 2, -1)
    _, mean, m2 = CPU.batch_stats(x3)
    for c in range(2):
        values = x3[:, c, :]
        two_pass = ((values - values.mean()) ** 2).sum()
        assert abs(m2[c] - two_pass) <= 1e-6 * two_pass


@pytest.mark.parametrize("shape", [(300, 4, 1), (3, 4, 300)], ids=["rows", "planes"])
def test_float32_is_accumulated_in_double(shape):
    x = (1e4 + np.random.default_rng(2).normal(size=shape)).astype(np.float32)
    _, mean, m2 = CPU.batch_stats(x)
    exact = x.astype(np.float64)
    want_mean = exact.mean(axis=(0, 2))
    want_m2 = ((exact - want_mean[None, :, None]) ** 2).sum(axis=(0, 2))
    np.testing.assert_allclose(mean, want_mean, rtol=1e-13)
    np.testing.assert_allclose(m2, want_m2, rtol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((64, 3), 1), ((5003, 3), 1), ((4, 3, 9), 1),
                                        ((4, 5, 5, 3), -1)])
def test_constant_channel_gives_exactly_beta(shape, axis, dtype):
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape).astype(dtype)
    np.moveaxis(x, axis, 0)[1] = dtype(0.1) + dtype(1e7)   # a value with rounding in it
    beta = np.array([0.5, -1.25, 3.0], dtype)
    y, saved = normops.batch_norm(x, np.full(3, 2.0, dtype), beta, axis=axis, backend="cpu")
    assert np.all(np.moveaxis(y, axis, 0)[1] == beta[1])
    assert saved.mean[1] == np.moveaxis(x, axis, 0)[1].flat[0]


DETERMINISM_SCRIPT = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    import normops
    from normops._backends import _cpu
    _cpu.set_min_values_per_thread(1)   # full teams on these small arrays too
    digest = hashlib.sha256()
    for shape, axis in [((1000, 37), 1), ((6, 19, 300), 1), ((41, 5, 10), 1), ((4, 9, 9, 21), -1),
                        ((20003, 3), 1), ((40, 3000), 1), ((300, 7, 2, 3), 1),
                        ((3, 9, 33, 32), 1)]:
        for dtype in (np.float32, np.float64):
            rng = np.random.default_rng(7)
            x = (rng.normal(size=shape) * 3 + 5).astype(dtype)
            dy = rng.normal(size=shape).astype(dtype)
            c = shape[axis]
            g, b = np.linspace(0.5, 2, c).astype(dtype), np.linspace(-1, 1, c).astype(dtype)
            rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
            y, saved = normops.batch_norm(x, g, b, rm, rv, axis=axis)
            grads = normops.batch_norm_backward(dy, x, saved, g)
            rs = np.ones(c, dtype)
            y2, saved2 = normops.batch_renorm(x, g, b, rm, rs, axis=axis)
            grads2 = normops.batch_renorm_backward(dy, x, saved2, g)
            for arr in (y, rm, rv, saved.mean, saved.invstd, *grads, y2, rs, *grads2):
                digest.update(np.ascontiguousarray(arr).tobytes())
    print(normops.get_num_threads(), digest.hexdigest(), _cpu.pipelined_ops())
""")


def test_results_are_bitwise_identical_for_any_thread_count():
    digests = {}
    for threads in (1, 2, 3, 4):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        out = subprocess.run([sys.executable, "-c", DETERMINISM_SCRIPT], env=env, check=True,
                             capture_output=True, text=True, timeout=120).stdout.split()
        if CPU_OPENMP:
            assert out[0] == str(threads)
            # (3, 9, 33, 32) float32 (4 ops) is pipelined with 4+ channels per thread
            # (kernels.c NM_PIPE_CHANNELS), so the digests also compare the two schedules
            if _cpu.simd_enabled():
                assert int(out[2]) == (4 if threads <= 2 else 0), (threads, out[2])
        digests[threads] = out[1]
    assert len(set(digests.values())) == 1, digests


def test_small_ops_run_on_fewer_threads():
    """One thread per 32,768 values at most (cext/threads.h), never more than asked for."""
    assert _cpu.get_min_values_per_thread() == 32768
    before = normops.get_num_threads()
    try:
        normops.set_num_threads(4)
        expected = [1, 1, 1, 2, 3, 4, 4] if CPU_OPENMP else [1] * 7
        values = [0, 64 * 64, 65535, 65536, 3 * 32768 + 5, 4 * 32768, 10**8]
        assert [_cpu.team_for(v) for v in values] == expected
        _cpu.set_min_values_per_thread(1000)
        assert _cpu.team_for(2500) == (2 if CPU_OPENMP else 1)
    finally:
        normops.set_num_threads(before)
        _cpu.set_min_values_per_thread(0)
    assert _cpu.get_min_values_per_thread() == 32768


def test_set_num_threads_changes_the_team_not_the_result():
    case = fixed_case((300, 40), 1, np.float32)
    before = normops.get_num_threads()
    _cpu.set_min_values_per_thread(1)     # a team of 3 on 12,000 values
    try:
        results = []
        for n in (1, 3):
            normops.set_num_threads(n)
            assert normops.get_num_threads() == (n if CPU_OPENMP else 1)
            step = bn_step(ON_CPU, case)
            results.append(b"".join(np.ascontiguousarray(step[k]).tobytes() for k in ("y", "dx", "dgamma")))
        assert results[0] == results[1]
    finally:
        normops.set_num_threads(0)
        _cpu.set_min_values_per_thread(0)
    assert normops.get_num_threads() == before
    with pytest.raises(ValueError, match="positive count"):
        normops.set_num_threads(-1)


def test_thread_counts_are_bounded():
    """At most 4 threads per processor (cext/threads.c); above that an error, not a
    process killed by libgomp's failed thread creation."""
    bound = normops.max_threads()
    if CPU_OPENMP and hasattr(os, "sched_getaffinity"):
        assert bound == 4 * len(os.sched_getaffinity(0))
    assert bound >= 4 and _cpu.max_threads() == bound
    try:
        normops.set_num_threads(bound)
        assert normops.get_num_threads() == (bound if CPU_OPENMP else 1)
        for n in (bound + 1, 2**31, 10**100):
            with pytest.raises(ValueError, match=rf"at most max_threads\(\) = {bound} .*got {n}$"):
                normops.set_num_threads(n)
        for n in (True, 2.0):
            with pytest.raises(TypeError):
                normops.set_num_threads(n)
        assert normops.get_num_threads() == (bound if CPU_OPENMP else 1)
    finally:
        normops.set_num_threads(0)


CLAMP_SCRIPT = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    import normops
    from normops._backends import _cpu

    def threads():   # this process's threads, where /proc tells (-1 elsewhere)
        try:
            with open("/proc/self/status") as f:
                return int(dict(line.split(":", 1) for line in f)["Threads"])
        except OSError:
            return -1

    _cpu.set_min_values_per_thread(1)   # the largest team this op may have
    x = np.random.default_rng(5).normal(size=(64, 1000)).astype(np.float32)
    before = threads()
    y, saved = normops.batch_norm(x)
    started = threads() - before if before > 0 else -1
    print(normops.get_num_threads(), normops.max_threads(), started,
          hashlib.sha256(y.tobytes()).hexdigest())
""")


def test_openmp_default_is_clamped_to_the_bound():
    env = {**os.environ, "OMP_NUM_THREADS": "100000"}
    out = subprocess.run([sys.executable, "-c", CLAMP_SCRIPT], env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout.split()
    threads, bound, started = int(out[0]), int(out[1]), int(out[2])
    assert bound == normops.max_threads()
    assert threads == (bound if CPU_OPENMP else 1)
    assert started < bound, f"the op started {started} threads"
    x = np.random.default_rng(5).normal(size=(64, 1000)).astype(np.float32)
    assert out[3] == hashlib.sha256(normops.batch_norm(x)[0].tobytes()).hexdigest()


def test_concurrent_calls_equal_serial_calls():
    cases_ = [fixed_case(shape, 1, dtype, seed=i) for i, (shape, dtype) in enumerate(
        [((256, 64), np.float32), ((8, 16, 100), np.float64), ((64, 33), np.float64),
         ((4, 8, 50), np.float32)])]

    def run(case):
        step = bn_step(ON_CPU, case)
        return hashlib.sha256(b"".join(np.ascontiguousarray(step[k]).tobytes()
                                       for k in ("y", "running_mean", "dx", "dgamma"))).hexdigest()

    serial = [run(case) for case in cases_]
    results = [[None] * 25 for _ in cases_]

    def worker(i):
        for j in range(25):
            results[i][j] = run(cases_[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(cases_))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, expected in enumerate(serial):
        assert results[i] == [expected] * 25


def test_20000_calls_do_not_grow_memory():
    x = np.random.default_rng(4).normal(size=(32, 8, 3)).astype(np.float32)
    g, b = np.ones(8, np.float32), np.zeros(8, np.float32)
    rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)

    def calls(n):
        for _ in range(n):
            y, saved = normops.batch_norm(x, g, b, rm, rv)
            normops.batch_norm_backward(y, x, saved, g)

    calls(2000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    calls(20000)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 4096, f"max RSS grew by {grown_kib} KiB over 20,000 calls"


def test_cpu_is_the_default_and_reports_its_build():
    assert normops.backends()[[i.name for i in normops.backends()].index("cpu")].available
    assert normops._registry.selected_name() == "cpu" or os.environ.get("NORMOPS_BACKEND")
    config = normops._config.config()
    assert config["cpu extension"] == "built"
    assert "flags:" in config["build"] and config["threads"] >= 1
    out = subprocess.run([sys.executable, "-m", "normops", "backends"], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    assert "openmp:" in out and "build:" in out
