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

import numpy as np
from hypothesis import strategies as st

from ._cases import MEMORY, REGIMES, make_case
from ._dtypes import HALVES, is_half

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
HALF_DTYPES = HALVES
ALL_DTYPES = DTYPES + HALF_DTYPES

# name -> (ndim, channel axis); "any" draws both
LAYOUTS = {"NC": (2, 1), "NCHW": (4, 1), "NHWC": (4, -1), "NCDHW": (5, 1), "NDHWC": (5, -1),
           "any": None}

EPSILONS = (1e-5, 1e-3, 0.1)
MOMENTA = (0.1, 0.0, 0.01, 0.5, 1.0)
# (rmax, dmax): the paper's final values, BN exactly, tight clips, no clipping at all
RENORM_CLIPS = ((3.0, 5.0), (1.0, 0.0), (1.2, 0.1), (float("inf"), float("inf")))


def dtypes(choices=ALL_DTYPES):
    """One of ``choices``; float32/float64 as often as the half dtypes together (adding
    the halves takes no examples from float64), shrinking towards the first."""
    choices = [np.dtype(d) for d in choices]
    full = [d for d in choices if not is_half(d)]
    half = [d for d in choices if is_half(d)]
    if full and half:
        return st.one_of(st.sampled_from(full), st.sampled_from(half))
    return st.sampled_from(choices)


def mixed_dtypes(dtype):
    """The dtype of a per-channel array (gamma, beta, running statistics) for x of
    ``dtype``: None (x's own) for float32/float64 x; for half x, "float32" or None."""
    return st.sampled_from([None, "float32"]) if is_half(dtype) else st.just(None)


def regimes(choices=REGIMES):
    return st.sampled_from(choices)


def memory_layouts(choices=MEMORY):
    return st.sampled_from(choices)


def epsilons():
    return st.sampled_from(EPSILONS)


def momenta():
    return st.sampled_from(MOMENTA)


def renorm_clips():
    return st.sampled_from(RENORM_CLIPS)


@st.composite
def shapes_and_axes(draw, layouts=tuple(LAYOUTS), max_ndim=5, max_size=240, training=True):
    """(shape, axis): a named layout or, for "any", any ndim from 2 to ``max_ndim`` and any
    channel axis, negative too. About one shape in four has m = 2 values per channel
    (the fewest training allows), and ``training`` guarantees at least 2."""
    names = [n for n in layouts if LAYOUTS[n] is None or LAYOUTS[n][0] <= max_ndim]
    name = draw(st.sampled_from(names))
    if LAYOUTS[name] is None:
        ndim = draw(st.integers(2, max_ndim))
        axis = draw(st.integers(-ndim, ndim - 1))
    else:
        ndim, axis = LAYOUTS[name]
    channel = axis % ndim
    per_dim = max(2, int(max_size ** (1.0 / ndim)))
    shape = draw(st.lists(st.integers(1, per_dim), min_size=ndim, max_size=ndim))
    if draw(st.integers(0, 3)) == 3:
        shape = [n if i == channel else 1 for i, n in enumerate(shape)]
        shape[(channel + draw(st.integers(1, ndim - 1))) % ndim] = 2
    elif training and math.prod(shape) // shape[channel] == 1:
        shape[(channel + 1) % ndim] = 2
    return tuple(shape), axis


@st.composite
def cases(draw, dtypes=ALL_DTYPES, training=True, renorm=False, affine=None, regimes=REGIMES,
          memory=MEMORY, layouts=tuple(LAYOUTS), max_size=240, max_ndim=5):
    """A ``Case`` (see ``make_case``): a full argument set for batch_norm, or batch_renorm
    when ``renorm``. ``affine``: True/False forces gamma and beta present/absent, None
    draws each. ``training``: at least 2 values per channel."""
    dtype = draw(globals()["dtypes"](dtypes))
    shape, axis = draw(shapes_and_axes(layouts, max_ndim=max_ndim, max_size=max_size,
                                       training=training))
    params, running = draw(mixed_dtypes(dtype)), draw(mixed_dtypes(dtype))
    return make_case(
        shape, axis, dtype.name, regime=draw(st.sampled_from(regimes)),
        memory=draw(st.sampled_from(memory)), seed=draw(st.integers(0, 2**32 - 1)),
        gamma=draw(st.booleans()) if affine is None else affine,
        beta=draw(st.booleans()) if affine is None else affine,
        momentum=draw(momenta()), eps=draw(epsilons()), params=params, running=running,
        renorm=renorm)
