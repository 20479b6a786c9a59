"""What the kit checks: an implementation of BN (and optionally BRN) behind normops's
signatures, the same on the arrays of another library, and one forward + backward step
through it."""
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, TypeAlias

import numpy as np
from numpy.typing import NDArray

import normops

from .._halves import grad_dtype
from .._registry import ANY_LIBRARY, backend_library
from .._typing import Array, DTypeLike
from ._cases import REGIMES, Case
from ._compare import assert_close, running_scales, term_scales
from ._dtypes import ALL, FULL
from ._libraries import ArrayLibrary, array_library

#: A forward op, ``(x, gamma, beta, running_mean, running_second, **options) -> (y, saved)``.
Forward: TypeAlias = Callable[..., tuple[Array, Any]]
#: A backward op, ``(dy, x, saved, gamma, **options) -> (dx, dgamma, dbeta[, dz])``.
Backward: TypeAlias = Callable[..., Sequence[Array]]
#: One step's results by name (see ``bn_step`` and ``brn_step``).
Step: TypeAlias = dict[str, Any]


# (the lint of the source sees no __init__, and so no parameters, in a dataclass)
@dataclass(frozen=True)
class Implementation:  # numpydoc ignore=PR02
    """An implementation under test, given as callables with normops's signatures.

    ``batch_norm(x, gamma, beta, running_mean, running_var, *, training, momentum, eps,
    axis, convention) -> (y, saved)``, updating the running statistics in place when
    training and they are not None; ``batch_norm_backward(dy, x, saved, gamma, *, axis)
    -> (dx, dgamma, dbeta)``; and optionally ``batch_renorm(x, gamma, beta, running_mean,
    running_std, *, training, rmax, dmax, momentum, eps, axis) -> (y, saved)`` with
    ``batch_renorm_backward`` (the BRN properties are "n/a" without them). The
    constructor takes the attributes below as its arguments, in this order.

    Parameters
    ----------
    name : str
        The implementation's name, in reports.
    batch_norm : callable
        The BN forward op.
    batch_norm_backward : callable
        The BN backward op.
    batch_renorm : callable or None
        The BRN forward op, or None (the default).
    batch_renorm_backward : callable or None
        The BRN backward op, or None (the default).
    conventions : tuple of str
        The running-variance conventions ``convention`` may take ("pytorch": unbiased,
        "keras": biased); both by default.
    dtypes : tuple of dtype-like
        The dtypes of x the kit draws (float32 and float64 by default;
        ``strategies.ALL_DTYPES`` adds float16, and bfloat16 where ml_dtypes imports).
    regimes : tuple of str
        The value regimes the kit draws (``REGIMES`` by default; ``EXTREME_REGIMES`` are
        asked for).
    fused : bool
        The ops take normops's fused epilogue, ``residual=`` and ``activation=`` ("relu")
        on the forward ops, ``y=`` on the backward ops, which then return dz after a
        residual (the fused properties are "n/a" without it); False by default.

    Notes
    -----
    Every result is a NumPy array: y and dx of x's dtype, dgamma and dbeta of gamma's
    (x's when gamma is None, float32 for float16/bfloat16 x; they are then the gradients
    at gamma = 1, beta = 0), running statistics updated in their own dtype. For half x,
    gamma, beta and the running statistics are each float32 or x's dtype. ``saved`` is
    whatever the forward returns: the kit only hands it to the backward. An
    implementation on the arrays of another library is checked through ``on_library``.
    """

    name: str
    batch_norm: Forward
    batch_norm_backward: Backward
    batch_renorm: Forward | None = None
    batch_renorm_backward: Backward | None = None
    conventions: tuple[str, ...] = ("pytorch", "keras")
    dtypes: tuple[DTypeLike, ...] = FULL
    regimes: tuple[str, ...] = REGIMES
    fused: bool = False

    @property
    def renorm(self) -> bool:
        """Say whether the implementation has BRN.

        Returns
        -------
        bool
            True when both ``batch_renorm`` and ``batch_renorm_backward`` are given.
        """
        return self.batch_renorm is not None and self.batch_renorm_backward is not None


def on_library(impl: Implementation, library: ArrayLibrary) -> Implementation:
    """Run an implementation that takes the arrays of another library.

    Its arguments are converted from NumPy, its results checked (arrays of ``library``,
    on its device, of their dtypes) and converted back; running statistics updated in
    place are written back into the kit's arrays.

    Parameters
    ----------
    impl : Implementation
        An implementation taking (and returning) arrays of ``library``.
    library : ArrayLibrary
        The library and device (see ``array_library``).

    Returns
    -------
    Implementation
        One the kit can run, named "<impl.name> (<library>)", drawing the dtypes of
        ``impl.dtypes`` that ``library`` has; ``impl`` itself for NumPy. Its ops raise
        AssertionError where a result is not an array of ``library`` of its dtype on its
        device (see ``ArrayLibrary.check``).
    """
    if library.name == "numpy":
        return impl

    def forward(op: Forward, x: NDArray[Any], gamma: NDArray[Any] | None,
                beta: NDArray[Any] | None, running_mean: NDArray[Any] | None,
                running_second: NDArray[Any] | None, **options: Any) -> tuple[NDArray[Any], Any]:
        """Run a forward op on the library's arrays.

        Parameters
        ----------
        op : callable
            The forward op of ``impl``.
        x, gamma, beta, running_mean, running_second : numpy.ndarray or None
            The NumPy arguments; the running statistics receive the op's in-place update.
        **options
            The op's keyword arguments (a residual converted too).

        Returns
        -------
        y : numpy.ndarray
            The op's y, converted.
        saved : object
            The op's saved state, as it is.
        """
        given = (running_mean, running_second)
        inputs = [None if a is None else library.to_library(a) for a in (x, gamma, beta) + given]
        if options.get("residual") is not None:
            options["residual"] = library.to_library(options["residual"])
        y, saved = op(*inputs, **options)
        library.check(y, x.dtype, "y")
        for kept, used, name in zip(given, inputs[3:], ("running_mean", "running_second")):
            if kept is not None:
                library.check(used, kept.dtype, name)
                kept[...] = library.to_numpy(used)
        return library.to_numpy(y), saved

    def backward(op: Backward, dy: NDArray[Any], x: NDArray[Any], saved: Any,
                 gamma: NDArray[Any] | None, **options: Any) -> tuple[NDArray[Any], ...]:
        """Run a backward op on the library's arrays.

        Parameters
        ----------
        op : callable
            The backward op of ``impl``.
        dy, x : numpy.ndarray
            The NumPy arguments.
        saved : object
            The forward's saved state.
        gamma : numpy.ndarray or None
            The NumPy gamma.
        **options
            The op's keyword arguments (the fused forward's y converted too).

        Returns
        -------
        tuple of numpy.ndarray
            The op's gradients, converted.
        """
        inputs = [None if a is None else library.to_library(a) for a in (dy, x, gamma)]
        if options.get("y") is not None:   # the fused forward's output, the mask source
            options["y"] = library.to_library(options["y"])
        grads = op(inputs[0], inputs[1], saved, inputs[2], **options)
        wanted = grad_dtype(x.dtype, gamma)
        # dz (after a fused forward with a residual) has x's dtype
        for arr, name, dtype in zip(grads, ("dx", "dgamma", "dbeta", "dz"),
                                    (x.dtype, wanted, wanted, x.dtype)):
            library.check(arr, dtype, name)
        return tuple(library.to_numpy(arr) for arr in grads)

    def wrap(op: Callable[..., Any] | None, adapter: Callable[..., Any]) -> Any:
        """Bind an op to its adapter.

        Parameters
        ----------
        op : callable or None
            An op of ``impl``.
        adapter : callable
            ``forward`` or ``backward``.

        Returns
        -------
        callable or None
            ``adapter`` with ``op`` as its first argument; None where ``op`` is None.
        """
        return None if op is None else functools.partial(adapter, op)

    return dataclasses.replace(
        impl, name=f"{impl.name} ({library})",
        dtypes=tuple(d for d in map(np.dtype, impl.dtypes) if d in library.dtypes),
        batch_norm=wrap(impl.batch_norm, forward),
        batch_norm_backward=wrap(impl.batch_norm_backward, backward),
        batch_renorm=wrap(impl.batch_renorm, forward),
        batch_renorm_backward=wrap(impl.batch_renorm_backward, backward))


# the library the kit hands a backend's arrays in, by the library it is picked for
DEFAULT_LIBRARY: dict[str | None, str] = {ANY_LIBRARY: "array_api_strict", "torch": "torch",
                                          "cupy": "cupy"}


def backend_implementation(name: str, library: str | None = None,
                           device: Any = None) -> Implementation:
    """Make the Implementation of a registered normops backend.

    It runs the public normops ops with ``backend=name``. Every normops backend takes
    float16 and bfloat16 x: the kit draws them wherever the library has them (not
    array_api_strict's arrays).

    Parameters
    ----------
    name : str
        The registered backend's name.
    library : str, optional
        The array library the ops are run on (one of ``LIBRARIES``). By default, the
        library the backend is picked for (numpy for a backend of its own;
        array_api_strict for "array-api").
    device : object, optional
        The device the arrays are on (see ``array_library``); the library's default when
        None.

    Returns
    -------
    Implementation
        BN and BRN through the public ops on backend ``name``, with the fused epilogue,
        on arrays of ``library`` on ``device``.

    Raises
    ------
    normops.UnknownBackendError
        If no backend ``name`` is registered.
    normops.BackendUnavailableError
        If the backend is registered but cannot run here.
    ValueError
        If ``library`` is not one of ``LIBRARIES``, or the device is not one it has.
    ImportError
        If the library is not installed; the message names what to install.
    """
    normops.get_backend(name)   # unknown or unavailable: say so now, not in every property
    if library is None:
        library = DEFAULT_LIBRARY.get(backend_library(name), "numpy")
    impl = Implementation(
        name, partial(normops.batch_norm, backend=name),
        partial(normops.batch_norm_backward, backend=name),
        partial(normops.batch_renorm, backend=name),
        partial(normops.batch_renorm_backward, backend=name), dtypes=ALL, fused=True)
    return on_library(impl, array_library(library, device))


REFERENCE = backend_implementation("reference")


def bn_step(impl: Implementation, case: Case, *, training: bool = True,
            convention: str = "pytorch", with_running: bool = True,
            running: Sequence[NDArray[Any]] | None = None) -> Step:
    """Run batch_norm, then batch_norm_backward, on a case.

    Parameters
    ----------
    impl : Implementation
        The implementation.
    case : Case
        The arguments (dy the upstream gradient).
    training : bool, optional
        Training (batch statistics) or eval mode (running statistics).
    convention : str, optional
        The running-variance convention, "pytorch" or "keras".
    with_running : bool, optional
        Pass running statistics (fresh copies of the case's) unless ``running`` is given;
        False passes None for both.
    running : tuple of numpy.ndarray, optional
        (running_mean, running_var): the arrays to update in place.

    Returns
    -------
    dict
        "y", "running_mean", "running_var" (the arrays passed, after the step: None when
        none were), "dx", "dgamma", "dbeta" and "training", by name.
    """
    rm, rv = running or (case.running() if with_running else (None, None))
    y, saved = impl.batch_norm(case.x, case.gamma, case.beta, rm, rv, training=training,
                               momentum=case.momentum, eps=case.eps, axis=case.axis,
                               convention=convention)
    dx, dgamma, dbeta = impl.batch_norm_backward(case.dy, case.x, saved, case.gamma,
                                                 axis=case.axis)
    return dict(y=y, running_mean=rm, running_var=rv, dx=dx, dgamma=dgamma, dbeta=dbeta,
                training=training)


def brn_step(impl: Implementation, case: Case, *, training: bool = True, rmax: float = 3.0,
             dmax: float = 5.0,
             running: Sequence[NDArray[Any]] | None = None) -> Step:
    """Run batch_renorm, then batch_renorm_backward, on a case.

    Parameters
    ----------
    impl : Implementation
        The implementation (it must have BRN).
    case : Case
        The arguments; its ``running_second`` is the running std (see ``Case.as_renorm``).
    training : bool, optional
        Training (batch statistics, r and d) or eval mode (running statistics).
    rmax, dmax : float, optional
        BRN's clips of r and d.
    running : tuple of numpy.ndarray, optional
        (running_mean, running_std): the arrays to update in place (default: fresh
        copies of the case's).

    Returns
    -------
    dict
        "y", "running_mean", "running_std" (the arrays passed, after the step), "dx",
        "dgamma", "dbeta", "training", "rmax" and "dmax", by name.

    Raises
    ------
    TypeError
        If ``impl`` has no batch_renorm or batch_renorm_backward (they are None).
    """
    rm, rs = running or case.running()
    if impl.batch_renorm is None or impl.batch_renorm_backward is None:
        raise TypeError(f"{impl.name} has no batch_renorm")
    y, saved = impl.batch_renorm(case.x, case.gamma, case.beta, rm, rs, training=training,
                                 rmax=rmax, dmax=dmax, momentum=case.momentum, eps=case.eps,
                                 axis=case.axis)
    dx, dgamma, dbeta = impl.batch_renorm_backward(case.dy, case.x, saved, case.gamma,
                                                   axis=case.axis)
    return dict(y=y, running_mean=rm, running_std=rs, dx=dx, dgamma=dgamma, dbeta=dbeta,
                training=training, rmax=rmax, dmax=dmax)


def step_scales(case: Case, step: Mapping[str, Any]) -> dict[str, NDArray[Any]]:
    """Give the term scales of a step's results (see ``term_scales``).

    They are computed from the statistics the reference normalizes with in that step.

    Parameters
    ----------
    case : Case
        The step's arguments.
    step : mapping
        The step (see ``bn_step`` and ``brn_step``): its "training" and, for BRN, its
        "running_std", "rmax" and "dmax".

    Returns
    -------
    dict of str to numpy.ndarray
        The scales of "y", "dx", "dgamma", "dbeta" and, in training, of the running
        statistics (see ``running_scales``).
    """
    running = case.running()  # the reference must not update the step's arrays
    if "running_std" in step:
        assert REFERENCE.batch_renorm is not None   # the reference has BRN
        _, saved = REFERENCE.batch_renorm(
            case.x, case.gamma, case.beta, *running, training=step["training"],
            rmax=step["rmax"], dmax=step["dmax"], momentum=0.0, eps=case.eps, axis=case.axis)
    else:
        _, saved = REFERENCE.batch_norm(case.x, case.gamma, case.beta, *running,
                                        training=step["training"], momentum=0.0,
                                        eps=case.eps, axis=case.axis, convention="pytorch")
    scales = term_scales(case, saved.mean, saved.invstd, getattr(saved, "r", None),
                         getattr(saved, "d", None), training=step["training"])
    return {**scales, **running_scales(case)} if step["training"] else scales


#: The arrays of a step that ``assert_steps_close`` compares by default.
ARRAYS: tuple[str, ...] = ("y", "running_mean", "running_var", "running_std", "dx", "dgamma",
                           "dbeta")


def assert_steps_close(actual: Mapping[str, Any], expected: Mapping[str, Any], case: Case,
                       keys: Sequence[str] = ARRAYS) -> None:
    """Compare two steps' arrays, each against the scale of its terms in a case.

    Parameters
    ----------
    actual : mapping
        The step under test (see ``bn_step`` and ``brn_step``).
    expected : mapping
        The step it should equal; it sets the term scales (see ``step_scales``).
    case : Case
        The steps' arguments.
    keys : sequence of str, optional
        The arrays to compare: those of ``ARRAYS`` by default. A key that ``expected``
        lacks or holds None is skipped.

    Raises
    ------
    AssertionError
        If an array of ``actual`` is not a NumPy array of the expected array's dtype, or
        is not close to it (see ``assert_close``); the message names the array.
    """
    scales = step_scales(case, expected)
    for key in keys:
        if expected.get(key) is not None:
            want = np.asarray(expected[key])
            got = actual[key]
            if not isinstance(got, np.ndarray) or got.dtype != want.dtype:
                what = f"dtype {got.dtype}" if isinstance(got, np.ndarray) else f"a {type(got).__name__}"
                raise AssertionError(f"{key}: {what}, expected an array of {want.dtype}")
            assert_close(got, want, case.x.dtype, scale=scales.get(key), what=key)
