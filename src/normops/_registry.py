"""Backend registry: names -> lazily loaded backends, entry-point discovery, selection.

Selection order for an op call: the call's ``backend=``, then the innermost
``use_backend()`` of the current context, then ``set_backend()`` (initialised from the
``NORMOPS_BACKEND`` environment variable at import), then the highest-priority available
backend registered for the array's library (numpy arrays -> "cpu" when its extension
loads, else "reference"; cupy arrays -> "cupy"; torch tensors -> "torch"), and for the
arrays of any other array-API library the backends registered for ANY_LIBRARY
("array-api"). Entry-point backends are used by name only.

A backend is any object with the four kernels that ``Backend`` types (normops._interface
states the whole contract). The registry names what it loads: a backend without a
``name`` of its own (no such attribute, or None, as on the built-in backend classes)
gets the name it is registered under as its ``name`` attribute (see register_backend).
"""
import contextlib
import contextvars
import importlib
import importlib.metadata
import inspect
import os
import threading
import types
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, Optional, Protocol, TypeAlias, Union, cast

import numpy

from . import _arrays
from ._interface import KERNELS, array_namespace, device_of, missing_kernels
from ._typing import Array, ArrayLike

ENTRY_POINT_GROUP = "normops.backends"
ENV_VAR = "NORMOPS_BACKEND"
# array_module of a backend picked for the arrays of any array-API library that has no
# backend of its own
ANY_LIBRARY = "*"


class Backend(Protocol):
    """The four per-channel kernels that every backend provides.

    A backend is duck-typed: the registry takes any object that has these four
    methods, and this protocol only types it. Every array argument is 3-D, the
    canonical (outer, C, inner) view of x, float32 or float64; per-channel arguments
    and results are 1-D float64 arrays of length C.

    Notes
    -----
    normops._interface states the contract in full, with what a backend may add: the
    attributes ``xp`` (its array namespace, default numpy) or ``namespace(x)`` (for a
    backend of several array libraries, whose per-channel arrays are then that
    library's, on x's device, in float64, or float32 on a device without float64) and
    ``device`` (default "cpu"); the fused epilogue (``epilogue = True``, and the
    kernels' ``residual=``, ``activation=`` and ``y=``); ``host_bridge(x)``; whole ops,
    which replace the composition of the kernels; and plain ops.
    """

    def batch_stats(self, x: Array, /) -> tuple[int, Array, Array]:
        """Count, mean and M2 of each channel of ``x``.

        Parameters
        ----------
        x : Array
            The (outer, C, inner) input.

        Returns
        -------
        count : int
            The number of values per channel (outer * inner).
        mean : Array
            The mean of each channel, float64 of shape (C,).
        m2 : Array
            ``sum((x - mean) ** 2)`` of each channel, float64 of shape (C,), computed
            stably (never E[x^2] - E[x]^2 in working precision).
        """

    def scale_shift(self, x: Array, a: Array, b: Array, /) -> Array:
        """The per-channel affine map ``y = a[c] * x + b[c]``.

        Parameters
        ----------
        x : Array
            The (outer, C, inner) input.
        a : Array
            The scale of each channel, float64 of shape (C,).
        b : Array
            The shift of each channel, float64 of shape (C,).

        Returns
        -------
        Array
            ``y``, a new (outer, C, inner) array of x's dtype.
        """

    def grad_stats(self, dy: Array, x: Array, mean: Array, /) -> tuple[Array, Array]:
        """The per-channel sums of the backward: ``sum(dy)`` and ``sum(dy * (x - mean))``.

        Parameters
        ----------
        dy : Array
            The upstream gradient, of x's shape.
        x : Array
            The (outer, C, inner) input of the forward.
        mean : Array
            The mean of each channel, float64 of shape (C,).

        Returns
        -------
        sum_dy : Array
            ``sum(dy)`` of each channel, float64 of shape (C,).
        sum_dy_xmu : Array
            ``sum(dy * (x - mean))`` of each channel, float64 of shape (C,).
        """

    def grad_input(self, dy: Array, x: Array, p: Array, q: Array, s: Array, /) -> Array:
        """The input gradient ``dx = p[c] * dy + q[c] * x + s[c]``.

        Parameters
        ----------
        dy : Array
            The upstream gradient, of x's shape.
        x : Array
            The (outer, C, inner) input of the forward.
        p : Array
            The factor of dy in each channel, float64 of shape (C,).
        q : Array
            The factor of x in each channel, float64 of shape (C,).
        s : Array
            The constant term of each channel, float64 of shape (C,).

        Returns
        -------
        Array
            ``dx``, a new (outer, C, inner) array of x's dtype.
        """


#: What register_backend takes as a backend: an instance, a zero-argument callable
#: returning one (a backend class is such a callable), or a "module:attr" string
#: naming either.
BackendFactory: TypeAlias = Union[Backend, Callable[[], Backend], str]


class BackendError(Exception):
    """Base class of the registry's errors.

    Notes
    -----
    Its subclasses are also the built-in exceptions that fit them: an unknown name is a
    ``ValueError`` (``UnknownBackendError``), a backend that cannot run here a
    ``RuntimeError`` (``BackendUnavailableError``), an object that is not a backend a
    ``TypeError`` (``InvalidBackendError``).
    """


class UnknownBackendError(BackendError, ValueError):
    """No backend of that name is registered or discoverable.

    Notes
    -----
    Raised where a backend is selected by name (``backend=``, ``get_backend``,
    ``set_backend``, ``use_backend``, the ``NORMOPS_BACKEND`` environment variable) or
    unregistered; the message lists the known names.
    """


class BackendUnavailableError(BackendError, RuntimeError):
    """The backend is known but cannot run here. Factories raise it to say why.

    Notes
    -----
    The registry raises it for a backend whose factory raised it or ``ImportError`` (or
    failed in any other way), with the reason and the backend's install hint, and when
    no backend is available for an array's library.
    """


class InvalidBackendError(BackendError, TypeError):
    """The object offered as a backend lacks a required kernel.

    Notes
    -----
    Also raised when a factory returns a class rather than an instance, or when what
    was registered is neither a backend nor a callable returning one. An instance is
    checked when it is registered, a class or factory when it is first loaded.
    """


# (the lint of the source sees no __init__, and so no parameters, in a dataclass)
@dataclass(frozen=True)
class BackendInfo:  # numpydoc ignore=PR02
    """What ``backends()`` reports of one backend.

    Parameters
    ----------
    name : str
        The name it is registered under.
    available : bool
        Whether it loaded and can run here.
    reason : str or None
        Why it is unavailable; None when available.
    device : str or None
        The kind of device its arrays live on ("cpu", "cuda", "cpu, cuda", "any"), or
        None when it did not load.
    source : str
        Where it comes from: ``"built-in"``, ``"registered"`` (by ``register_backend``)
        or ``"entry point (<distribution>)"``.
    auto_for : str or None
        The array library it is picked for by default (its ``array_module``: "numpy",
        "torch", ``ANY_LIBRARY`` for any array-API library, ...), or None when it is
        used by name only.
    """

    name: str
    available: bool
    reason: Optional[str]  # why it is unavailable; None when available
    device: Optional[str]
    source: str  # "built-in", "registered" or "entry point (<distribution>)"
    auto_for: Optional[str]  # array library this backend is picked for by default


class _Entry:
    """One name of the table: what was registered under it, and once loaded, the
    backend or why it failed."""

    def __init__(self, name: str, factory: object, source: str, array_module: Optional[str],
                 priority: Optional[int], install_hint: Optional[str]) -> None:
        self.name = name
        self.factory = factory   # a BackendFactory, or an entry point
        self.source = source
        self.array_module = array_module
        self.priority = priority
        self.install_hint = install_hint
        self.backend: Optional[Backend] = None
        # (exception class, message) once loading failed
        self.failure: Optional[tuple[type[BackendError], str]] = None
        self.lock = threading.Lock()  # a slow factory blocks only users of this entry

    @property
    def loaded(self) -> bool:
        return self.backend is not None or self.failure is not None


_lock = threading.RLock()  # guards the table below; never held while a factory runs
_entries: dict[str, _Entry] = {}
_discovered = False
_default: Optional[str] = os.environ.get(ENV_VAR) or None
_default_origin: Optional[str] = f"the {ENV_VAR} environment variable" if _default else None
_context: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("normops_backend",
                                                                         default=None)
# backend per (backend=, use_backend(), set_backend(), array type), so that an op call
# need not look the name up under the lock or re-rank candidates; any change to the
# table or the default bumps the generation and empties it
_choice_cache: dict[tuple[Optional[str], Optional[str], Optional[str], type[Any]], Backend] = {}
_CHOICE_CACHE_SIZE = 256
_generation = 0


def _table_changed() -> None:
    """Call with _lock held after _entries or the default changed."""
    global _generation
    _generation += 1
    _choice_cache.clear()


def _check_kernels(name: str, obj: object) -> None:
    """An InvalidBackendError unless ``obj`` is an instance with the four kernels."""
    if inspect.isclass(obj):
        raise InvalidBackendError(f"backend {name!r} is refused: its factory returned the class "
                                  f"{obj.__qualname__}, not an instance")
    missing = missing_kernels(obj)
    if missing:
        raise InvalidBackendError(
            f"backend {name!r} is refused: it lacks the required kernel(s) "
            f"{', '.join(missing)} (every backend provides {', '.join(KERNELS)})"
        )


def _looks_like_backend(obj: object) -> bool:
    """An instance offering any kernel is taken as a backend (classes are factories)."""
    return not inspect.isclass(obj) and any(hasattr(obj, k) for k in KERNELS)


def _import_target(spec: str) -> object:
    """The object a ``"module:attr"`` string names (the module itself without attr)."""
    module, _, attr = spec.partition(":")
    obj: object = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def _instantiate(name: str, target: object) -> Backend:
    """Turn what was registered (a 'module:attr' string, an entry point, an instance or
    a zero-argument factory such as a class) into a checked backend instance, named
    ``name`` unless it has a name of its own (see _give_name)."""
    if isinstance(target, str):
        target = _import_target(target)
    elif isinstance(target, importlib.metadata.EntryPoint):
        target = target.load()
    if _looks_like_backend(target):
        backend = target
    elif callable(target):
        backend = target()
    else:
        raise InvalidBackendError(
            f"backend {name!r} is refused: {target!r} is neither a backend nor a callable returning one"
        )
    _check_kernels(name, backend)
    _give_name(backend, name)
    return cast(Backend, backend)


def _give_name(backend: object, name: str) -> None:
    """Set the ``name`` attribute of a backend being loaded to the name it is registered
    under, unless it has a name (not None) of its own. A module (a "module" string with
    no attr names one) is left alone, and so is an object that takes no attributes
    (slots, a frozen dataclass): a name is a courtesy, never a reason to refuse it."""
    if isinstance(backend, types.ModuleType):
        return
    try:
        if getattr(backend, "name", None) is None:
            setattr(backend, "name", name)
    except Exception:   # its own __getattr__ or __setattr__ refused: it stays unnamed
        pass


def register_backend(name: str, factory: BackendFactory, *, array_module: Optional[str] = None,
                     priority: Optional[int] = None, install_hint: Optional[str] = None,
                     replace: bool = False) -> None:
    """Register a backend under ``name``.

    Parameters
    ----------
    name : str
        The name that selects it: ``backend=``, ``get_backend``, ``set_backend``,
        ``use_backend`` and the ``NORMOPS_BACKEND`` environment variable take it.
    factory : Backend, callable or str
        A backend instance, or a zero-argument callable returning one (a backend class
        is such a callable), or a ``"module:attr"`` string naming either (imported on
        first use). An instance is checked for the four kernels at once, the others
        when first loaded. A factory raises ImportError or BackendUnavailableError to
        say the backend cannot run here; ``install_hint`` then tells users what to do.
    array_module : str, optional
        The top-level module name of an array library ("numpy", "cupy", ...). With an
        int ``priority``, it makes the backend a candidate for automatic selection on
        that library's arrays; ``ANY_LIBRARY`` ("*") on the arrays of any array-API
        library without one.
    priority : int, optional
        Given with ``array_module``: the available candidate of highest priority wins.
    install_hint : str, optional
        What to do to make the backend available; the error of an unavailable backend
        ends with it ("To use it: ...").
    replace : bool, default False
        Replace a backend already registered in code under ``name``.

    Raises
    ------
    TypeError
        If ``name`` is not a non-empty str, ``array_module`` and ``priority`` are not
        given together, ``array_module`` is not a str, or ``priority`` is not an int
        (a bool is refused).
    InvalidBackendError
        If ``factory`` is a backend instance that lacks one of the four kernels.
    ValueError
        If a backend registered in code (or built in) already has ``name`` and
        ``replace`` is False.

    Warns
    -----
    RuntimeWarning
        If ``name`` shadows a backend of that name found through an entry point (unless
        ``replace`` is True).

    Notes
    -----
    A name registered in code takes precedence over an entry point of the same name.

    The registry loads the backend when it is first used or listed (``backends()``).
    A backend without a ``name`` of its own (no such attribute, or None) then gets
    ``name`` as its ``name`` attribute, so that ``get_backend(name).name == name``;
    a name of its own is never replaced, an object registered under several names
    keeps the first it was loaded under, and a module, or an object that takes no
    attributes, stays unnamed (``backends()`` lists every backend by name).
    """
    _register(name, factory, array_module=array_module, priority=priority,
              install_hint=install_hint, replace=replace, source="registered")


def _register(name: str, factory: object, *, array_module: Optional[str] = None,
              priority: Optional[int] = None, install_hint: Optional[str] = None,
              replace: bool = False, source: str) -> None:
    """register_backend with the ``source`` that backends() lists: "registered", or
    "built-in" for normops' own (_backends.register_builtins)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a backend name must be a non-empty str, got {name!r}")
    if (array_module is None) != (priority is None):
        raise TypeError("array_module and priority are given together or not at all")
    if array_module is not None and not isinstance(array_module, str):
        raise TypeError(f"array_module is the array library's top-level module name, such as "
                        f"'numpy', got {array_module!r}")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise TypeError(f"priority must be an int, got {priority!r}")
    if not isinstance(factory, str) and _looks_like_backend(factory):
        _check_kernels(name, factory)
    with _lock:
        taken = _entries.get(name)
        if taken is not None and not replace:
            if not taken.source.startswith("entry point"):
                raise ValueError(f"a backend named {name!r} is already registered (pass replace=True)")
            _warn_shadowed(name, taken.source)
        _entries[name] = _Entry(name, factory, source, array_module, priority, install_hint)
        _table_changed()


def unregister_backend(name: str) -> None:
    """Remove a backend from the registry.

    Parameters
    ----------
    name : str
        The name it is registered under (in code, built in, or found through an entry
        point).

    Raises
    ------
    UnknownBackendError
        If no backend of that name is registered or discoverable.
    TypeError
        If ``name`` is not a str.

    Notes
    -----
    If it was the default (``set_backend``, ``NORMOPS_BACKEND``), the default falls
    back to automatic selection by array type.
    """
    global _default, _default_origin
    with _lock:
        _entry(name)
        del _entries[name]
        _table_changed()
        if _default == name:
            _default = _default_origin = None


def _warn_shadowed(name: str, source: str) -> None:
    # stacklevel: the caller of register_backend (through _register), or of backends()
    # (through _discover)
    warnings.warn(f"backend {name!r} from the {source} is shadowed by one registered in code",
                  RuntimeWarning, stacklevel=4)


def _discover() -> None:
    """Add the entry points of ENTRY_POINT_GROUP to the table, once; a name registered
    in code before keeps its backend (with a warning)."""
    global _discovered
    with _lock:
        if _discovered:
            return
        found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        for ep in found:
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else ep.value.partition(":")[0]
            source = f"entry point ({dist_name})"
            if ep.name in _entries:
                _warn_shadowed(ep.name, source)
                continue
            _entries[ep.name] = _Entry(ep.name, ep, source, None, None,
                                       f"reinstall the package that provides it ({dist_name})")
        _discovered = True


def _entry(name: str) -> _Entry:
    """The table's entry for ``name`` (discovering entry points if it is not there)."""
    if not isinstance(name, str):
        raise TypeError(f"a backend is selected by its name (a str), got {name!r}")
    with _lock:
        if name not in _entries:
            _discover()
        if name not in _entries:
            known = ", ".join(sorted(_entries)) or "none"
            raise UnknownBackendError(f"unknown backend {name!r}; known backends: {known}")
        return _entries[name]


def _load(entry: _Entry) -> _Entry:
    """``entry``, loaded: its backend, or the failure that says why it has none."""
    if entry.loaded:  # the fast path of every op call: no lock
        return entry
    with entry.lock:
        if not entry.loaded:
            try:
                entry.backend = _instantiate(entry.name, entry.factory)
            except InvalidBackendError as exc:
                entry.failure = (InvalidBackendError, str(exc))
            except (ImportError, BackendUnavailableError) as exc:
                entry.failure = (BackendUnavailableError, str(exc) or type(exc).__name__)
            except Exception as exc:  # a broken plugin must not break listing the others
                entry.failure = (BackendUnavailableError, f"loading it raised {type(exc).__name__}: {exc}")
    return entry


def load_backend(name: str) -> Backend:
    """The backend object registered as ``name``, loaded on first use.

    Parameters
    ----------
    name : str
        A registered or discoverable backend name.

    Returns
    -------
    Backend
        The backend object (the same object on every call).

    Raises
    ------
    UnknownBackendError
        If no backend of that name is registered or discoverable.
    BackendUnavailableError
        If it cannot run here: its factory raised ImportError or
        BackendUnavailableError, or failed otherwise. The message gives the reason and
        the install hint.
    InvalidBackendError
        If what it loads is not a backend (a kernel is missing, or its factory returned
        a class).
    TypeError
        If ``name`` is not a str.
    """
    entry = _load(_entry(name))
    if entry.failure is not None:
        cls, reason = entry.failure
        if cls is InvalidBackendError:
            raise InvalidBackendError(reason)
        hint = f" To use it: {entry.install_hint}." if entry.install_hint else ""
        raise BackendUnavailableError(f"backend {name!r} is not available: {reason}.{hint}")
    return cast(Backend, entry.backend)   # loaded without failure: not None


def backends() -> list[BackendInfo]:
    """Every known backend, registered or discoverable, the default one first.

    Returns
    -------
    list of BackendInfo
        One per backend: first the one an op call on a NumPy array would use now
        (``get_backend()``'s), then the others in the order they were registered
        (normops' own first). When that one cannot be resolved (an unknown or
        unavailable backend was made the default, or none for NumPy arrays can run),
        all in registration order.

    Notes
    -----
    Each backend is loaded to learn whether it can run here: a backend that fails to
    load is listed as unavailable with the reason, and listing never raises for it.
    """
    _discover()
    with _lock:
        entries = list(_entries.values())
    infos = []
    for entry in entries:
        _load(entry)
        infos.append(BackendInfo(
            name=entry.name,
            available=entry.failure is None,
            reason=None if entry.failure is None else entry.failure[1],
            device=device_of(entry.backend) if entry.backend is not None else None,
            source=entry.source,
            auto_for=entry.array_module,
        ))
    try:
        default = selected_name()
    except BackendError:   # the default is unknown or cannot run: no first one
        return infos
    return sorted(infos, key=lambda info: info.name != default)   # stable: the rest in order


def backend_library(name: str) -> Optional[str]:
    """The array library that the backend ``name`` is picked for automatically.

    Parameters
    ----------
    name : str
        A registered or discoverable backend name.

    Returns
    -------
    str or None
        Its ``array_module`` ("numpy", "torch", ANY_LIBRARY, ...), or None for a backend
        used by name only.

    Raises
    ------
    UnknownBackendError
        If no backend of that name is registered or discoverable.
    TypeError
        If ``name`` is not a str.
    """
    return _entry(name).array_module


def set_backend(name: Optional[str]) -> None:
    """Make ``name`` the process-wide default backend.

    Parameters
    ----------
    name : str or None
        The backend that op calls use from now on in every thread, unless a call's
        ``backend=`` or a ``use_backend`` block says otherwise; None goes back to
        automatic selection by array type.

    Raises
    ------
    UnknownBackendError
        If no backend of that name is registered or discoverable.
    BackendUnavailableError
        If it cannot run here (the message says why, and what to install).
    InvalidBackendError
        If what it loads is not a backend.
    TypeError
        If ``name`` is neither a str nor None.

    Notes
    -----
    The backend is loaded first, so a default that cannot run is refused here rather
    than in the next op call. At import, the default is the ``NORMOPS_BACKEND``
    environment variable's (not checked until first used).
    """
    global _default, _default_origin
    if name is not None:
        load_backend(name)
    with _lock:
        _default, _default_origin = name, (None if name is None else "set_backend()")
        _table_changed()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """Use ``name`` for op calls in this context (thread / task) until the block ends.

    Parameters
    ----------
    name : str
        The backend that op calls in the block use, unless a call's ``backend=`` says
        otherwise. Blocks nest: the innermost wins.

    Yields
    ------
    Backend
        The backend object.

    Raises
    ------
    UnknownBackendError
        If no backend of that name is registered or discoverable.
    BackendUnavailableError
        If it cannot run here (the message says why, and what to install).
    InvalidBackendError
        If what it loads is not a backend.
    TypeError
        If ``name`` is not a str.

    Notes
    -----
    The choice lives in a ``contextvars`` variable: other threads and async tasks do
    not see it.
    """
    backend = load_backend(name)
    token = _context.set(name)
    try:
        yield backend
    finally:
        _context.reset(token)


def _auto_modules() -> set[str]:
    with _lock:
        return {e.array_module for e in _entries.values() if e.array_module is not None}


def _library_of(x: object, among: Optional[Collection[str]] = None) -> Optional[str]:
    """The top-level module defining x's type (or its nearest base class in ``among``)."""
    roots = [cls.__module__.partition(".")[0] for cls in type(x).__mro__]
    if among is not None:
        roots = [root for root in roots if root in among]
    return roots[0] if roots else None


def array_module_of(x: object) -> str:
    """The array library of ``x`` among those with automatically selected backends.

    Parameters
    ----------
    x : object
        An array, or any other value (a nested list, ...).

    Returns
    -------
    str
        The top-level module name of the library of x's type (or of its nearest base
        class) when a backend is registered for it; ANY_LIBRARY for the array of another
        array-API library; "numpy" else.
    """
    found = _library_of(x, _auto_modules())
    if found is not None:
        return found
    if not isinstance(x, numpy.ndarray) and _arrays.namespace_or_none(x) is not None:
        return ANY_LIBRARY
    return "numpy"


def _auto_backend(module: str) -> _Entry:
    """The loaded entry of the highest-priority available backend for ``module``."""
    with _lock:
        candidates = sorted(
            (e for e in _entries.values() if e.array_module == module),
            key=lambda e: -cast(int, e.priority),   # given with array_module
        )
    for entry in candidates:
        if _load(entry).failure is None:
            return entry
    reasons = "; ".join(f"{e.name}: {e.failure[1]}" for e in candidates
                        if e.failure is not None) or "none is registered"
    what = "array-API" if module == ANY_LIBRARY else module
    raise BackendUnavailableError(f"no backend is available for {what} arrays ({reasons})")


def _selected(requested: Optional[str], x: object) -> tuple[Backend, str]:
    """(backend, name) for an op call on ``x`` with ``requested`` from backend=."""
    name = requested if requested is not None else _context.get()
    if name is not None:
        return load_backend(name), name
    with _lock:
        name, origin = _default, _default_origin
    if name is not None:
        try:
            return load_backend(name), name
        except BackendError as exc:
            raise type(exc)(f"{exc} ({name!r} was made the default by {origin})") from None
    entry = _auto_backend(array_module_of(x) if x is not None else "numpy")
    return cast(Backend, entry.backend), entry.name   # loaded without failure: not None


def selected_name() -> str:
    """The name of the backend that an op call on a NumPy array would use now.

    Returns
    -------
    str
        The name of ``get_backend()``'s backend: the innermost ``use_backend`` block's,
        else the default (``set_backend``, ``NORMOPS_BACKEND``), else the best available
        backend for NumPy arrays.

    Raises
    ------
    BackendError
        As ``get_backend()``: an unknown or unavailable backend is the default or in
        use (UnknownBackendError, BackendUnavailableError, InvalidBackendError), or no
        backend for NumPy arrays is available.
    """
    return _selected(None, None)[1]


def get_backend(name: Optional[str] = None) -> Backend:
    """The backend object for ``name``, or the one an op call on a NumPy array would use.

    Parameters
    ----------
    name : str, optional
        A registered or discoverable backend name. None (the default): the backend an
        op call on a NumPy array would use now, in the selection order (the innermost
        ``use_backend`` block, then ``set_backend`` or ``NORMOPS_BACKEND``, then the
        best available backend for NumPy arrays).

    Returns
    -------
    Backend
        The backend object. Its ``name`` attribute is the name it is registered under
        (see ``register_backend`` for a backend that has a name of its own), and the
        built-in backends have a readable ``repr``.

    Raises
    ------
    UnknownBackendError
        If no backend of that name is registered or discoverable (or an unknown one is
        the default, when ``name`` is None).
    BackendUnavailableError
        If it cannot run here; the message says why, what to install and, for a
        default, who made it the default. With ``name`` None, also when no backend for
        NumPy arrays is available.
    InvalidBackendError
        If what it loads is not a backend.
    TypeError
        If ``name`` is neither a str nor None.
    """
    return _selected(name, None)[0]


def _check_library(backend: Backend, name: str, x: object) -> None:
    """A TypeError unless ``backend`` takes arrays of x's library."""
    resolve = getattr(backend, "namespace", None)
    if callable(resolve):
        try:
            resolve(x)
        except TypeError as exc:
            raise TypeError(f"backend {name!r} cannot take x: {exc}") from None
        return
    xp = array_namespace(backend)
    foreign = _library_of(x) not in ("builtins", xp.__name__.partition(".")[0])
    if not isinstance(x, xp.ndarray) and foreign and hasattr(x, "shape") and hasattr(x, "dtype"):
        hint = ""
        if _arrays.namespace_or_none(x) is None and not _arrays.has_compat():
            hint = f" (normops runs other array libraries through array-api-compat: {_arrays.COMPAT_INSTALL})"
        raise TypeError(
            f"backend {name!r} works on {xp.__name__} arrays, got a "
            f"{type(x).__module__}.{type(x).__qualname__}; select a backend for it or convert "
            f"the array{hint}"
        )


def backend_for(x: ArrayLike, requested: Optional[str] = None) -> Backend:
    """Resolve the backend for an op call on ``x`` and check that it takes x's array type.

    Parameters
    ----------
    x : ArrayLike
        The op's input (an array of any library, or a nested list of numbers).
    requested : str, optional
        The call's ``backend=``; None: the selection order (``use_backend``, the
        default, then the best available backend for x's array library).

    Returns
    -------
    Backend
        The backend object.

    Raises
    ------
    BackendError
        As ``get_backend``: the backend is unknown or unavailable, or no backend is
        available for x's library (UnknownBackendError, BackendUnavailableError,
        InvalidBackendError).
    TypeError
        If ``requested`` is neither a str nor None, or the backend does not take arrays
        of x's library.

    Notes
    -----
    The choice is cached per (``requested``, ``use_backend`` block, default, type of
    x) until the table or the default changes.
    """
    generation = _generation  # read before the key: a change after it refuses the store
    key = (requested, _context.get(), _default, type(x))
    cacheable = requested is None or isinstance(requested, str)
    if cacheable:
        cached = _choice_cache.get(key)
        if cached is not None:
            return cached
    backend, name = _selected(requested, x)
    _check_library(backend, name, x)
    if cacheable:
        with _lock:
            if generation == _generation:
                if len(_choice_cache) >= _CHOICE_CACHE_SIZE:  # array types made on the fly
                    _choice_cache.clear()
                _choice_cache[key] = backend
    return backend
