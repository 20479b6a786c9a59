"""Forked processes: a child of a process whose kernels had started threads runs its ops
on one thread (libgomp's workers do not exist there, and a team would wait for them
forever), with the parent's results bit for bit; it refuses more threads with an error
that names the way out. Each scenario runs in a fresh interpreter whose process group is
killed after a timeout, so a hung child fails its test instead of hanging the run."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from normops._backends import _cpu

if not hasattr(os, "fork"):
    pytest.skip("os.fork does not exist on this platform", allow_module_level=True)

OPENMP = _cpu.openmp_enabled()

PRELUDE = textwrap.dedent("""
    import os, pickle, traceback
    import numpy as np
    import normops
    from normops._backends import _cpu

    SHAPES = [((16, 32, 32, 32), np.float32), ((4000, 40), np.float64), ((6, 19, 300), np.float32)]

    def steps():
        \"\"\"The bytes of a training forward and backward of BN and BRN on each shape.\"\"\"
        out = []
        for shape, dtype in SHAPES:
            rng = np.random.default_rng(1)
            x, dy = (rng.normal(size=shape).astype(dtype) for _ in range(2))
            g, b = np.linspace(0.5, 2, shape[1]).astype(dtype), np.zeros(shape[1], dtype)
            rm, rv = np.zeros(shape[1], dtype), np.ones(shape[1], dtype)
            y, saved = normops.batch_norm(x, g, b, rm, rv)
            y2, saved2 = normops.batch_renorm(x, g, b, rm, np.ones(shape[1], dtype))
            arrays = (y, rm, rv, *normops.batch_norm_backward(dy, x, saved, g), y2,
                      *normops.batch_renorm_backward(dy, x, saved2, g))
            out.append(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays))
        return out

    def steps_on_a_team():
        \"\"\"steps() on teams of 2 threads (where OpenMP is built in), whose workers then
        exist in this process only.\"\"\"
        _cpu.set_min_values_per_thread(1)
        normops.set_num_threads(2)
        try:
            assert _cpu.team_for(1000) == (2 if _cpu.openmp_enabled() else 1)
            return steps()
        finally:
            normops.set_num_threads(0)
            _cpu.set_min_values_per_thread(0)

    def in_child(fn):
        \"\"\"fn() run in a forked child: its result, sent back through a pipe.\"\"\"
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                out = (True, fn())
            except BaseException:
                out = (False, traceback.format_exc())
            with os.fdopen(w, "wb") as f:
                pickle.dump(out, f)
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            ok, out = pickle.load(f)
        os.waitpid(pid, 0)
        assert ok, "in the child: " + out
        return out
""")


def run(body, timeout=60, **env):
    """Runs PRELUDE + body in a fresh interpreter, in a process group of its own that is
    killed on timeout (a hung forked child holds the output pipes open)."""
    proc = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"still running after {timeout} s: a forked child hung") from None
    assert proc.returncode == 0, err
    return out


def test_child_of_a_process_with_threads_runs_its_ops_on_one_thread():
    run("""
        parent = steps_on_a_team()

        def child():
            state = (_cpu.forked_child(), normops.get_num_threads(), _cpu.team_for(10**8))
            config = normops._config.config()
            return state, config["forked child"], steps()

        state, line, results = in_child(child)
        assert state == ((True, 1, 1) if _cpu.openmp_enabled() else (False, 1, 1)), state
        assert line.startswith("yes" if _cpu.openmp_enabled() else "no"), line
        assert results == parent
        assert not _cpu.forked_child() and steps() == parent
    """)


def test_fork_pool_after_threads():
    run("""
        import multiprocessing

        def job(i):
            return normops.get_num_threads(), steps()[i]

        parent = steps_on_a_team()
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results = pool.map(job, range(len(SHAPES)))
        assert [threads for threads, _ in results] == [1] * len(SHAPES)
        assert [result for _, result in results] == parent
    """)


@pytest.mark.skipif(not OPENMP, reason="a serial build never marks its children")
def test_forked_child_refuses_more_threads():
    run("""
        steps_on_a_team()

        def child():
            try:
                normops.set_num_threads(2)
            except RuntimeError as exc:
                message = str(exc)
            else:
                raise AssertionError("set_num_threads(2) was accepted")
            for n in (1, 0, None):
                normops.set_num_threads(n)
                assert normops.get_num_threads() == 1
            return message

        message = in_child(child)
        assert "forked after normops's OpenMP threads" in message, message
        assert "'spawn' or 'forkserver'" in message, message
    """)


def test_child_of_a_process_without_threads_keeps_them():
    """A parent whose ops all ran on its own thread leaves its children their threads,
    which then start teams of their own."""
    run("""
        normops.set_num_threads(1)
        parent = steps()
        normops.set_num_threads(0)

        def child():
            state = (_cpu.forked_child(), normops.get_num_threads())
            return state, steps_on_a_team()

        state, results = in_child(child)
        assert state == (False, 2 if _cpu.openmp_enabled() else 1), state
        assert results == parent
    """, OMP_NUM_THREADS="2")
