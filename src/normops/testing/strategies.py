"""Hypothesis strategies for BN/BRN inputs.

``cases()`` draws a whole argument set: a layout (NC, NCHW, NHWC, 5-D or any shape with
any channel axis), a dtype, a value regime, a memory arrangement, gamma/beta present or
not, eps, momentum and a seed for the values; for float16 and bfloat16 x, also the
dtypes of gamma/beta and of the running statistics (float32, the mixed-precision master
weights, or x's dtype, each drawn). Every drawn value is small and plain, so
Hypothesis shrinks towards NC, float32, moderate values, C order, and a small seed.

Dtypes: ``DTYPES`` (float32, float64) is what an Implementation is drawn by default;
``HALF_DTYPES`` holds float16, and bfloat16 where ml_dtypes imports (the optional extra
``normops[bf16]``: without it the kit runs and never draws bfloat16); ``ALL_DTYPES``
is all of them.
"""
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

from .._typing import DTypeLike
from ._cases import MEMORY, REGIMES, Case, make_case
from ._dtypes import HALVES, is_half

#: float32 and float64: the dtypes of x an Implementation is drawn by default.
DTYPES: tuple[np.dtype[Any], ...] = (np.dtype(np.float32), np.dtype(np.float64))
#: float16, and bfloat16 where ml_dtypes imports.
HALF_DTYPES: tuple[np.dtype[Any], ...] = HALVES
#: ``DTYPES`` and ``HALF_DTYPES``.
ALL_DTYPES: tuple[np.dtype[Any], ...] = DTYPES + HALF_DTYPES

#: Named layouts: name -> (ndim, channel axis); "any" (None) draws both.
LAYOUTS: dict[str, tuple[int, int] | None] = {
    "NC": (2, 1), "NCHW": (4, 1), "NHWC": (4, -1), "NCDHW": (5, 1), "NDHWC": (5, -1),
    "any": None}

#: The eps values drawn.
EPSILONS: tuple[float, ...] = (1e-5, 1e-3, 0.1)
#: The momenta drawn.
MOMENTA: tuple[float, ...] = (0.1, 0.0, 0.01, 0.5, 1.0)
#: BRN's (rmax, dmax) drawn: the paper's final values, BN exactly, tight clips, no
#: clipping at all.
RENORM_CLIPS: tuple[tuple[float, float], ...] = (
    (3.0, 5.0), (1.0, 0.0), (1.2, 0.1), (float("inf"), float("inf")))


def dtypes(choices: Iterable[DTypeLike] = ALL_DTYPES) -> st.SearchStrategy[np.dtype[Any]]:
    """Draw a dtype of x.

    float32/float64 are drawn as often as the half dtypes together (adding the halves
    takes no examples from float64); it shrinks towards the first choice.

    Parameters
    ----------
    choices : iterable of dtype-like, optional
        The dtypes to draw from; all of ``ALL_DTYPES`` by default.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        A strategy of NumPy dtypes, one of ``choices``.

    Raises
    ------
    TypeError
        If a choice is not a dtype.
    """
    choices = [np.dtype(d) for d in choices]
    full = [d for d in choices if not is_half(d)]
    half = [d for d in choices if is_half(d)]
    if full and half:
        return st.one_of(st.sampled_from(full), st.sampled_from(half))
    return st.sampled_from(choices)


def mixed_dtypes(dtype: DTypeLike) -> st.SearchStrategy[str | None]:
    """Draw the dtype of a per-channel array (gamma, beta, running statistics).

    Parameters
    ----------
    dtype : dtype-like
        The dtype of x.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        A strategy of None (x's own dtype) for float32/float64 x; for half x, of
        "float32" or None. What ``make_case`` takes as ``params`` and ``running``.
    """
    return st.sampled_from([None, "float32"]) if is_half(dtype) else st.just(None)


def regimes(choices: Sequence[str] = REGIMES) -> st.SearchStrategy[str]:
    """Draw a value regime.

    Parameters
    ----------
    choices : sequence of str, optional
        The regimes to draw from (see ``normops.testing.REGIMES``); ``REGIMES`` by
        default.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        A strategy of one of ``choices``, shrinking towards the first.
    """
    return st.sampled_from(choices)


def memory_layouts(choices: Sequence[str] = MEMORY) -> st.SearchStrategy[str]:
    """Draw a memory arrangement.

    Parameters
    ----------
    choices : sequence of str, optional
        The arrangements to draw from (see ``normops.testing.as_memory``); ``MEMORY`` by
        default.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        A strategy of one of ``choices``, shrinking towards the first.
    """
    return st.sampled_from(choices)


def epsilons() -> st.SearchStrategy[float]:
    """Draw an eps.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        A strategy of one of ``EPSILONS``, shrinking towards 1e-5.
    """
    return st.sampled_from(EPSILONS)


def momenta() -> st.SearchStrategy[float]:
    """Draw a momentum.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        A strategy of one of ``MOMENTA``, shrinking towards 0.1.
    """
    return st.sampled_from(MOMENTA)


def renorm_clips() -> st.SearchStrategy[tuple[float, float]]:
    """Draw BRN's clips.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        A strategy of one of ``RENORM_CLIPS``, an (rmax, dmax) pair, shrinking towards
        the paper's final values (3, 5).
    """
    return st.sampled_from(RENORM_CLIPS)


def shapes_and_axes(layouts: Iterable[str] = tuple(LAYOUTS), max_ndim: int = 5,
                    max_size: int = 240,
                    training: bool = True) -> st.SearchStrategy[tuple[tuple[int, ...], int]]:
    """Draw a shape and a channel axis.

    About one shape in four has m = 2 values per channel (the fewest training allows).

    Parameters
    ----------
    layouts : iterable of str, optional
        The layouts to draw from, names of ``LAYOUTS``: a named layout, or "any": any
        ndim from 2 to ``max_ndim`` and any channel axis, negative too. All by default.
    max_ndim : int, optional
        The most dimensions (named layouts with more are not drawn).
    max_size : int, optional
        About the largest size: each dimension is at most ``max_size ** (1 / ndim)``
        (and at least 2 may be drawn).
    training : bool, optional
        Guarantee at least 2 values per channel.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        A strategy of (shape, axis): a tuple of int and an int.
    """
    return _shapes_and_axes(layouts, max_ndim, max_size, training)


@st.composite
def _shapes_and_axes(draw: st.DrawFn, layouts: Iterable[str], max_ndim: int, max_size: int,
                     training: bool) -> tuple[tuple[int, ...], int]:
    names = [n for n in layouts if (named := LAYOUTS[n]) is None or named[0] <= max_ndim]
    name = draw(st.sampled_from(names))
    layout = LAYOUTS[name]
    if layout is None:
        ndim = draw(st.integers(2, max_ndim))
        axis = draw(st.integers(-ndim, ndim - 1))
    else:
        ndim, axis = layout
    channel = axis % ndim
    per_dim = max(2, int(max_size ** (1.0 / ndim)))
    shape = draw(st.lists(st.integers(1, per_dim), min_size=ndim, max_size=ndim))
    if draw(st.integers(0, 3)) == 3:
        shape = [n if i == channel else 1 for i, n in enumerate(shape)]
        shape[(channel + draw(st.integers(1, ndim - 1))) % ndim] = 2
    elif training and math.prod(shape) // shape[channel] == 1:
        shape[(channel + 1) % ndim] = 2
    return tuple(shape), axis


def cases(dtypes: Iterable[DTypeLike] = ALL_DTYPES, training: bool = True, renorm: bool = False,
          affine: bool | None = None, regimes: Sequence[str] = REGIMES,
          memory: Sequence[str] = MEMORY, layouts: Iterable[str] = tuple(LAYOUTS),
          max_size: int = 240, max_ndim: int = 5) -> st.SearchStrategy[Case]:
    """Draw a ``Case``: a full argument set for batch_norm, or batch_renorm.

    Every case is a ``make_case`` call of drawn plain values; see the module's
    description for what is drawn.

    Parameters
    ----------
    dtypes : iterable of dtype-like, optional
        The dtypes of x to draw from (see ``dtypes``); all of ``ALL_DTYPES`` by default.
    training : bool, optional
        Guarantee at least 2 values per channel.
    renorm : bool, optional
        Cases for batch_renorm (the second running statistic a standard deviation).
    affine : bool or None, optional
        True/False forces gamma and beta present/absent; None draws each.
    regimes : sequence of str, optional
        The value regimes to draw from; ``REGIMES`` by default.
    memory : sequence of str, optional
        The memory arrangements to draw from; ``MEMORY`` by default.
    layouts : iterable of str, optional
        The layouts to draw from (see ``shapes_and_axes``); all by default.
    max_size : int, optional
        About the largest size of x (see ``shapes_and_axes``).
    max_ndim : int, optional
        The most dimensions of x.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        A strategy of Case, whose repr is the ``make_case`` call that rebuilds it.
    """
    return _cases(dtypes, training, renorm, affine, regimes, memory, layouts, max_size,
                  max_ndim)


@st.composite
def _cases(draw: st.DrawFn, dtype_choices: Iterable[DTypeLike], training: bool, renorm: bool,
           affine: bool | None, regime_choices: Sequence[str], memory: Sequence[str],
           layouts: Iterable[str], max_size: int, max_ndim: int) -> Case:
    dtype = draw(dtypes(dtype_choices))
    shape, axis = draw(shapes_and_axes(layouts, max_ndim=max_ndim, max_size=max_size,
                                       training=training))
    params, running = draw(mixed_dtypes(dtype)), draw(mixed_dtypes(dtype))
    return make_case(
        shape, axis, dtype.name, regime=draw(st.sampled_from(regime_choices)),
        memory=draw(st.sampled_from(memory)), seed=draw(st.integers(0, 2**32 - 1)),
        gamma=draw(st.booleans()) if affine is None else affine,
        beta=draw(st.booleans()) if affine is None else affine,
        momentum=draw(momenta()), eps=draw(epsilons()), params=params, running=running,
        renorm=renorm)
