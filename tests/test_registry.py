"""The backend registry: listing, errors, selection order, contexts, entry points."""
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import normops
from normops import _registry as registry
from kernels_only import KernelsOnly

REFERENCE = normops.get_backend("reference")
AUTOMATIC = normops.get_backend()  # what NumPy arrays get with nothing chosen


class Recording(KernelsOnly):
    """The reference kernels, counting the calls that reach them."""

    def __init__(self):
        super().__init__(REFERENCE)
        self.calls = 0
        inner = self.batch_stats

        def batch_stats(x):
            self.calls += 1
            return inner(x)

        self.batch_stats = batch_stats


def x_batch():
    return np.random.default_rng(0).normal(size=(4, 3))


def test_builtin_reference_is_listed_and_available():
    infos = {i.name: i for i in normops.backends()}
    ref = infos["reference"]
    assert ref.available and ref.reason is None
    assert ref.device == "cpu" and ref.source == "built-in" and ref.auto_for == "numpy"
    # importing a backend module leaves the listing function in place
    import normops._backends.reference as reference_module
    assert isinstance(normops.get_backend("reference"), reference_module.ReferenceBackend)
    assert callable(normops.backends)


def test_unknown_backend_is_a_value_error_naming_the_known_ones():
    with pytest.raises(normops.UnknownBackendError, match=r"unknown backend 'nope'; known backends: .*reference"):
        normops.set_backend("nope")
    with pytest.raises(ValueError):
        normops.batch_norm(x_batch(), backend="nope")
    with pytest.raises(TypeError, match=r"a backend is selected by its name \(a str\), got 3"):
        normops.batch_norm(x_batch(), backend=3)


def test_unavailable_backend_says_why_and_what_to_install(register):
    def needs_fancylib():
        raise ImportError("No module named 'fancylib'")

    register("fancy", needs_fancylib, install_hint="pip install fancylib")
    info = {i.name: i for i in normops.backends()}["fancy"]
    assert not info.available and info.reason == "No module named 'fancylib'"
    with pytest.raises(normops.BackendUnavailableError,
                       match=r"backend 'fancy' is not available: No module named 'fancylib'\. To use it: pip install fancylib\."):
        normops.batch_norm(x_batch(), backend="fancy")
    with pytest.raises(normops.BackendUnavailableError):
        with normops.use_backend("fancy"):
            pass


def test_factories_report_unavailability_and_broken_plugins_do_not_break_listing(register):
    def no_device():
        raise normops.BackendUnavailableError("no CUDA device")

    def broken():
        raise ZeroDivisionError("oops")

    register("nodevice", no_device)
    register("broken", broken)
    infos = {i.name: i for i in normops.backends()}
    assert infos["nodevice"].reason == "no CUDA device"
    assert infos["broken"].reason == "loading it raised ZeroDivisionError: oops"
    assert infos["reference"].available


def test_backend_missing_a_kernel_is_refused_with_its_name(register):
    class NoGradInput:
        def batch_stats(self, x): ...
        def scale_shift(self, x, a, b): ...
        def grad_stats(self, dy, x, mean): ...

    with pytest.raises(normops.InvalidBackendError, match="'partial' is refused: it lacks the required kernel.* grad_input"):
        normops.register_backend("partial", NoGradInput())
    assert "partial" not in {i.name for i in normops.backends()}
    # a class or factory is checked when it is first loaded
    register("lazy-partial", NoGradInput)
    info = {i.name: i for i in normops.backends()}["lazy-partial"]
    assert not info.available and "grad_input" in info.reason
    with pytest.raises(normops.InvalidBackendError, match="grad_input"):
        normops.get_backend("lazy-partial")


def test_duplicate_names_need_replace(register):
    register("dup", Recording())
    with pytest.raises(ValueError, match="already registered"):
        normops.register_backend("dup", Recording())
    replacement = Recording()
    normops.register_backend("dup", replacement, replace=True)
    assert normops.get_backend("dup") is replacement


@pytest.mark.parametrize("kwargs, match", [
    (dict(array_module="numpy", priority="high"), "priority must be an int, got 'high'"),
    (dict(array_module="numpy", priority=True), "priority must be an int, got True"),
    (dict(array_module=np, priority=1), "array_module is the array library's top-level module name"),
    (dict(array_module="numpy"), "array_module and priority are given together"),
])
def test_registration_arguments_are_checked(kwargs, match):
    with pytest.raises(TypeError, match=match):
        normops.register_backend("badargs", Recording(), **kwargs)
    assert "badargs" not in {i.name for i in normops.backends()}


def test_a_factory_returning_a_class_is_refused(register):
    register("returns-class", lambda: Recording)
    with pytest.raises(normops.InvalidBackendError, match="its factory returned the class Recording, not an instance"):
        normops.batch_norm(x_batch(), backend="returns-class")


def test_a_slow_factory_does_not_block_other_backends(register):
    release = threading.Event()
    started = threading.Event()

    def slow():
        started.set()
        release.wait(10)
        return Recording()

    register("slow", slow)
    loader = threading.Thread(target=normops.get_backend, args=("slow",))
    loader.start()
    try:
        assert started.wait(10)
        done = []
        caller = threading.Thread(target=lambda: done.append(normops.batch_norm(x_batch(), backend="reference")))
        caller.start()
        caller.join(5)
        assert done, "an op on another backend waited for a factory to finish"
    finally:
        release.set()
        loader.join()


def test_selection_order(register):
    per_call, context, default = Recording(), Recording(), Recording()
    register("per-call", per_call)
    register("context", context)
    register("default", default)
    x = x_batch()
    normops.set_backend("default")
    normops.batch_norm(x)
    with normops.use_backend("context"):
        normops.batch_norm(x)
        normops.batch_norm(x, backend="per-call")
        assert normops.get_backend() is context
    assert (per_call.calls, context.calls, default.calls) == (1, 1, 1)
    normops.set_backend(None)
    assert normops.get_backend() is AUTOMATIC


def test_use_backend_nests_and_is_local_to_its_thread(register):
    outer, inner = Recording(), Recording()
    register("outer", outer)
    register("inner", inner)
    seen_in_thread = []
    entered, checked = threading.Event(), threading.Event()

    def other_thread():
        entered.wait()
        seen_in_thread.append(normops.get_backend())
        checked.set()

    t = threading.Thread(target=other_thread)
    t.start()
    with normops.use_backend("outer"):
        with normops.use_backend("inner"):
            entered.set()
            checked.wait()
            assert normops.get_backend() is inner
        assert normops.get_backend() is outer
    t.join()
    assert seen_in_thread == [AUTOMATIC]
    assert normops.get_backend() is AUTOMATIC


def test_a_backend_s_whole_op_replaces_the_composition(register):
    calls = []

    class WithWholeOp(KernelsOnly):
        def batch_norm(self, x, gamma, beta, running_mean, running_var, **kw):
            calls.append(kw)
            return REFERENCE.batch_norm(x, gamma, beta, running_mean, running_var, **kw)

    backend = WithWholeOp(REFERENCE)
    register("whole", backend)
    normops.batch_norm(x_batch(), axis=-1, backend="whole")
    assert calls == [dict(training=True, momentum=0.1, eps=1e-5, axis=1, convention="pytorch")]


def test_array_type_picks_the_backend_registered_for_its_library(register):
    FakeArray = type("FakeArray", (np.ndarray,), {"__module__": "fakearrays.core"})
    fake = Recording()
    register("fake", fake, array_module="fakearrays", priority=5)
    x = x_batch().view(FakeArray)
    normops.batch_norm(x)
    assert fake.calls == 1
    normops.batch_norm(x_batch())  # plain numpy arrays still go to the numpy default
    assert fake.calls == 1


def test_automatic_choice_follows_registering_and_unregistering(register):
    """The per-type cache of the automatic choice is dropped whenever the table changes."""
    x = x_batch()
    normops.batch_norm(x)  # caches the automatic choice for numpy.ndarray
    assert registry.backend_for(x) is AUTOMATIC
    favourite = Recording()
    register("favourite", favourite, array_module="numpy", priority=1000)
    normops.batch_norm(x)
    assert favourite.calls == 1
    normops.unregister_backend("favourite")
    assert registry.backend_for(x) is AUTOMATIC
    normops.batch_norm(x)
    assert favourite.calls == 1


def test_a_name_registered_again_gets_the_new_backend(register):
    first, second = Recording(), Recording()
    register("named", first)
    normops.batch_norm(x_batch(), backend="named")   # caches the choice for this name
    normops.register_backend("named", second, replace=True)
    normops.batch_norm(x_batch(), backend="named")
    with normops.use_backend("named"):
        normops.batch_norm(x_batch())
    assert (first.calls, second.calls) == (1, 2)


def test_set_backend_between_key_and_resolution_is_not_cached(register, monkeypatch):
    """A set_backend() racing an op call must not leave its choice under the old key."""
    x = x_batch()
    normops.set_backend(None)
    real = registry._selected

    def racing(requested, arr):
        normops.set_backend("reference")   # another thread, between the key and the resolution
        return real(requested, arr)

    monkeypatch.setattr(registry, "_selected", racing)
    assert registry.backend_for(x) is REFERENCE
    monkeypatch.setattr(registry, "_selected", real)
    registry._default = registry._default_origin = None   # back, without clearing the cache
    assert registry.backend_for(x) is AUTOMATIC


def test_no_available_backend_for_an_array_library(register):
    FakeArray = type("FakeArray", (np.ndarray,), {"__module__": "fakearrays2"})

    def no_gpu():
        raise normops.BackendUnavailableError("no GPU")

    register("fake2", no_gpu, array_module="fakearrays2", priority=0)
    with pytest.raises(normops.BackendUnavailableError, match=r"no backend is available for fakearrays2 arrays \(fake2: no GPU\)"):
        normops.batch_norm(x_batch().view(FakeArray))


def test_an_array_of_another_library_is_refused_by_a_numpy_backend():
    Foreign = type("Foreign", (), {"__module__": "otherlib", "shape": (4, 3), "dtype": "float32"})
    with pytest.raises(TypeError, match="backend 'reference' works on numpy arrays, got a otherlib.Foreign"):
        normops.batch_norm(Foreign(), backend="reference")


def run_python(code, **env):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, env={**os.environ, **env}, timeout=120)
    return result


def test_environment_variable_sets_the_default():
    ok = run_python("import normops; print(type(normops.get_backend()).__name__)",
                    NORMOPS_BACKEND="reference")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "ReferenceBackend"
    bad = run_python("""
        import numpy as np, normops
        normops.batch_norm(np.ones((4, 3)))
        """, NORMOPS_BACKEND="nope")
    assert bad.returncode != 0
    assert "unknown backend 'nope'" in bad.stderr
    assert "made the default by the NORMOPS_BACKEND environment variable" in bad.stderr
    cli = subprocess.run([sys.executable, "-m", "normops", "backends"], capture_output=True,
                         text=True, env={**os.environ, "NORMOPS_BACKEND": "nope"}, timeout=120)
    assert cli.returncode == 1
    assert "backend for numpy arrays now: none: unknown backend 'nope'" in cli.stdout


def test_an_unavailable_default_says_who_chose_it(register):
    def no_gpu():
        raise normops.BackendUnavailableError("no GPU")

    register("nogpu", no_gpu)
    registry._default, registry._default_origin = "nogpu", "the NORMOPS_BACKEND environment variable"
    with pytest.raises(normops.BackendUnavailableError,
                       match=r"backend 'nogpu' is not available: no GPU\. \('nogpu' was made the default by the NORMOPS_BACKEND"):
        normops.batch_norm(x_batch())


PLUGIN = '''
import numpy as np
import normops

class Plugin:
    device = "cpu"
    def __init__(self):
        ref = normops.get_backend("reference")
        self.batch_stats, self.scale_shift = ref.batch_stats, ref.scale_shift
        self.grad_stats, self.grad_input = ref.grad_stats, ref.grad_input

class Partial:
    def batch_stats(self, x): ...
'''


def write_plugin(root):
    (root / "demoplugin.py").write_text(PLUGIN)
    info = root / "demoplugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demoplugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[normops.backends]\n"
        "demo = demoplugin:Plugin\n"
        "demo-partial = demoplugin:Partial\n"
        "reference = demoplugin:Plugin\n"
    )


def test_entry_point_backends_are_discovered_lazily(tmp_path):
    write_plugin(tmp_path)
    result = run_python("""
        import sys, warnings
        import numpy as np, normops
        assert "demoplugin" not in sys.modules
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            infos = {i.name: i for i in normops.backends()}
        print(infos["demo"].available, infos["demo"].source)
        print(infos["demo-partial"].available, infos["demo-partial"].reason)
        print(type(normops.get_backend("reference")).__name__)
        print([str(w.message) for w in caught])
        y, saved = normops.batch_norm(np.arange(12.0).reshape(4, 3), backend="demo")
        print(np.allclose(y.mean(axis=0), 0))
        # code registration after discovery also wins over the entry point, with a warning
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mine = normops.get_backend("reference")
            normops.register_backend("demo", mine)
        print(normops.get_backend("demo") is mine, [str(w.message) for w in caught])
        """, PYTHONPATH=str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "True entry point (demoplugin)"
    assert lines[1].startswith("False backend 'demo-partial' is refused") and "grad_input" in lines[1]
    assert lines[2] == "ReferenceBackend"  # a plugin cannot take a built-in name
    assert "backend 'reference' from the entry point (demoplugin) is shadowed by one registered in code" in lines[3]
    assert lines[4] == "True"
    assert lines[5].startswith("True") and "'demo' from the entry point (demoplugin) is shadowed" in lines[5]
