"""A property of BN/BRN: a check over drawn inputs, and the registry of all of them."""
from dataclasses import dataclass
from typing import Callable

from ._dtypes import is_half

PROPERTIES = {}


@dataclass(frozen=True)
class Property:
    """``check(impl, **drawn)`` raises AssertionError when ``impl`` violates the property
    on ``drawn``, which ``draws(impl)`` (a dict of Hypothesis strategies) generates.
    ``needs``: "batch_norm", or "batch_renorm" for a property that is "n/a" without BRN,
    or "fused" for one that is "n/a" without the fused epilogue (Implementation.fused),
    or a tuple of those;
    ``halves``: the property is about float16/bfloat16 x only, "n/a" for an
    implementation whose ``dtypes`` hold neither."""

    name: str
    summary: str
    needs: str
    draws: Callable
    check: Callable
    halves: bool = False

    def __str__(self):
        return self.name

    def applies_to(self, impl):
        return self.why_not(impl) is None

    def why_not(self, impl):
        """Why the property does not apply to ``impl`` (None when it does)."""
        needs = (self.needs,) if isinstance(self.needs, str) else self.needs
        if "batch_renorm" in needs and not impl.renorm:
            return f"{impl.name} has no batch_renorm"
        if "fused" in needs and not impl.fused:
            return (f"{impl.name} has no fused epilogue (residual=, activation=; see "
                    f"Implementation.fused)")
        if self.halves and not any(is_half(d) for d in impl.dtypes):
            return f"{impl.name} takes no float16 or bfloat16 x (see Implementation.dtypes)"
        return None


def prop(needs, draws, halves=False):
    """Register the decorated check as a property named after it; the first line of its
    docstring is its summary."""
    def register(check):
        name = check.__name__
        PROPERTIES[name] = Property(name, check.__doc__.strip().splitlines()[0], needs, draws,
                                    check, halves)
        return check
    return register
