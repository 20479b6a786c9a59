"""Backend registry: names -> lazily loaded backends, entry-point discovery, selection.

Selection order for an op call: the call's ``backend=``, then the innermost
``use_backend()`` of the current context, then ``set_backend()`` (initialised from the
``NORMOPS_BACKEND`` environment variable at import), then the highest-priority available
backend registered for the array's library (numpy arrays -> "cpu" when its extension
loads, else "reference"; cupy arrays -> "cupy"; torch tensors -> "torch"), and for the
arrays of any other array-API library the backends registered for ANY_LIBRARY
("array-api"). Entry-point backends are used by name only.
"""
import contextlib
import contextvars
import importlib
import importlib.metadata
import inspect
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy

from . import _arrays
from ._interface import KERNELS, array_namespace, device_of, missing_kernels

ENTRY_POINT_GROUP = "normops.backends"
ENV_VAR = "NORMOPS_BACKEND"
# array_module of a backend picked for the arrays of any array-API library that has no
# backend of its own
ANY_LIBRARY = "*"


class BackendError(Exception):
    """Base class of the registry's errors."""


class UnknownBackendError(BackendError, ValueError):
    """No backend of that name is registered or discoverable."""


class BackendUnavailableError(BackendError, RuntimeError):
    """The backend is known but cannot run here. Factories raise it to say why."""


class InvalidBackendError(BackendError, TypeError):
    """The object offered as a backend lacks a required kernel."""


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    reason: Optional[str]  # why it is unavailable; None when available
    device: Optional[str]
    source: str  # "built-in", "registered" or "entry point (<distribution>)"
    auto_for: Optional[str]  # array library this backend is picked for by default


class _Entry:
    def __init__(self, name, factory, source, array_module, priority, install_hint):
        self.name = name
        self.factory = factory
        self.source = source
        self.array_module = array_module
        self.priority = priority
        self.install_hint = install_hint
        self.backend = None
        self.failure = None  # (exception class, message) once loading failed
        self.lock = threading.Lock()  # a slow factory blocks only users of this entry

    @property
    def loaded(self):
        return self.backend is not None or self.failure is not None


_lock = threading.RLock()  # guards the table below; never held while a factory runs
_entries = {}
_discovered = False
_default = os.environ.get(ENV_VAR) or None
_default_origin = f"the {ENV_VAR} environment variable" if _default else None
_context = contextvars.ContextVar("normops_backend", default=None)
# backend per (backend=, use_backend(), set_backend(), array type), so that an op call
# need not look the name up under the lock or re-rank candidates; any change to the
# table or the default bumps the generation and empties it
_choice_cache = {}
_CHOICE_CACHE_SIZE = 256
_generation = 0


def _table_changed():
    """Call with _lock held after _entries or the default changed."""
    global _generation
    _generation += 1
    _choice_cache.clear()


def _check_kernels(name, obj):
    if inspect.isclass(obj):
        raise InvalidBackendError(f"backend {name!r} is refused: its factory returned the class "
                                  f"{obj.__qualname__}, not an instance")
    missing = missing_kernels(obj)
    if missing:
        raise InvalidBackendError(
            f"backend {name!r} is refused: it lacks the required kernel(s) "
            f"{', '.join(missing)} (every backend provides {', '.join(KERNELS)})"
        )


def _looks_like_backend(obj):
    """An instance offering any kernel is taken as a backend (classes are factories)."""
    return not inspect.isclass(obj) and any(hasattr(obj, k) for k in KERNELS)


def _import_target(spec):
    module, _, attr = spec.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def _instantiate(name, target):
    """Turn what was registered (a 'module:attr' string, an entry point, an instance or
    a zero-argument factory such as a class) into a checked backend instance."""
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
    return backend


def register_backend(name, factory, *, array_module=None, priority=None, install_hint=None,
                     replace=False, _source="registered"):
    """Register a backend under ``name``.

    ``factory`` is a backend instance, or a zero-argument callable returning one (a
    backend class is such a callable), or a ``"module:attr"`` string naming either
    (imported on first use). An instance is checked for the four kernels at once, the
    others when first loaded. A factory raises ImportError or BackendUnavailableError to
    say the backend cannot run here; ``install_hint`` then tells users what to do.

    ``array_module`` ("numpy", "cupy", ...) with an int ``priority`` makes the backend a
    candidate for automatic selection on that library's arrays (higher wins);
    ``ANY_LIBRARY`` ("*") on the arrays of any array-API library without one.
    A name registered in code takes precedence over an entry point of the same name.
    """
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
        _entries[name] = _Entry(name, factory, _source, array_module, priority, install_hint)
        _table_changed()


def unregister_backend(name):
    """Remove a registered backend; the current default falls back to automatic."""
    global _default, _default_origin
    with _lock:
        _entry(name)
        del _entries[name]
        _table_changed()
        if _default == name:
            _default = _default_origin = None


def _warn_shadowed(name, source):
    warnings.warn(f"backend {name!r} from the {source} is shadowed by one registered in code",
                  RuntimeWarning, stacklevel=4)


def _discover():
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


def _entry(name):
    if not isinstance(name, str):
        raise TypeError(f"a backend is selected by its name (a str), got {name!r}")
    with _lock:
        if name not in _entries:
            _discover()
        if name not in _entries:
            known = ", ".join(sorted(_entries)) or "none"
            raise UnknownBackendError(f"unknown backend {name!r}; known backends: {known}")
        return _entries[name]


def _load(entry):
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


def load_backend(name):
    """The backend object registered as ``name``; raises if unknown or unavailable."""
    entry = _load(_entry(name))
    if entry.failure is not None:
        cls, reason = entry.failure
        if cls is InvalidBackendError:
            raise InvalidBackendError(reason)
        hint = f" To use it: {entry.install_hint}." if entry.install_hint else ""
        raise BackendUnavailableError(f"backend {name!r} is not available: {reason}.{hint}")
    return entry.backend


def backends():
    """Every known backend (registered or discoverable) as a list of BackendInfo. Each
    is loaded to learn whether it can run here."""
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
    return infos


def backend_library(name):
    """The array library the backend ``name`` is picked for automatically (its
    ``array_module``: "numpy", "torch", ANY_LIBRARY, ...), or None."""
    return _entry(name).array_module


def set_backend(name):
    """Make ``name`` the process-wide default backend (None: automatic by array type)."""
    global _default, _default_origin
    if name is not None:
        load_backend(name)
    with _lock:
        _default, _default_origin = name, (None if name is None else "set_backend()")
        _table_changed()


@contextlib.contextmanager
def use_backend(name):
    """Use ``name`` for op calls in this context (thread / task) until the block ends."""
    backend = load_backend(name)
    token = _context.set(name)
    try:
        yield backend
    finally:
        _context.reset(token)


def _auto_modules():
    with _lock:
        return {e.array_module for e in _entries.values() if e.array_module is not None}


def _library_of(x, among=None):
    """The top-level module defining x's type (or its nearest base class in ``among``)."""
    roots = [cls.__module__.partition(".")[0] for cls in type(x).__mro__]
    if among is not None:
        roots = [root for root in roots if root in among]
    return roots[0] if roots else None


def array_module_of(x):
    """The array library of ``x`` among those with auto-selected backends; ANY_LIBRARY
    for another array-API library's array; "numpy" else."""
    found = _library_of(x, _auto_modules())
    if found is not None:
        return found
    if not isinstance(x, numpy.ndarray) and _arrays.namespace_or_none(x) is not None:
        return ANY_LIBRARY
    return "numpy"


def _auto_backend(module):
    with _lock:
        candidates = sorted(
            (e for e in _entries.values() if e.array_module == module),
            key=lambda e: -e.priority,
        )
    for entry in candidates:
        if _load(entry).failure is None:
            return entry
    reasons = "; ".join(f"{e.name}: {e.failure[1]}" for e in candidates) or "none is registered"
    what = "array-API" if module == ANY_LIBRARY else module
    raise BackendUnavailableError(f"no backend is available for {what} arrays ({reasons})")


def _selected(requested, x):
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
    return entry.backend, entry.name


def selected_name():
    """The name of the backend an op call on a numpy array would use now."""
    return _selected(None, None)[1]


def get_backend(name=None):
    """The backend object for ``name``, or the one an op call on a numpy array would use."""
    return _selected(name, None)[0]


def _check_library(backend, name, x):
    """A TypeError unless ``backend`` takes arrays of x's library."""
    if callable(getattr(backend, "namespace", None)):
        try:
            backend.namespace(x)
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


def backend_for(x, requested=None):
    """Resolve the backend for an op call on ``x`` and check it accepts x's array type."""
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
