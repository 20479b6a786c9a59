"""A property of BN/BRN: a check over drawn inputs, and the registry of all of them."""
from dataclasses import dataclass
from typing import Callable

PROPERTIES = {}


@dataclass(frozen=True)
class Property:
    """``check(impl, **drawn)`` raises AssertionError when ``impl`` violates the property
    on ``drawn``, which ``draws(impl)`` (a dict of Hypothesis strategies) generates.
    ``needs``: "batch_norm", or "batch_renorm" for a property that is "n/a" without BRN."""

    name: str
    summary: str
    needs: str
    draws: Callable
    check: Callable

    def __str__(self):
        return self.name

    def applies_to(self, impl):
        return self.needs == "batch_norm" or impl.renorm


def prop(needs, draws):
    """Register the decorated check as a property named after it; the first line of its
    docstring is its summary."""
    def register(check):
        name = check.__name__
        PROPERTIES[name] = Property(name, check.__doc__.strip().splitlines()[0], needs, draws, check)
        return check
    return register
