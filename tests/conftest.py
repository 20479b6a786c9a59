"""The kit's Hypothesis profiles (chosen by HYPOTHESIS_PROFILE, default "ci") and the
backends every property runs on."""
import os

import hypothesis
import pytest

import normops
from kernels_only import KernelsOnly
from normops import testing

testing.register_profiles()
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# "reference-kernels" is the reference backend stripped to its four kernels: every op
# through it runs the generic composition, as it would for a plugin backend.
normops.register_backend("reference-kernels", KernelsOnly(normops.get_backend("reference")))

AVAILABLE = [info for info in normops.backends() if info.available]
# the backends that take NumPy arrays ("array-api" takes any library's): the tests that
# hand a backend NumPy arrays run on each of them
BACKENDS = [info.name for info in AVAILABLE if info.auto_for in (None, "numpy", "*")]
# (backend, array library) pairs the conformance kit runs on: each backend on the arrays
# it is picked for (array-api: array-api-strict's), and the array-API path on PyTorch
# tensors and on NumPy arrays as well
KIT_RUNS = [(info.name, None) for info in AVAILABLE]
if any(info.name == "array-api" for info in AVAILABLE):
    KIT_RUNS += [("array-api", "numpy")] + [("array-api", "torch")] * any(
        info.name == "torch" for info in AVAILABLE)


def pytest_generate_tests(metafunc):
    # plain parameters, not fixtures, so Hypothesis-driven tests may take them
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS)
    if "kit_run" in metafunc.fixturenames:
        metafunc.parametrize("kit_run", KIT_RUNS,
                             ids=[name if lib is None else f"{name}-on-{lib}" for name, lib in KIT_RUNS])


@pytest.fixture
def register():
    """register(name, factory, **kw); everything registered is removed afterwards, and
    the process-wide default is restored."""
    from normops import _registry as registry
    names = []

    def _register(name, factory, **kwargs):
        normops.register_backend(name, factory, **kwargs)
        names.append(name)

    default = registry._default, registry._default_origin
    yield _register
    for name in names:
        if name in registry._entries:
            normops.unregister_backend(name)
    registry._default, registry._default_origin = default
    registry._table_changed()
