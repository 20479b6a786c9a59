"""The public API is typed and documented: mypy (strict on the public modules, as
configured in pyproject.toml) and numpydoc's lint pass, every public callable has
annotations, and the installed package ships py.typed."""
import importlib.resources
import inspect
import pathlib
import subprocess
import sys
import typing

import pytest

import normops

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "normops"

# the modules whose objects normops exports (normops.__all__, normops.testing.__all__)
PUBLIC_FILES = ["__init__.py", "ops.py", "layers.py", "schedules.py", "_typing.py", "_registry.py",
                "_config.py", "_saved.py", "_population.py", "_folding.py",
                "testing/__init__.py", "testing/_cases.py", "testing/_compare.py",
                "testing/_implementation.py", "testing/_libraries.py", "testing/_profiles.py",
                "testing/_property.py", "testing/_runner.py", "testing/strategies.py"]


def _tool(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})


def test_mypy_passes():
    pytest.importorskip("mypy", reason="the type check needs mypy: pip install 'normops[docs]'")
    done = _tool("mypy")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_numpydoc_lint_passes():
    pytest.importorskip("numpydoc", reason="the docstring check needs numpydoc: pip install 'normops[docs]'")
    done = _tool("numpydoc", "lint", *(str(SRC / f) for f in PUBLIC_FILES))
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def _public_callables():
    from normops import testing
    for module in (normops, testing, normops.schedules):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{module.__name__}.{name}", obj


@pytest.mark.parametrize("name, obj", list(_public_callables()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_callable_is_annotated(name, obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    if inspect.isclass(obj) and not inspect.isfunction(target):
        return                   # a constructor of Python's (object's, an exception's): no code of ours
    hints = typing.get_type_hints(target)
    params = [p for p in inspect.signature(target).parameters if p not in ("self", "cls")]
    missing = [p for p in params if p not in hints]
    assert not missing, f"{name}: parameters without annotations: {missing}"
    if not inspect.isclass(obj):
        assert "return" in hints, f"{name} has no return annotation"


def test_package_ships_py_typed():
    assert importlib.resources.files("normops").joinpath("py.typed").is_file()
