"""A test case: one full argument set for BN/BRN, made from a short recipe.

Every case is ``make_case(...)`` of a few plain values (shape, axis, dtype, value regime,
memory layout, seed, ...), and a case prints as that call, so a failure the kit reports
can be rebuilt exactly from its message.
"""
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._typing import ArrayLike, DTypeLike
from ._dtypes import dtype as as_dtype
from ._dtypes import finfo, is_half

# Value regimes, each one a way naive BN code goes wrong: "moderate" (per-channel offsets
# up to 10 and scales 0.01..100), "large_offset" (a common offset 1e3..1e4 times the
# spread in float32, up to 1e8 in float64: E[x^2] - E[x]^2 loses the variance),
# "tiny_variance" (spreads 1e-6..1e-3, far below eps), "constant_channels" (some
# channels hold one value: variance 0, must normalize to beta, never NaN),
# "mixed_scales" (channel spreads and offsets from 1e-4 to 1e4 side by side).
REGIMES = ("moderate", "large_offset", "tiny_variance", "constant_channels", "mixed_scales")
# Drawn only when asked for (Implementation.regimes, run(..., regimes=...), or
# ``python -m normops check --regime``): "extreme_scales", channel spreads over the whole
# range where the results are still representable (float32 1e-30..1e30, float64
# 1e-150..1e150), offsets up to 1e3 spreads (float32) or 1e12 (float64), |gamma| up to
# 1e36, eps scaled with the smallest variance, and dy scaled so that dx is representable
# too: where float32 coefficients underflow or overflow, and where invstd^3 does in
# float64.
EXTREME_REGIMES = ("extreme_scales",)
# float16 and bfloat16 x draw the same regimes, rescaled to what the dtype holds (see
# _half_channel_values): float16's largest value is 65504 and its smallest normal 6.1e-5,
# so float32's spreads of 1e4 with offsets of 1e4, or variances of 1e8, would overflow
# it (a regime of infinities tests nothing); and 11 bits (float16) or 8 bits (bfloat16)
# resolve a spread only within about 2^11 or 2^8 of its offset, so a tiny spread at an
# offset of 1, or an offset of 1e4 spreads, would be a constant channel.
ALL_REGIMES = REGIMES + EXTREME_REGIMES

# Memory arrangements of the same values: C order, negative strides on every axis, every
# other element of a bigger buffer, Fortran order, channel axis innermost in memory.
MEMORY = ("contiguous", "reversed", "strided", "fortran", "channels_last")


def plain(value: Any) -> Any:
    """Give a value as plain Python, for messages that print it.

    A NumPy scalar's repr is NumPy 2's ``np.float64(...)``, which is neither readable nor
    valid Python without NumPy imported as ``np``: messages print the Python number it
    holds instead, and a dtype as its name.

    Parameters
    ----------
    value : object
        What to print.

    Returns
    -------
    object
        A NumPy scalar as the Python number (or bool, str) it holds, a NumPy dtype as its
        name, the items of a (plain) tuple or list likewise; anything else as it is.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.dtype):
        return value.name
    if type(value) in (tuple, list):   # not a named tuple, whose fields are its own
        return type(value)(plain(v) for v in value)
    return value


def as_memory(values: NDArray[Any], kind: str, axis: int = 1) -> NDArray[Any]:
    """Lay out an array's values in a memory arrangement.

    Parameters
    ----------
    values : numpy.ndarray
        The values.
    kind : str
        One of ``MEMORY``: "contiguous" (C order), "reversed" (negative strides on every
        axis), "strided" (every other element of a bigger buffer), "fortran" (Fortran
        order) or "channels_last" (the channel axis innermost in memory).
    axis : int, optional
        The channel axis, for "channels_last".

    Returns
    -------
    numpy.ndarray
        An array of ``values``' shape and elements, in the arrangement ``kind``.

    Raises
    ------
    ValueError
        If ``kind`` is not one of ``MEMORY``.
    """
    if kind == "contiguous":
        return np.ascontiguousarray(values)
    if kind == "reversed":
        return np.flip(np.flip(values).copy())
    if kind == "strided":
        wide = np.zeros(values.shape[:-1] + (2 * values.shape[-1],), values.dtype)
        wide[..., ::2] = values
        return wide[..., ::2]
    if kind == "fortran":
        return np.asfortranarray(values)
    if kind == "channels_last":
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(values, axis, -1)), -1, axis)
    raise ValueError(f"unknown memory arrangement {kind!r}; known: {', '.join(MEMORY)}")


def _some_constant(rng: np.random.Generator, offset: NDArray[np.float64],
                   spread: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(offset, spread) with about half the channels, and at least one, made constant."""
    constant = rng.random(len(spread)) < 0.5
    constant[rng.integers(len(spread))] = True
    return offset, np.where(constant, 0.0, spread)


def _channel_values(rng: np.random.Generator, regime: str, channels: int,
                    dtype: np.dtype[Any]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-channel (offset, spread) for ``regime``."""
    if is_half(dtype):
        return _half_channel_values(rng, regime, channels, dtype)
    if regime == "moderate":
        offset = rng.uniform(-10, 10) + rng.normal(0.0, 1.0, channels)
        spread = 10.0 ** (rng.uniform(-1.5, 1.5) + rng.uniform(-0.5, 0.5, channels))
    elif regime == "large_offset":
        # float32 keeps ~7 digits: past 1e4 spreads the offset would swallow the values
        top = 4.0 if dtype == np.float32 else 8.0
        offset = rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(3.0, top) * rng.uniform(1, 2, channels)
        spread = 10.0 ** rng.uniform(-0.5, 0.5, channels)
    elif regime == "tiny_variance":
        offset = rng.normal(0.0, 1.0, channels)
        spread = 10.0 ** rng.uniform(-6.0, -3.0, channels)
    elif regime == "constant_channels":
        offset, spread = _some_constant(rng, *_channel_values(rng, "moderate", channels, dtype))
    elif regime == "extreme_scales":
        top = 30.0 if dtype == np.float32 else 150.0
        spread = 10.0 ** rng.uniform(-top, top, channels)
        offset = (rng.choice([-1.0, 1.0], channels) * spread
                  * 10.0 ** rng.uniform(-1.0, 3.0 if dtype == np.float32 else 12.0, channels))
    elif regime == "mixed_scales":
        spread = 10.0 ** rng.uniform(-4.0, 4.0, channels)
        offset = rng.normal(0.0, 1.0, channels) * 10.0 ** rng.uniform(-4.0, 4.0, channels)
    else:
        raise ValueError(f"unknown value regime {regime!r}; known: {', '.join(REGIMES)}")
    return offset, spread


# float16 and bfloat16 regimes: (offset, spread) per channel, in the dtype's range with
# every variance representable (float16: spreads up to about 100, variances up to 1e4
# below 65504, none below its smallest normal 6.1e-5 but tiny_variance's), and offsets
# within about 2^(digits - 4) spreads, so that a spread keeps at least 8 or so distinct
# values: 128 spreads in float16, 16 in bfloat16 (whose range is float32's, so its
# mixed and extreme scales are float32's)
_HALF_OFFSETS: dict[str, float] = {"float16": 2.1, "bfloat16": 1.2}    # log10 of the largest offset, in spreads
_HALF_TINY: dict[str, float] = {"float16": -4.0, "bfloat16": -6.0}     # log10 of the smallest tiny spread
# extreme_scales: log10 of the largest (and minus the smallest) spread, offsets up to
# 10^offset spreads, |gamma| up to 10^gamma (y = gamma x_hat must fit the dtype)
HALF_EXTREMES: dict[str, dict[str, float]] = {"float16": dict(top=3.0, offset=1.0, gamma=3.0),
                                               "bfloat16": dict(top=30.0, offset=1.0,
                                                                gamma=36.0)}


def _half_channel_values(rng: np.random.Generator, regime: str, channels: int,
                         dtype: np.dtype[Any]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-channel (offset, spread) of ``regime`` for float16 or bfloat16 x (see above)."""
    name = np.dtype(dtype).name
    if regime == "moderate":
        # spreads 0.03..30, offsets within a few spreads (float32's offsets of 10 would
        # swallow bfloat16 spreads of 0.03)
        spread = 10.0 ** (rng.uniform(-1.0, 1.0) + rng.uniform(-0.5, 0.5, channels))
        offset = (rng.uniform(-3, 3) + rng.normal(0.0, 1.0, channels)) * spread
    elif regime == "large_offset":
        top = _HALF_OFFSETS[name]
        spread = 10.0 ** rng.uniform(-0.5, 0.5, channels)
        offset = (rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(top - 1.0, top)
                  * rng.uniform(1, 2, channels) * spread)
    elif regime == "tiny_variance":
        # variances far below eps (1e-5) still, at offsets the digits resolve them at
        spread = 10.0 ** rng.uniform(_HALF_TINY[name], -3.0, channels)
        offset = rng.normal(0.0, 3.0, channels) * spread
    elif regime == "constant_channels":
        offset, spread = _some_constant(rng, *_half_channel_values(rng, "moderate", channels,
                                                                  dtype))
    elif regime == "extreme_scales":
        limits = HALF_EXTREMES[name]
        spread = 10.0 ** rng.uniform(-limits["top"], limits["top"], channels)
        offset = (rng.choice([-1.0, 1.0], channels) * spread
                  * 10.0 ** rng.uniform(-1.0, limits["offset"], channels))
    elif regime == "mixed_scales":
        # float16: spreads 1e-2..1e2 (variances 1e-4..1e4 within its range); bfloat16
        # float32's 1e-4..1e4; offsets as mixed, but within the spreads the digits resolve
        top = 2.0 if name == "float16" else 4.0
        spread = 10.0 ** rng.uniform(-top, top, channels)
        offset = rng.normal(0.0, 1.0, channels) * np.minimum(
            10.0 ** rng.uniform(-top, top, channels), 10.0 ** _HALF_OFFSETS[name] * spread)
    else:
        raise ValueError(f"unknown value regime {regime!r}; known: {', '.join(REGIMES)}")
    return offset, spread


def make_case(shape: Sequence[int], axis: int = 1, dtype: DTypeLike = "float64", *,
              regime: str = "moderate", memory: str = "contiguous", seed: int = 0,
              gamma: bool = True, beta: bool = True, momentum: float = 0.1, eps: float = 1e-5,
              params: DTypeLike | None = None, running: DTypeLike | None = None,
              renorm: bool = False) -> "Case":
    """Make a full argument set for batch_norm, or batch_renorm, from a short recipe.

    The values are drawn from a NumPy generator seeded with ``seed`` in the value
    ``regime``, x and dy laid out in ``memory``.

    Parameters
    ----------
    shape : sequence of int
        The shape of x (and of dy).
    axis : int, optional
        The channel axis, negative too.
    dtype : dtype-like, optional
        The dtype of x (and of dy): a dtype, a type or a name ("bfloat16" needs
        ml_dtypes).
    regime : str, optional
        The value regime, one of ``ALL_REGIMES`` (see ``REGIMES`` and
        ``EXTREME_REGIMES``).
    memory : str, optional
        The memory arrangement of x and dy, one of ``MEMORY`` (see ``as_memory``).
    seed : int, optional
        The seed of the NumPy generator the values are drawn from.
    gamma, beta : bool, optional
        Whether gamma and beta are present (else None).
    momentum, eps : float, optional
        The ops' momentum and eps (the "extreme_scales" regime scales eps with the
        smallest variance).
    params, running : dtype-like, optional
        The dtypes of gamma and beta and of the running statistics: for float16 or
        bfloat16 x "float32" (mixed precision) or x's dtype; x's dtype (the default, None)
        otherwise.
    renorm : bool, optional
        A case for batch_renorm, whose second running statistic is a standard deviation
        (else batch_norm's variance).

    Returns
    -------
    Case
        The argument set; its repr is this call (with plain Python values), which
        rebuilds it.

    Raises
    ------
    ValueError
        If ``params`` or ``running`` does not go with x's dtype, or ``regime`` or
        ``memory`` is unknown.
    TypeError
        If ``dtype``, ``params`` or ``running`` is not a dtype.
    ImportError
        If a dtype is "bfloat16" and ml_dtypes is not installed.

    Notes
    -----
    The same call gives the same values under the same NumPy version (its generators'
    streams may change between versions). The case's repr prints every argument as plain
    Python (a dtype by its name, a NumPy scalar as the number it holds), so that a
    failure message's ``make_case(...)`` call rebuilds its case.
    """
    shape, dtype = tuple(int(n) for n in shape), as_dtype(dtype)
    param_dtype = dtype if params is None else as_dtype(params)
    running_dtype = dtype if running is None else as_dtype(running)
    for name, chosen in (("params", param_dtype), ("running", running_dtype)):
        if chosen != dtype and not (is_half(dtype) and chosen == np.float32):
            raise ValueError(f"{name}={chosen.name!r} does not go with x of {dtype.name}: "
                             f"float32 or x's dtype for half x, x's dtype otherwise")
    ndim = len(shape)
    channel_axis = axis % ndim
    channels = shape[channel_axis]
    rng = np.random.default_rng(seed)
    offset, spread = _channel_values(rng, regime, channels, dtype)
    bshape = [1] * ndim
    bshape[channel_axis] = channels
    x = rng.normal(size=shape) * spread.reshape(bshape) + offset.reshape(bshape)
    dy = rng.normal(size=shape)
    g = rng.uniform(0.5, 2.0, channels) * rng.choice([-1.0, 1.0], channels)
    b = rng.normal(size=channels)
    if regime == "extreme_scales":
        g, b, dy_scale, eps = _extreme_parameters(rng, g, b, spread, dtype, eps, gamma)
        dy = dy * dy_scale.reshape(bshape)
    # running statistics near the batch's, so eval mode and BRN's r and d see sane values;
    # a constant channel's running spread is 1, not 0 (BRN requires sigma > 0)
    running_spread = rng.uniform(0.5, 2.0, channels) * np.where(spread > 0, spread, 1.0)
    running_mean = offset + rng.normal(0.0, 0.5, channels) * running_spread
    running_second = running_spread if renorm else running_spread ** 2
    info = finfo(running_dtype)   # a float32 variance of an extreme spread is beyond float32
    running_second = np.clip(running_second, 4 * info.tiny, info.max / 4)
    # plain Python values (a dtype as its name, NumPy scalars as the numbers they hold),
    # so that the recipe is a call that rebuilds the case
    mixed = "".join(f"{name}={chosen.name!r}, " for name, value, chosen in
                    (("params", params, param_dtype), ("running", running, running_dtype))
                    if value is not None)
    recipe = (f"make_case({shape}, axis={plain(axis)!r}, dtype={dtype.name!r}, "
              f"regime={plain(regime)!r}, memory={plain(memory)!r}, seed={plain(seed)!r}, "
              f"gamma={plain(gamma)!r}, beta={plain(beta)!r}, momentum={plain(momentum)!r}, "
              f"eps={plain(eps)!r}, {mixed}renorm={plain(renorm)!r})")
    return Case(as_memory(x.astype(dtype), memory, channel_axis),
                as_memory(dy.astype(dtype), memory, channel_axis), axis,
                g.astype(param_dtype) if gamma else None, b.astype(param_dtype) if beta else None,
                running_mean.astype(running_dtype), running_second.astype(running_dtype),
                momentum, eps, recipe, param_dtype)


def _extreme_parameters(rng: np.random.Generator, g: NDArray[np.float64], b: NDArray[np.float64],
                        spread: NDArray[np.float64], dtype: np.dtype[Any], eps: float,
                        with_gamma: bool) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                                   NDArray[np.float64], float]:
    """The extreme_scales regime's gamma (|gamma| from 1e-2 to 1e36, so that gamma x_hat
    fits float32, and not so far from the spread that no dy gives a representable dx),
    beta (of gamma's size), per-channel dy scales (dy and dx = gamma dy / sigma both within
    10^+-top, for gamma = 1 when it is absent) and eps (scaled by the smallest variance, so
    it does not swamp tiny spreads)."""
    top = 30.0 if dtype == np.float32 else 150.0
    most_g = 36.0
    if is_half(dtype):
        top, most_g = HALF_EXTREMES[dtype.name]["top"], HALF_EXTREMES[dtype.name]["gamma"]
    log_spread = np.log10(spread)
    log_g = np.clip(rng.uniform(-2.0, most_g, len(g)), log_spread - 2 * top + 4, log_spread + 2 * top - 4)
    g = np.sign(g) * 10.0 ** log_g
    b = b * np.abs(g)
    if not with_gamma:
        log_g = np.zeros_like(log_g)
    low = np.maximum(-top, -top + log_spread - log_g) + 2
    high = np.minimum(top, top + log_spread - log_g) - 2
    dy_scale = 10.0 ** rng.uniform(low, np.maximum(low, high))
    return g, b, dy_scale, eps * float(np.min(spread)) ** 2


# (the lint of the source sees no __init__, and so no parameters, in a dataclass)
@dataclass(frozen=True, eq=False, repr=False)
class Case:  # numpydoc ignore=PR02
    """One full argument set for BN/BRN (see ``make_case``, which makes them).

    Its repr is the ``make_case`` call that built it (``recipe``), else its ``summary``.
    The constructor takes the attributes below as its arguments, in this order.

    Parameters
    ----------
    x : numpy.ndarray
        The input.
    dy : numpy.ndarray
        The upstream gradient, of x's shape and dtype.
    axis : int
        The channel axis (negative too).
    gamma, beta : numpy.ndarray or None
        The per-channel scale and shift, or None when absent.
    running_mean : numpy.ndarray
        The running mean.
    running_second : numpy.ndarray
        The second running statistic: running_var for BN, running_std for BRN.
    momentum : float
        The running statistics' momentum.
    eps : float
        The variance's eps.
    recipe : str
        The ``make_case`` call that built the case ("" when made otherwise; a modified
        case's says what was replaced).
    param_dtype : numpy.dtype or None
        The dtype of gamma and beta, even when they are absent (None: x's).
    """

    x: NDArray[Any]
    dy: NDArray[Any]
    axis: int
    gamma: NDArray[Any] | None
    beta: NDArray[Any] | None
    running_mean: NDArray[Any]
    running_second: NDArray[Any]
    momentum: float
    eps: float
    recipe: str = ""
    param_dtype: np.dtype[Any] | None = None   # gamma's and beta's dtype, even when absent

    def __repr__(self) -> str:
        return self.recipe or self.summary

    @property
    def summary(self) -> str:
        """Describe x: its shape, dtype and channel axis.

        Returns
        -------
        str
            E.g. "x of shape (4, 3), float32, axis 1 (m = 4)".
        """
        return f"x of shape {self.x.shape}, {self.x.dtype}, axis {self.axis} (m = {self.m})"

    @property
    def parameters_dtype(self) -> np.dtype[Any]:
        """Give gamma's and beta's dtype, whether or not they are present.

        Returns
        -------
        numpy.dtype
            The dtype of x, or float32 for half x with float32 parameters.
        """
        present = self.gamma if self.gamma is not None else self.beta
        if present is not None:
            return present.dtype
        return self.x.dtype if self.param_dtype is None else np.dtype(self.param_dtype)

    @property
    def running_dtype(self) -> np.dtype[Any]:
        """Give the running statistics' dtype.

        Returns
        -------
        numpy.dtype
            The dtype of running_mean (running_second has the same).
        """
        return self.running_mean.dtype

    @property
    def reduce_axes(self) -> tuple[int, ...]:
        """Give the axes BN reduces over: every axis of x but the channel axis.

        Returns
        -------
        tuple of int
            The non-negative axes, in increasing order.
        """
        axis = self.axis % self.x.ndim
        return tuple(i for i in range(self.x.ndim) if i != axis)

    @property
    def channels(self) -> int:
        """Give the number of channels C.

        Returns
        -------
        int
            The length of x's channel axis.
        """
        channels: int = self.x.shape[self.axis]
        return channels

    @property
    def m(self) -> int:
        """Give the number of values per channel.

        Returns
        -------
        int
            The size of x over the number of channels.
        """
        return math.prod(self.x.shape) // self.channels

    def bc(self, v: ArrayLike) -> NDArray[Any]:
        """Shape a per-channel vector to broadcast against x.

        Parameters
        ----------
        v : array_like
            One value per channel.

        Returns
        -------
        numpy.ndarray
            ``v`` reshaped to x's number of dimensions, of length 1 but on the channel axis.
        """
        shape = [1] * self.x.ndim
        shape[self.axis] = -1
        return np.asarray(v).reshape(shape)

    def channel_sum(self, v: ArrayLike) -> NDArray[np.float64]:
        """Sum an array of x's shape per channel, in float64.

        Parameters
        ----------
        v : array_like
            Values of x's shape.

        Returns
        -------
        numpy.ndarray
            The sums over every axis but the channel axis, shape (C,), float64.
        """
        sums: NDArray[np.float64] = np.asarray(v, dtype=np.float64).sum(axis=self.reduce_axes)
        return sums

    def batch_mean_var(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Compute the batch mean and biased variance per channel, two-pass in float64.

        Returns
        -------
        mean : numpy.ndarray
            The batch mean of each channel, float64.
        var : numpy.ndarray
            The biased batch variance of each channel, float64.
        """
        x = self.x.astype(np.float64)
        mean = x.mean(axis=self.reduce_axes)
        return mean, ((x - self.bc(mean)) ** 2).mean(axis=self.reduce_axes)

    def running(self) -> tuple[NDArray[Any], NDArray[Any]]:
        """Copy the running statistics, for an op to update in place.

        Returns
        -------
        running_mean, running_second : numpy.ndarray
            Fresh copies of the case's running statistics.
        """
        return self.running_mean.copy(), self.running_second.copy()

    def replace(self, **changes: Any) -> "Case":
        """Make a modified case; its recipe says it was modified.

        Parameters
        ----------
        **changes
            New values of attributes, by name.

        Returns
        -------
        Case
            A copy with ``changes``; its recipe is this case's followed by ", then ...
            replaced" (no longer a call that rebuilds it), or "" when this one has none.

        Raises
        ------
        TypeError
            If a name in ``changes`` is not an attribute of a case.
        """
        recipe = f"{self.recipe}, then {', '.join(sorted(changes))} replaced" if self.recipe else ""
        return dataclasses.replace(self, recipe=recipe, **changes)

    def as_renorm(self) -> "Case":
        """Make the case's running spread usable as BRN's running std (positive).

        Returns
        -------
        Case
            The case with ``running_second`` replaced by its absolute value plus 0.5.
        """
        return self.replace(running_second=np.abs(self.running_second) + 0.5)
