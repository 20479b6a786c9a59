"""The properties normops is tested with, as a conformance kit for BN/BRN implementations.

``normops.testing`` checks any BN/BRN implementation: a plugin backend, another
framework's op, your own NumPy code::

    from normops import testing
    testing.check_backend("cpu")                   # a registered backend, by name
    testing.check(testing.Implementation("mine", my_batch_norm, my_batch_norm_backward))

Each property is a Hypothesis test over drawn shapes, layouts, dtypes, value regimes and
memory arrangements (``normops.testing.strategies``); a failure is an AssertionError that
names the property, the shrunk input (as the ``make_case`` call that rebuilds it) and the
worst error against its tolerance. Needs Hypothesis: ``pip install normops[testing]``.
"""
try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("normops.testing needs Hypothesis: pip install 'normops[testing]' "
                      "(or pip install hypothesis)") from exc

from . import _api_properties, _bn_properties, _gradient_properties, _renorm_properties  # noqa: F401 (they register the properties)
from . import _half_properties  # noqa: F401 (registers the half-precision rounding property)
from . import _fused_properties  # noqa: F401 (registers the fused epilogue's properties)
from . import strategies
from ._cases import ALL_REGIMES, EXTREME_REGIMES, MEMORY, REGIMES, Case, as_memory, make_case
from ._compare import TOL, assert_close, tolerance
from ._implementation import (Implementation, assert_steps_close, backend_implementation, bn_step,
                              brn_step, on_library)
from ._libraries import LIBRARIES, ArrayLibrary, array_library
from ._profiles import PROFILES, profile_name, profile_settings, register_profiles
from ._property import Property
from ._runner import Report, Result, check, check_backend, properties, run, run_property

__all__ = [
    "ALL_REGIMES", "ArrayLibrary", "array_library", "Case", "LIBRARIES", "on_library", "EXTREME_REGIMES", "Implementation", "MEMORY", "PROFILES", "Property", "REGIMES", "Report", "Result",
    "TOL", "as_memory", "assert_close", "assert_steps_close", "backend_implementation", "bn_step", "brn_step",
    "check", "check_backend", "make_case", "profile_name", "profile_settings", "properties",
    "register_profiles", "run", "run_property", "strategies", "tolerance",
]
