"""Every property of the conformance kit (normops.testing) on every registered backend:
the project's own property tests are the kit's, run through the public ops, on the
arrays of the library each backend is for (results checked to be of that library,
device and dtype)."""
import pytest

from normops import testing


@pytest.mark.parametrize("prop", testing.properties(), ids=str)
def test_property_holds(kit_run, prop):
    name, library = kit_run
    impl = testing.backend_implementation(name, library)
    result = testing.run_property(prop, impl)
    if result.status == "n/a":   # only the half property, on a library without halves
        assert prop.halves and not set(impl.dtypes) & set(testing.strategies.HALF_DTYPES), result.message
        return
    assert result.status == "passed", result.message
