"""The kit's Hypothesis profiles: "ci" (derandomized: the same examples every run),
"dev" (random, remembering failures in the example database) and "thorough" (1000
examples per property). None has a deadline: the examples' cost varies with their size
and the implementation, and slowness is not what the kit checks."""
import os

from hypothesis import HealthCheck, settings

# one failure per property, shrunk: Hypothesis's "distinct bugs" would group them
_QUIET = dict(deadline=None, print_blob=False, report_multiple_bugs=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

PROFILES = {
    "ci": settings(derandomize=True, database=None, max_examples=60, **_QUIET),
    "dev": settings(max_examples=60, **_QUIET),
    "thorough": settings(derandomize=False, database=None, max_examples=1000, **_QUIET),
}


def profile_name(profile=None):
    """``profile``, or the profile named by HYPOTHESIS_PROFILE (default "ci") when None;
    a ValueError unless it is one of PROFILES."""
    name = profile or os.environ.get("HYPOTHESIS_PROFILE") or "ci"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; the kit's profiles: {', '.join(PROFILES)}")
    return name


def profile_settings(profile=None):
    """The settings for ``profile``: a hypothesis ``settings`` as it is, else the kit's
    profile that profile_name picks."""
    return profile if isinstance(profile, settings) else PROFILES[profile_name(profile)]


def register_profiles():
    """Register the kit's profiles with Hypothesis under their names, so that
    ``settings.load_profile(name)`` or ``--hypothesis-profile`` selects them."""
    for name, chosen in PROFILES.items():
        settings.register_profile(name, chosen)
