"""Every property of the conformance kit (normops.testing) on every registered backend:
the project's own property tests are the kit's, run through the public ops, on the
arrays of the library each backend is for (results checked to be of that library,
device and dtype)."""
import pytest

from normops import testing


@pytest.mark.parametrize("prop", testing.properties(), ids=str)
def test_property_holds(kit_run, prop):
    name, library = kit_run
    result = testing.run_property(prop, testing.backend_implementation(name, library))
    assert result.status == "passed", result.message
