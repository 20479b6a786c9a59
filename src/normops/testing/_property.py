"""A property of BN/BRN: a check over drawn inputs, and the registry of all of them."""
from dataclasses import dataclass
from typing import Any, Callable, TypeAlias, TypeVar

from hypothesis import strategies as st

from ._dtypes import is_half
from ._implementation import Implementation

#: What a property draws for an implementation: its checks' keyword arguments by name,
#: each a Hypothesis strategy.
Draws: TypeAlias = Callable[[Implementation], dict[str, st.SearchStrategy[Any]]]
#: A property's check, ``check(impl, **drawn)``: it returns when the property holds and
#: raises AssertionError when it does not.
Check: TypeAlias = Callable[..., None]
_C = TypeVar("_C", bound=Check)


# (the lint of the source sees no __init__, and so no parameters, in a dataclass)
@dataclass(frozen=True)
class Property:  # numpydoc ignore=PR02
    """A property of BN/BRN, checked on an implementation over drawn inputs.

    ``check(impl, **drawn)`` raises AssertionError when ``impl`` violates the property on
    ``drawn``, which ``draws(impl)`` (a dict of Hypothesis strategies) generates. The
    constructor takes the attributes below as its arguments, in this order.

    Parameters
    ----------
    name : str
        The property's name, as ``properties`` and ``run(..., names=...)`` take it.
    summary : str
        What the property states, in one line.
    needs : str or tuple of str
        "batch_norm"; or "batch_renorm" for a property that is "n/a" without BRN; or
        "fused" for one that is "n/a" without the fused epilogue
        (``Implementation.fused``); or a tuple of those.
    draws : callable
        ``draws(impl)``: the check's keyword arguments for ``impl``, as a dict of
        Hypothesis strategies by name.
    check : callable
        ``check(impl, **drawn)``: returns when the property holds for ``impl`` on
        ``drawn``, raises AssertionError when it does not.
    halves : bool
        The property is about float16/bfloat16 x only: "n/a" for an implementation whose
        ``dtypes`` hold neither.
    """

    name: str
    summary: str
    needs: str | tuple[str, ...]
    draws: Draws
    check: Check
    halves: bool = False

    def __str__(self) -> str:
        return self.name

    def applies_to(self, impl: Implementation) -> bool:
        """Say whether the property applies to an implementation.

        Parameters
        ----------
        impl : Implementation
            The implementation under test.

        Returns
        -------
        bool
            True when the property applies to ``impl`` (``why_not`` gives no reason).
        """
        return self.why_not(impl) is None

    def why_not(self, impl: Implementation) -> str | None:
        """Say why the property does not apply to an implementation.

        Parameters
        ----------
        impl : Implementation
            The implementation under test.

        Returns
        -------
        str or None
            Why the property is "n/a" for ``impl`` (it has no batch_renorm, no fused
            epilogue, or takes no half dtype the property needs), or None when it applies.
        """
        needs = (self.needs,) if isinstance(self.needs, str) else self.needs
        if "batch_renorm" in needs and not impl.renorm:
            return f"{impl.name} has no batch_renorm"
        if "fused" in needs and not impl.fused:
            return (f"{impl.name} has no fused epilogue (residual=, activation=; see "
                    f"Implementation.fused)")
        if self.halves and not any(is_half(d) for d in impl.dtypes):
            return f"{impl.name} takes no float16 or bfloat16 x (see Implementation.dtypes)"
        return None


#: The registered properties by name, in the order their modules register them.
PROPERTIES: dict[str, Property] = {}


def prop(needs: str | tuple[str, ...], draws: Draws, halves: bool = False) -> Callable[[_C], _C]:
    """Register the decorated check as a property named after it.

    The first line of the check's docstring is the property's summary.

    Parameters
    ----------
    needs : str or tuple of str
        What the property needs of an implementation (see ``Property.needs``).
    draws : callable
        ``draws(impl)``: the check's arguments as Hypothesis strategies by name.
    halves : bool, optional
        The property is about float16/bfloat16 x only (see ``Property.halves``).

    Returns
    -------
    callable
        The decorator, which registers the check in ``PROPERTIES`` and returns it unchanged.
    """
    def register(check: _C) -> _C:
        """Register ``check`` as the property named after it.

        Parameters
        ----------
        check : callable
            The property's check; its docstring's first line is the summary.

        Returns
        -------
        callable
            ``check`` itself.
        """
        name = check.__name__
        assert check.__doc__ is not None, f"the property {name} has no docstring to summarize"
        PROPERTIES[name] = Property(name, check.__doc__.strip().splitlines()[0], needs, draws,
                                    check, halves)
        return check
    return register
