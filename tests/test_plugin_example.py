"""The example plugin package (examples/plugin_backend), installed as a user would: its
entry points make its backends known to normops, its kernels-only backend matches the
reference through every op, and the conformance kit passes it and catches its broken twin.

The package is installed once into a temporary directory (offline, without touching the
venv), and every check runs in a subprocess whose PYTHONPATH holds that directory, so
that importlib.metadata sees the plugin's entry points.
"""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin_backend"
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
    import numpy as np
    import normops

    PLUGIN, REF = "example-numpy", "reference"
    RTOL = {np.float32: 1e-5, np.float64: 1e-10}
    rng = np.random.default_rng(0)


    def close(actual, expected, dtype, what):
        expected = np.asarray(expected)
        rtol = RTOL[dtype]
        atol = rtol * float(np.max(np.abs(expected))) if expected.size else 0.0
        assert np.asarray(actual).dtype == expected.dtype, (what, np.asarray(actual).dtype, expected.dtype)
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


    def channel_vectors(c, dtype, low, high):
        return rng.uniform(low, high, c).astype(dtype)


    checked = 0
    for dtype in (np.float32, np.float64):
        for shape, axis in (((4, 3, 5, 6), 1), ((4, 5, 6, 3), -1)):
            c = shape[axis]
            x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(dtype)
            dy = rng.standard_normal(shape).astype(dtype)
            for affine in (False, True):
                gamma = channel_vectors(c, dtype, 0.5, 2.0) if affine else None
                beta = channel_vectors(c, dtype, -1.0, 1.0) if affine else None
                case = f"{np.dtype(dtype).name} shape={shape} axis={axis} affine={affine}"

                # batch_norm, training then eval, and its backward
                for training in (True, False):
                    what = f"batch_norm training={training} {case}"
                    rm0, rv0 = channel_vectors(c, dtype, -1.0, 1.0), channel_vectors(c, dtype, 0.5, 2.0)
                    out = {}
                    for be in (PLUGIN, REF):
                        rm, rv = rm0.copy(), rv0.copy()
                        y, saved = normops.batch_norm(x, gamma, beta, rm, rv, training=training,
                                                      axis=axis, backend=be)
                        grads = normops.batch_norm_backward(dy, x, saved, gamma, backend=be)
                        out[be] = (y, rm, rv, *grads)
                    for name, a, e in zip(("y", "running_mean", "running_var", "dx", "dgamma", "dbeta"),
                                          out[PLUGIN], out[REF]):
                        close(a, e, dtype, f"{what}: {name}")
                        checked += 1
                # training without running statistics
                y, saved = normops.batch_norm(x, gamma, beta, axis=axis, backend=PLUGIN)
                y_ref, saved_ref = normops.batch_norm(x, gamma, beta, axis=axis, backend=REF)
                close(y, y_ref, dtype, f"batch_norm without running stats {case}: y")
                checked += 1

                # batch_renorm, training (with and without clipping of r and d) and eval
                for training, rmax, dmax in ((True, 3.0, 5.0), (True, 1.1, 0.2), (False, 3.0, 5.0)):
                    what = f"batch_renorm training={training} rmax={rmax} dmax={dmax} {case}"
                    rm0, rs0 = channel_vectors(c, dtype, -1.0, 1.0), channel_vectors(c, dtype, 0.5, 2.0)
                    out = {}
                    for be in (PLUGIN, REF):
                        rm, rs = rm0.copy(), rs0.copy()
                        y, saved = normops.batch_renorm(x, gamma, beta, rm, rs, training=training,
                                                        rmax=rmax, dmax=dmax, axis=axis, backend=be)
                        grads = normops.batch_renorm_backward(dy, x, saved, gamma, backend=be)
                        out[be] = (y, rm, rs, *grads)
                    for name, a, e in zip(("y", "running_mean", "running_std", "dx", "dgamma", "dbeta"),
                                          out[PLUGIN], out[REF]):
                        close(a, e, dtype, f"{what}: {name}")
                        checked += 1

    # the plugin really is a kernels-only backend: every op above ran normops' composition
    backend = normops.get_backend(PLUGIN)
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
