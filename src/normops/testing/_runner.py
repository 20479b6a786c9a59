"""Running properties through Hypothesis and reporting the outcome of each."""
import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

from .._text import table
from ._cases import ALL_REGIMES, Case, plain
from ._implementation import Implementation, backend_implementation
from ._profiles import profile_settings
from ._property import PROPERTIES, Property


# (the lint of the source sees no __init__, and so no parameters, in a dataclass)
@dataclass(frozen=True)
class Result:  # numpydoc ignore=PR02
    """The outcome of one property on one implementation.

    The constructor takes the attributes below as its arguments, in this order.

    Parameters
    ----------
    name : str
        The property's name.
    status : str
        "passed", "FAILED" or "n/a".
    examples : int
        How many inputs were tried (shrinking included).
    seconds : float
        How long the property ran.
    message : str
        What failed, on which input (as the ``make_case`` call that rebuilds it), or
        why the property does not apply; "" when it passed.
    """

    name: str
    status: str
    examples: int
    seconds: float
    message: str = ""

    @property
    def failed(self) -> bool:
        """Say whether the property failed.

        Returns
        -------
        bool
            True when ``status`` is "FAILED".
        """
        return self.status == "FAILED"


# (the lint of the source sees no __init__, and so no parameters, in a dataclass)
@dataclass(frozen=True)
class Report:  # numpydoc ignore=PR02
    """The outcome of a run of the kit on one implementation.

    Its str is the report: a table of the results, every failure's message, and a
    summary line of the counts. The constructor takes the attributes below as its
    arguments, in this order.

    Parameters
    ----------
    implementation : str
        The implementation's name.
    results : tuple of Result
        One result per property run, in the order they ran.
    """

    implementation: str
    results: tuple[Result, ...]

    @property
    def passed(self) -> bool:
        """Say whether no property failed.

        Returns
        -------
        bool
            True when no result failed ("n/a" results do not fail).
        """
        return not any(r.failed for r in self.results)

    def counts(self) -> dict[str, int]:
        """Count the results by status.

        Returns
        -------
        dict of str to int
            How many results are "passed", "FAILED" and "n/a" (every key present).
        """
        statuses = [r.status for r in self.results]
        return {s: statuses.count(s) for s in ("passed", "FAILED", "n/a")}

    def table(self) -> str:
        """Tabulate the results.

        Returns
        -------
        str
            A text table, one row per property: its name, examples, seconds and status.
        """
        text: str = table(("property", "examples", "seconds", "result"),
                          [(r.name, r.examples, f"{r.seconds:.1f}", r.status)
                           for r in self.results])
        return text

    def failures(self) -> str:
        """Give the failures' messages.

        Returns
        -------
        str
            "FAILED <property>: <message>" for each failed property, separated by blank
            lines; "" when none failed.
        """
        return "\n\n".join(f"FAILED {r.name}: {r.message}" for r in self.results if r.failed)

    def __str__(self) -> str:
        counts = self.counts()
        summary = f"{self.implementation}: {counts['passed']} passed, {counts['FAILED']} failed, {counts['n/a']} n/a"
        return "\n\n".join(part for part in (self.table(), self.failures(), summary) if part)


def _describe(drawn: dict[str, Any]) -> str:
    """The drawn input: x's shape, dtype and axis first, then every drawn value (a case as
    the make_case call that rebuilds it; NumPy scalars as plain numbers, dtypes as their
    names)."""
    cases = [value.summary for value in drawn.values() if isinstance(value, Case)]
    values = ", ".join(f"{key}={plain(value)!r}" for key, value in drawn.items())
    return "; ".join(cases + [values])


def run_property(prop: Property, impl: Implementation,
                 profile: str | settings | None = None) -> Result:
    """Run one property on an implementation.

    Parameters
    ----------
    prop : Property
        The property (see ``properties``).
    impl : Implementation
        The implementation under test.
    profile : str, hypothesis.settings or None, optional
        The Hypothesis settings, or a profile's name (see ``profile_settings``); None:
        the profile ``HYPOTHESIS_PROFILE`` names, default "ci".

    Returns
    -------
    Result
        "n/a" (with the reason) when the property does not apply to ``impl``; "FAILED"
        with a message naming the property, the shrunk input and what did not hold (an
        exception the implementation raised is a failure naming it); else "passed".

    Raises
    ------
    ValueError
        If ``profile`` names no profile of the kit.
    """
    if not prop.applies_to(impl):
        return Result(prop.name, "n/a", 0, 0.0, prop.why_not(impl) or "")
    examples = 0

    # Hypothesis keys the example database and the "ci" profile's seed on this function's
    # source and signature (comments aside): its types are in a type comment, not in
    # annotations, and it has no docstring, so that the kit draws the same examples as
    # it did before they were typed
    def property_holds(drawn):  # type: (dict[str, Any]) -> None  # numpydoc ignore=GL08
        nonlocal examples
        examples += 1
        try:
            prop.check(impl, **drawn)
        except HypothesisException:   # assume() and the like steer Hypothesis itself
            raise
        except Exception as exc:
            what = str(exc) if isinstance(exc, AssertionError) else f"raised {type(exc).__name__}: {exc}"
            raise AssertionError(f"{prop.name} does not hold for {impl.name} on "
                                 f"{_describe(drawn)}:\n  {what}") from exc

    # a key per property (Hypothesis's example database, and the "ci" profile's seed):
    # every implementation sees the same examples of a property
    setattr(property_holds, "_hypothesis_internal_add_digest", prop.name.encode())
    test = profile_settings(profile)(given(st.fixed_dictionaries(prop.draws(impl)))(property_holds))
    start = time.perf_counter()
    try:
        test()
    except Exception as exc:
        message = (str(exc) if isinstance(exc, AssertionError) else
                   f"Hypothesis could not run the property: {type(exc).__name__}: {exc}")
        return Result(prop.name, "FAILED", examples, time.perf_counter() - start, message)
    return Result(prop.name, "passed", examples, time.perf_counter() - start)


def properties(names: Sequence[str] | None = None) -> list[Property]:
    """List the registered properties.

    Parameters
    ----------
    names : sequence of str, optional
        The properties' names; None (the default): all of them.

    Returns
    -------
    list of Property
        Every registered property, in registration order, or those ``names``, in their
        order.

    Raises
    ------
    ValueError
        If a name is not a registered property's.
    """
    if names is None:
        return list(PROPERTIES.values())
    unknown = [n for n in names if n not in PROPERTIES]
    if unknown:
        raise ValueError(f"unknown properties {unknown}; known: {', '.join(PROPERTIES)}")
    return [PROPERTIES[n] for n in names]


def run(impl: Implementation, *, profile: str | settings | None = None,
        names: Sequence[str] | None = None, regimes: str | Iterable[str] | None = None,
        progress: Callable[[Result], object] | None = None) -> Report:
    """Run every property, or those named, on an implementation.

    Parameters
    ----------
    impl : Implementation
        The implementation under test.
    profile : str, hypothesis.settings or None, optional
        The Hypothesis settings, or a profile's name (see ``profile_settings``).
    names : sequence of str, optional
        The properties to run (see ``properties``); all by default.
    regimes : str or iterable of str, optional
        The value regimes to draw instead of ``impl.regimes`` (e.g. ``EXTREME_REGIMES``),
        each one of ``ALL_REGIMES``.
    progress : callable, optional
        ``progress(result)`` is called with each property's Result after it ran.

    Returns
    -------
    Report
        The results of the properties, in order.

    Raises
    ------
    ValueError
        If a name is not a registered property's, a regime is unknown (or ``regimes``
        is empty), or ``profile`` names no profile of the kit.
    """
    if regimes is not None:
        impl = dataclasses.replace(impl, regimes=_known_regimes(regimes))
    results = []
    with _storage_for(profile_settings(profile)):
        for prop in properties(names):
            results.append(run_property(prop, impl, profile))
            if progress is not None:
                progress(results[-1])
    return Report(impl.name, tuple(results))


@contextlib.contextmanager
def _storage_for(chosen: settings) -> Iterator[None]:
    """Hypothesis keeps caches (constants read from the source) in its storage directory,
    ./.hypothesis unless set, even without an example database: a profile without one
    ("ci", "thorough") leaves nothing behind, its caches going to a temporary directory
    for the run."""
    if chosen.database is not None:
        yield
        return
    from hypothesis import configuration
    before = configuration.storage_directory().home_directory   # the user's, kept
    with tempfile.TemporaryDirectory(prefix="normops-hypothesis-") as scratch:
        configuration.set_hypothesis_home_dir(scratch)
        try:
            yield
        finally:
            configuration.set_hypothesis_home_dir(before)


def _known_regimes(regimes: str | Iterable[str]) -> tuple[str, ...]:
    regimes = (regimes,) if isinstance(regimes, str) else tuple(regimes)
    unknown = [r for r in regimes if r not in ALL_REGIMES]
    if unknown or not regimes:
        raise ValueError(f"unknown value regimes {unknown}; known: {', '.join(ALL_REGIMES)}")
    return regimes


def check(impl: Implementation, *, profile: str | settings | None = None,
          names: Sequence[str] | None = None,
          regimes: str | Iterable[str] | None = None) -> Report:
    """Run the kit on an implementation, as ``run``, and fail when a property fails.

    Parameters
    ----------
    impl : Implementation
        The implementation under test.
    profile : str, hypothesis.settings or None, optional
        The Hypothesis settings, or a profile's name (see ``profile_settings``).
    names : sequence of str, optional
        The properties to run (see ``properties``); all by default.
    regimes : str or iterable of str, optional
        The value regimes to draw instead of ``impl.regimes`` (see ``run``).

    Returns
    -------
    Report
        The report, when every property passed or is "n/a".

    Raises
    ------
    AssertionError
        If a property fails; its message is the report (``str(report)``).
    TypeError
        If ``impl`` is not an Implementation (for a registered backend, use
        ``check_backend``).
    ValueError
        If a name, regime or profile is unknown (see ``run``).
    """
    if not isinstance(impl, Implementation):
        raise TypeError(f"check() takes an Implementation, not {type(impl).__name__}; "
                        "for a registered backend use check_backend(name)")
    report = run(impl, profile=profile, names=names, regimes=regimes)
    if not report.passed:
        raise AssertionError(str(report))
    return report


def check_backend(name: str, *, profile: str | settings | None = None,
                  names: Sequence[str] | None = None,
                  regimes: str | Iterable[str] | None = None) -> Report:
    """Run the kit on a registered backend, through the public ops.

    The backend runs on the arrays of the library it is picked for (see
    ``backend_implementation``).

    Parameters
    ----------
    name : str
        The registered backend's name.
    profile : str, hypothesis.settings or None, optional
        The Hypothesis settings, or a profile's name (see ``profile_settings``).
    names : sequence of str, optional
        The properties to run (see ``properties``); all by default.
    regimes : str or iterable of str, optional
        The value regimes to draw instead of the default ones (see ``run``).

    Returns
    -------
    Report
        The report, when every property passed or is "n/a".

    Raises
    ------
    AssertionError
        If a property fails; its message is the report (``str(report)``).
    normops.UnknownBackendError
        If no backend ``name`` is registered.
    normops.BackendUnavailableError
        If the backend cannot run here.
    ImportError
        If the backend's array library is not installed.
    ValueError
        If a name, regime or profile is unknown (see ``run``).
    """
    return check(backend_implementation(name), profile=profile, names=names, regimes=regimes)
