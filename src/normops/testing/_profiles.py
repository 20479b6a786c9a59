"""The kit's Hypothesis profiles: "ci" (derandomized: the same examples every run),
"dev" (random, remembering failures in the example database) and "thorough" (1000
examples per property). None has a deadline: the examples' cost varies with their size
and the implementation, and slowness is not what the kit checks."""
import os
from typing import Any

from hypothesis import HealthCheck, settings

# one failure per property, shrunk: Hypothesis's "distinct bugs" would group them
_QUIET: dict[str, Any] = dict(deadline=None, print_blob=False, report_multiple_bugs=False,
                              suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])

#: The kit's Hypothesis settings by profile name: "ci", "dev" and "thorough".
PROFILES: dict[str, settings] = {
    "ci": settings(derandomize=True, database=None, max_examples=60, **_QUIET),
    "dev": settings(max_examples=60, **_QUIET),
    "thorough": settings(derandomize=False, database=None, max_examples=1000, **_QUIET),
}


def profile_name(profile: str | None = None) -> str:
    """Name the kit's profile to run under.

    Parameters
    ----------
    profile : str or None, optional
        A profile's name, one of ``PROFILES``. None (the default) takes the name from the
        environment variable ``HYPOTHESIS_PROFILE``, and "ci" where that is unset or empty.

    Returns
    -------
    str
        ``profile``, or the name the environment picks.

    Raises
    ------
    ValueError
        If the name (given or from ``HYPOTHESIS_PROFILE``) is not one of ``PROFILES``.
    """
    name = profile or os.environ.get("HYPOTHESIS_PROFILE") or "ci"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; the kit's profiles: {', '.join(PROFILES)}")
    return name


def profile_settings(profile: str | settings | None = None) -> settings:
    """Give the Hypothesis settings of a profile.

    Parameters
    ----------
    profile : str, hypothesis.settings or None, optional
        A ``hypothesis.settings``, returned as it is; else a profile's name or None,
        resolved by ``profile_name`` (None: ``HYPOTHESIS_PROFILE``, default "ci").

    Returns
    -------
    hypothesis.settings
        ``profile`` itself when it is a ``settings``, else the kit's profile that
        ``profile_name`` picks.

    Raises
    ------
    ValueError
        If the name is not one of ``PROFILES`` (see ``profile_name``).
    """
    return profile if isinstance(profile, settings) else PROFILES[profile_name(profile)]


def register_profiles() -> None:
    """Register the kit's profiles with Hypothesis under their names.

    After this, ``settings.load_profile(name)`` or pytest's ``--hypothesis-profile``
    option selects them.
    """
    for name, chosen in PROFILES.items():
        settings.register_profile(name, chosen)
