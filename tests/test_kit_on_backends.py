"""Every property of the conformance kit (normops.testing) on every registered backend:
the project's own property tests are the kit's, run through the public ops."""
import pytest

from normops import testing


@pytest.mark.parametrize("prop", testing.properties(), ids=str)
def test_property_holds(backend, prop):
    result = testing.run_property(prop, testing.backend_implementation(backend))
    assert result.status == "passed", result.message
