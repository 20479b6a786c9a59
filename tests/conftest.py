"""The kit's Hypothesis profiles (chosen by HYPOTHESIS_PROFILE, default "ci") and the
backends every property runs on."""
import os

import hypothesis

import normops
from kernels_only import KernelsOnly
from normops import testing

testing.register_profiles()
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# "reference-kernels" is the reference backend stripped to its four kernels: every op
# through it runs the generic composition, as it would for a plugin backend.
normops.register_backend("reference-kernels", KernelsOnly(normops.get_backend("reference")))

BACKENDS = [info.name for info in normops.backends() if info.available]


def pytest_generate_tests(metafunc):
    # a plain parameter, not a fixture, so Hypothesis-driven tests may take it
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS)
