"""Running properties through Hypothesis and reporting the outcome of each."""
import contextlib
import dataclasses
import tempfile
import time
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

from .._text import table
from ._cases import ALL_REGIMES, Case
from ._implementation import Implementation, backend_implementation
from ._profiles import profile_settings
from ._property import PROPERTIES


@dataclass(frozen=True)
class Result:
    """The outcome of one property: ``status`` is "passed", "FAILED" or "n/a";
    ``examples`` counts the inputs tried (shrinking included); ``message`` says what
    failed, on which input, or why the property does not apply."""

    name: str
    status: str
    examples: int
    seconds: float
    message: str = ""

    @property
    def failed(self):
        return self.status == "FAILED"


@dataclass(frozen=True)
class Report:
    implementation: str
    results: tuple

    @property
    def passed(self):
        return not any(r.failed for r in self.results)

    def counts(self):
        statuses = [r.status for r in self.results]
        return {s: statuses.count(s) for s in ("passed", "FAILED", "n/a")}

    def table(self):
        return table(("property", "examples", "seconds", "result"),
                     [(r.name, r.examples, f"{r.seconds:.1f}", r.status) for r in self.results])

    def failures(self):
        return "\n\n".join(f"FAILED {r.name}: {r.message}" for r in self.results if r.failed)

    def __str__(self):
        counts = self.counts()
        summary = f"{self.implementation}: {counts['passed']} passed, {counts['FAILED']} failed, {counts['n/a']} n/a"
        return "\n\n".join(part for part in (self.table(), self.failures(), summary) if part)


def _describe(drawn):
    """The drawn input: x's shape, dtype and axis first, then every drawn value (a case as
    the make_case call that rebuilds it)."""
    cases = [value.summary for value in drawn.values() if isinstance(value, Case)]
    values = ", ".join(f"{key}={value!r}" for key, value in drawn.items())
    return "; ".join(cases + [values])


def run_property(prop, impl, profile=None):
    """Run one property on ``impl`` under ``profile`` (see profile_settings): a Result."""
    if not prop.applies_to(impl):
        return Result(prop.name, "n/a", 0, 0.0, prop.why_not(impl))
    examples = 0

    def property_holds(drawn):
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
    property_holds._hypothesis_internal_add_digest = prop.name.encode()
    test = profile_settings(profile)(given(st.fixed_dictionaries(prop.draws(impl)))(property_holds))
    start = time.perf_counter()
    try:
        test()
    except Exception as exc:
        message = (str(exc) if isinstance(exc, AssertionError) else
                   f"Hypothesis could not run the property: {type(exc).__name__}: {exc}")
        return Result(prop.name, "FAILED", examples, time.perf_counter() - start, message)
    return Result(prop.name, "passed", examples, time.perf_counter() - start)


def properties(names=None):
    """The registered properties, all or those named (unknown names are an error)."""
    if names is None:
        return list(PROPERTIES.values())
    unknown = [n for n in names if n not in PROPERTIES]
    if unknown:
        raise ValueError(f"unknown properties {unknown}; known: {', '.join(PROPERTIES)}")
    return [PROPERTIES[n] for n in names]


def run(impl, *, profile=None, names=None, regimes=None, progress=None):
    """Run every property (or those ``names``) on the Implementation ``impl``: a Report.
    ``regimes``: the value regimes to draw instead of ``impl.regimes`` (e.g.
    ``EXTREME_REGIMES``). ``progress(result)`` is called after each property."""
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
def _storage_for(chosen):
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


def _known_regimes(regimes):
    regimes = (regimes,) if isinstance(regimes, str) else tuple(regimes)
    unknown = [r for r in regimes if r not in ALL_REGIMES]
    if unknown or not regimes:
        raise ValueError(f"unknown value regimes {unknown}; known: {', '.join(ALL_REGIMES)}")
    return regimes


def check(impl, *, profile=None, names=None, regimes=None):
    """As ``run``, but raise an AssertionError holding the report when a property fails."""
    if not isinstance(impl, Implementation):
        raise TypeError(f"check() takes an Implementation, not {type(impl).__name__}; "
                        "for a registered backend use check_backend(name)")
    report = run(impl, profile=profile, names=names, regimes=regimes)
    if not report.passed:
        raise AssertionError(str(report))
    return report


def check_backend(name, *, profile=None, names=None, regimes=None):
    """Run the kit on the registered backend ``name`` through the public ops; raise an
    AssertionError holding the report when a property fails."""
    return check(backend_implementation(name), profile=profile, names=names, regimes=regimes)
