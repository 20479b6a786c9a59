"""What the registry shows a user: backend names and reprs, the listing's order, the
public signature of register_backend, and show_config's first line."""
import inspect
import os
import re
import subprocess
import sys
import types

import pytest

import normops
from normops import _config
from normops import _registry as registry
from kernels_only import KernelsOnly

REFERENCE = normops.get_backend("reference")
BUILTIN_NAMES = ("reference", "cpu", "array-api", "torch", "cupy")


def kernels():
    return KernelsOnly(REFERENCE)


# --- names and reprs ------------------------------------------------------------------

def test_every_builtin_backend_is_registered_under_its_name():
    builtins = [info.name for info in normops.backends() if info.source == "built-in"]
    assert sorted(builtins) == sorted(BUILTIN_NAMES)


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_a_builtin_backend_has_its_name_and_a_readable_repr(name):
    info = {i.name: i for i in normops.backends()}[name]
    if not info.available:
        pytest.skip(f"{name} is not available here: {info.reason}")
    backend = normops.get_backend(name)
    assert backend.name == name
    assert repr(backend) == f"<normops backend {name!r} (built-in, device {info.device!r})>"
    assert "object at 0x" not in repr(backend)


def test_the_default_backend_says_which_it_is():
    backend = normops.get_backend()
    assert backend.name == registry.selected_name()
    assert repr(backend).startswith(f"<normops backend {backend.name!r} (built-in, device ")


def test_a_builtin_backend_made_directly_is_unnamed_until_registered(register):
    from normops._backends.reference import ReferenceBackend
    mine = ReferenceBackend()
    assert mine.name is None
    assert repr(mine) == "<normops backend ReferenceBackend, unnamed (built-in, device 'cpu')>"
    register("my-reference", mine)
    assert normops.get_backend("my-reference").name == "my-reference"
    assert repr(mine) == "<normops backend 'my-reference' (built-in, device 'cpu')>"
    assert REFERENCE.name == "reference"   # the registered one is another instance


def test_a_plugin_backend_gets_its_registered_name_when_loaded(register):
    instance = kernels()
    register("named-instance", instance)
    assert not hasattr(instance, "name")   # named when the registry loads it
    assert normops.get_backend("named-instance") is instance
    assert instance.name == "named-instance"

    class Factory(KernelsOnly):
        def __init__(self):
            super().__init__(REFERENCE)

    register("named-class", Factory)
    assert normops.get_backend("named-class").name == "named-class"
    assert not hasattr(Factory, "name")   # the instance is named, not the class
    # listing loads, and so names, every backend
    listed = kernels()
    register("named-by-listing", listed)
    normops.backends()
    assert listed.name == "named-by-listing"


def test_a_backend_keeps_a_name_of_its_own(register):
    own = kernels()
    own.name = "my kernels"
    register("keeps-own", own)
    assert normops.get_backend("keeps-own").name == "my kernels"
    none_yet = kernels()
    none_yet.name = None   # None is no name: the registry gives it one
    register("named-over-none", none_yet)
    assert normops.get_backend("named-over-none").name == "named-over-none"
    # one object under two names keeps the first it was loaded under
    shared = kernels()
    register("shared-first", shared)
    register("shared-second", shared)
    assert normops.get_backend("shared-first") is normops.get_backend("shared-second")
    assert shared.name == "shared-first"
    # the reference backend registered again keeps its own name
    register("reference-again", REFERENCE)
    assert normops.get_backend("reference-again").name == "reference"


def test_objects_that_take_no_name_are_still_backends(register):
    class Slotted:
        __slots__ = ()
        batch_stats = staticmethod(REFERENCE.batch_stats)
        scale_shift = staticmethod(REFERENCE.scale_shift)
        grad_stats = staticmethod(REFERENCE.grad_stats)
        grad_input = staticmethod(REFERENCE.grad_input)

    register("slotted", Slotted())
    assert not hasattr(normops.get_backend("slotted"), "name")
    module = types.ModuleType("kernels_module")
    for kernel in ("batch_stats", "scale_shift", "grad_stats", "grad_input"):
        setattr(module, kernel, getattr(REFERENCE, kernel))
    register("module-backend", module)
    assert normops.get_backend("module-backend") is module
    assert not hasattr(module, "name")   # no global of the registry's in someone's module
    infos = {i.name: i for i in normops.backends()}
    assert infos["slotted"].available and infos["module-backend"].available


# --- the listing's order ----------------------------------------------------------------

def registration_order():
    return list(registry._entries)


def test_backends_lists_the_default_first_and_the_rest_in_order():
    infos = normops.backends()
    default = registry.selected_name()
    assert infos[0].name == default
    rest = [name for name in registration_order() if name != default]
    assert [i.name for i in infos[1:]] == rest


def test_backends_follows_the_default_of_the_moment(register):
    register("chosen", kernels())
    with normops.use_backend("reference"):
        assert normops.backends()[0].name == "reference"
    normops.set_backend("chosen")
    infos = normops.backends()
    assert infos[0].name == "chosen"
    assert [i.name for i in infos[1:]] == [n for n in registration_order() if n != "chosen"]
    normops.set_backend(None)
    assert normops.backends()[0].name == registry.selected_name()


def test_backends_lists_in_registration_order_when_the_default_cannot_be_resolved(register):
    def no_gpu():
        raise normops.BackendUnavailableError("no GPU")

    register("gone", no_gpu)
    registry._default, registry._default_origin = "gone", "a test"
    registry._table_changed()
    assert [i.name for i in normops.backends()] == registration_order()
    registry._default = "nope"   # unknown
    registry._table_changed()
    assert [i.name for i in normops.backends()] == registration_order()


def cli_backends(**env):
    """``python -m normops backends``'s result and the first backend of its table."""
    env = {**{k: v for k, v in os.environ.items() if k != "NORMOPS_BACKEND"}, **env}
    out = subprocess.run([sys.executable, "-m", "normops", "backends"], capture_output=True,
                         text=True, env=env, timeout=120)
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["backend"])
    return out, lines[header + 2].split()[0]


def test_the_cli_table_starts_with_the_default():
    out, first = cli_backends()
    assert out.returncode == 0, out.stderr
    assert first == re.search(r"backend for numpy arrays now: (\S+)", out.stdout).group(1)
    chosen, first = cli_backends(NORMOPS_BACKEND="reference")
    assert chosen.returncode == 0, chosen.stderr
    assert first == "reference"
    assert chosen.stdout.count(f"normops {normops.__version__}") == 1


# --- register_backend's signature -------------------------------------------------------

def test_register_backend_shows_no_private_parameter():
    params = inspect.signature(normops.register_backend).parameters
    assert list(params) == ["name", "factory", "array_module", "priority", "install_hint",
                            "replace"]
    assert not any(name.startswith("_") for name in params)
    with pytest.raises(TypeError):
        normops.register_backend("sneaky", kernels(), _source="built-in")
    assert "sneaky" not in registry._entries


def test_registered_and_builtin_backends_keep_their_sources(register):
    register("sourced", kernels())
    sources = {i.name: i.source for i in normops.backends()}
    assert sources["sourced"] == "registered"
    assert all(sources[name] == "built-in" for name in BUILTIN_NAMES)


def test_shadowing_an_entry_point_warns_at_the_register_call():
    registry._entries["shadowed-ep"] = registry._Entry(
        "shadowed-ep", "nowhere:Nothing", "entry point (somedist)", None, None, None)
    try:
        with pytest.warns(RuntimeWarning, match="'shadowed-ep' from the entry point "
                                                "\\(somedist\\) is shadowed") as caught:
            normops.register_backend("shadowed-ep", kernels())   # called here, not in a fixture
    finally:
        registry._entries.pop("shadowed-ep", None)
        registry._table_changed()
    assert caught[0].filename == __file__


# --- show_config ------------------------------------------------------------------------

def test_show_config_prints_the_version_first(capsys):
    normops.show_config()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"normops version: {normops.__version__}"
    config = _config.config()
    assert [line.partition(": ")[0] for line in lines[1:]] == list(config)
    # the version is show_config's own line: config() (which the CLI prints after its
    # own version line) has none
    assert not any("version" in key for key in config)
