"""The example plugin package (examples/plugin_backend), installed as a user would: its
entry points make its backends known to normops, its kernels-only backend matches the
reference through every op, and the conformance kit passes it and catches its broken twin.

The package is installed once into a temporary directory (offline, without touching the
venv), and every check runs in a subprocess whose PYTHONPATH holds that directory, so
that importlib.metadata sees the plugin's entry points.
"""
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from doc_blocks import doc_block

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin_backend"
BACKENDS_DOC = Path(__file__).resolve().parents[1] / "docs" / "backends.md"
TIMEOUT = 600
RESULTS = {"passed", "FAILED", "n/a"}


class Env:
    """Runs Python in a subprocess that sees the installed plugin."""

    def __init__(self, site, cwd):
        self.cwd = cwd
        path = os.environ.get("PYTHONPATH")
        self.env = {**os.environ, "PYTHONPATH": str(site) + (os.pathsep + path if path else "")}

    def run(self, *args):
        return subprocess.run([sys.executable, *args], check=False, cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=TIMEOUT)


def _report(proc):
    return (f"exit status {proc.returncode}\n--- stdout ---\n{proc.stdout}"
            f"\n--- stderr ---\n{proc.stderr}")


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    # built from a copy, so that setuptools' build/ and *.egg-info stay out of the source tree
    source = tmp_path_factory.mktemp("plugin_src") / "plugin_backend"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp_path_factory.mktemp("plugin_site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
         "--quiet", "--target", str(site), str(source)],
        check=False, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, "installing the example plugin failed\n" + _report(proc)
    return Env(site, tmp_path_factory.mktemp("plugin_cwd"))


def _table(output, first_column):
    """The rows (lists of whitespace-separated cells) of the table printed by
    ``python -m normops`` whose header starts with ``first_column``: the lines after the
    header's dashed rule, up to the first blank line."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        rule = lines[i + 1] if i + 1 < len(lines) else ""
        if line.split()[:1] == [first_column] and rule.strip() and set(rule) <= {"-", " "}:
            rows = []
            for row in lines[i + 2:]:
                if not row.strip():
                    break
                rows.append(row.split())
            return rows
    raise AssertionError(f"no table with a {first_column!r} column in the output:\n{output}")


def check_results(output):
    """{property: result} from the table of ``python -m normops check``."""
    results = {}
    for cells in _table(output, "property"):
        assert cells[-1] in RESULTS, f"unexpected result in row {cells}:\n{output}"
        results[cells[0]] = cells[-1]
    assert results, f"the check table has no rows:\n{output}"
    return results


def test_backends_lists_the_plugin(plugin):
    proc = plugin.run("-m", "normops", "backends")
    assert proc.returncode == 0, _report(proc)
    rows = {cells[0]: cells for cells in _table(proc.stdout, "backend")}
    for name in ("example-numpy", "example-numpy-broken"):
        assert name in rows, f"{name} is not listed\n" + _report(proc)
        assert rows[name][1] == "yes", f"{name} is not available\n" + _report(proc)
    assert "entry point (normops-example-plugin)" in " ".join(rows["example-numpy"]), _report(proc)


OPS_SCRIPT = textwrap.dedent("""
    import itertools
    import numpy as np
    import normops

    RTOL = {np.float32: 1e-5, np.float64: 1e-10}
    rng = np.random.default_rng(0)


    def step(forward, backward, args, second, options, backend):
        \"\"\"forward then backward on fresh running statistics: every array they return.\"\"\"
        x, dy, gamma, beta, rm, rs = args
        running = (rm.copy(), rs.copy())
        y, saved = forward(x, gamma, beta, *running, **options, backend=backend)
        grads = backward(dy, x, saved, gamma, backend=backend)
        return dict(zip(("y", "running_mean", second, "dx", "dgamma", "dbeta"), (y, *running, *grads)))


    OPS = [(normops.batch_norm, normops.batch_norm_backward, "running_var",
            [dict(training=True), dict(training=False)]),
           (normops.batch_renorm, normops.batch_renorm_backward, "running_std",
            [dict(training=True), dict(training=True, rmax=1.1, dmax=0.2), dict(training=False)])]
    checked = 0
    for dtype, (shape, axis), affine in itertools.product(
            (np.float32, np.float64), (((4, 3, 5, 6), 1), ((4, 5, 6, 3), -1)), (False, True)):
        c = shape[axis]
        args = ((3.0 + 2.0 * rng.standard_normal(shape)).astype(dtype),
                rng.standard_normal(shape).astype(dtype),
                rng.uniform(0.5, 2.0, c).astype(dtype) if affine else None,
                rng.uniform(-1.0, 1.0, c).astype(dtype) if affine else None,
                rng.uniform(-1.0, 1.0, c).astype(dtype), rng.uniform(0.5, 2.0, c).astype(dtype))
        for forward, backward, second, settings in OPS:
            for options in settings:
                options = dict(options, axis=axis)
                got, want = (step(forward, backward, args, second, options, be)
                             for be in ("example-numpy", "reference"))
                for name, expected in want.items():
                    what = f"{forward.__name__} {options} {np.dtype(dtype).name} {shape} affine={affine}: {name}"
                    assert got[name].dtype == expected.dtype, what
                    atol = RTOL[dtype] * float(np.max(np.abs(expected)))
                    np.testing.assert_allclose(got[name], expected, rtol=RTOL[dtype], atol=atol, err_msg=what)
                    checked += 1

    # the plugin really is a kernels-only backend: every op above ran normops' composition
    backend = normops.get_backend("example-numpy")
    assert type(backend).__module__ == "normops_example_plugin", type(backend)
    for op in ("batch_norm", "batch_renorm", "batch_norm_backward", "batch_renorm_backward"):
        assert not hasattr(backend, op), op
    print(f"{checked} comparisons")
    print("ok")
""")


def test_ops_match_reference(plugin):
    proc = plugin.run("-c", OPS_SCRIPT)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1:] == ["ok"], _report(proc)


def test_check_passes(plugin):
    proc = plugin.run("-m", "normops", "check", "--backend", "example-numpy", "--profile", "ci")
    assert proc.returncode == 0, _report(proc)
    assert "FAILED" not in proc.stdout + proc.stderr, _report(proc)
    results = check_results(proc.stdout)
    assert "FAILED" not in results.values(), _report(proc)


def test_check_catches_the_broken_backend(plugin):
    proc = plugin.run("-m", "normops", "check", "--backend", "example-numpy-broken", "--profile", "ci")
    assert proc.returncode != 0, "the check passed the broken backend\n" + _report(proc)
    results = check_results(proc.stdout)
    for name in ("bn_gradients_finite_differences", "bn_matches_reference"):
        assert results.get(name) == "FAILED", f"{name}: {results.get(name)}\n" + _report(proc)
        assert f"FAILED {name}:" in proc.stdout, _report(proc)
    # the bug is in the training-mode gradient only: forward properties still hold
    for name in ("bn_zero_mean_unit_variance", "bn_identity_recovery"):
        assert results.get(name) == "passed", f"{name}: {results.get(name)}\n" + _report(proc)
    # the failure docs/testing-kit.md shows is the one the kit prints
    shown = doc_block("test: broken plugin's failure")
    assert " ".join(shown.split()) in " ".join(proc.stdout.split()), \
        "docs/testing-kit.md shows a failure the kit no longer prints\n" + _report(proc)
    # the figures docs/backends.md gives for it are these
    said = re.search(r"(\d+) of its (\d+) properties\s+fail with the ci profile", BACKENDS_DOC.read_text())
    assert said, "docs/backends.md no longer gives the broken variant's figures"
    failed = sum(result == "FAILED" for result in results.values())
    assert (int(said[1]), int(said[2])) == (failed, len(results)), \
        f"docs/backends.md says {said[1]} of {said[2]}; the check gives {failed} of {len(results)}"
