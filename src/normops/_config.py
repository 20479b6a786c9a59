"""Build and run-time configuration of the cpu backend: ``show_config``, the thread count
of its OpenMP kernels and its cache of large output buffers."""
import importlib
import sys
from types import ModuleType
from typing import Optional, Union

from . import _validation as check
from ._version import __version__

MIB = 1 << 20


def _extension(name: str = "_cpu") -> tuple[Optional[ModuleType], Optional[str]]:
    """A compiled module of the cpu backend, or None with the reason it could not be imported."""
    try:
        module = importlib.import_module(f"normops._backends.{name}")
    except ImportError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return module, None


def _required(name: str = "_cpu") -> ModuleType:
    """A compiled module of the cpu backend, or a RuntimeError that says why there is none."""
    module, reason = _extension(name)
    if module is None:
        raise RuntimeError(f"the cpu backend is not available: {reason}")
    return module


def config() -> dict[str, Union[str, int]]:
    """Describe the cpu backend's build and its run-time settings.

    Returns
    -------
    dict of str to str or int
        The compiler and flags, OpenMP, the thread count and its bound, whether this is a
        process forked after the kernels started threads, the smallest op that gets a
        thread of its own (values per thread), which loops run (AVX2 + FMA + F16C or
        portable, and from what size outputs are streamed around the cache) and the
        output cache. Only ``{"cpu extension": "not importable (<why>)"}`` when the
        compiled extension cannot be imported.
    """
    ext, reason = _extension()
    if ext is None:
        return {"cpu extension": f"not importable ({reason})"}
    info: dict[str, Union[str, int]] = {
        "cpu extension": "built",
        "build": ext.build_info(),
        "openmp": "on" if ext.openmp_enabled() else "off (serial build)",
        "threads": ext.get_num_threads(),
        "max threads": ext.max_threads(),
        "forked child": ("yes: forked after normops's OpenMP threads started, so its kernels "
                         "run on one thread" if ext.forked_child() else "no"),
        # smaller ops run on fewer threads (one below this): see cext/threads.h
        "min values per thread": ext.get_min_values_per_thread(),
        "simd": (f"AVX2 + FMA + F16C loops (float32 statistics, float16/bfloat16 statistics "
                 f"and maps); float32 and half outputs written around the cache when an op's "
                 f"arrays hold {ext.stream_bytes() / MIB:g} MiB or more"
                 if ext.simd_enabled()
                 else "portable loops (no AVX2 + FMA + F16C on this CPU or build, or turned off)"),
    }
    buffers, _ = _extension("_buffers")
    if buffers is not None:
        info["output cache"] = (f"{buffers.idle_bytes_now() / MIB:g} MiB idle, limit "
                                f"{buffers.idle_limit_bytes() / MIB:g} MiB")
    return info


def show_config() -> None:
    """Print normops' version, how the cpu backend was built and how its kernels run.

    One ``key: value`` line each: first normops' version, then what ``config()``
    describes: the compiler and flags, OpenMP, how many threads the kernels use and
    their bound, the loops that run and the output cache (or why the cpu backend's
    extension cannot be imported).
    """
    print(f"normops version: {__version__}")
    for key, value in config().items():
        print(f"{key}: {value}")


# why a forked child runs on one thread: cext/threads.c
_FORKED = ("set_num_threads: this process was forked after normops's OpenMP threads had "
           "started, and OpenMP's workers do not survive fork(), so normops's kernels run on "
           "one thread here (set_num_threads(1), 0 or None are accepted); worker processes "
           "that need threads should be started with the 'spawn' or 'forkserver' start "
           "method, e.g. multiprocessing.get_context('spawn')")


def set_num_threads(n: Optional[int]) -> None:
    """Set the number of threads of the cpu backend's kernels from now on.

    Parameters
    ----------
    n : int or None
        The thread count for every op from now on, in all Python threads, at most
        ``max_threads()``. None or 0 goes back to OpenMP's default (OMP_NUM_THREADS, or
        what threadpoolctl sets, also capped at ``max_threads()``).

    Raises
    ------
    TypeError
        If ``n`` is not an int (NumPy integers are; bools and floats are refused).
    ValueError
        If ``n`` is negative or more than ``max_threads()``.
    RuntimeError
        If the cpu backend's compiled extension cannot be imported, or if ``n`` is more
        than 1 in a process forked after the kernels had started threads.

    Notes
    -----
    OpenMP's workers do not survive ``fork()``: in a process forked after the kernels
    started threads they run on one thread, and more is refused. Worker processes that
    need threads should be started with the 'spawn' or 'forkserver' start method, e.g.
    ``multiprocessing.get_context('spawn')``.
    """
    n = 0 if n is None else check.integer(n, "n")   # bools and floats refused
    if n < 0:
        raise ValueError(f"set_num_threads takes a positive count, 0 or None, got {n}")
    ext = _required()
    if n > ext.max_threads():
        raise ValueError(f"set_num_threads takes at most max_threads() = {ext.max_threads()} "
                         f"threads (4 per processor), got {n}")
    if n > 1 and ext.forked_child():
        raise RuntimeError(_FORKED)
    ext.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the cpu backend's kernels use now.

    Returns
    -------
    int
        The thread count: 1 when the extension was built without OpenMP, or in a
        process forked after the kernels started threads.

    Raises
    ------
    RuntimeError
        If the cpu backend's compiled extension cannot be imported.
    """
    threads: int = _required().get_num_threads()
    return threads


def max_threads() -> int:
    """The most threads the cpu backend's kernels run on.

    Returns
    -------
    int
        4 per processor available to the process (OpenMP's count, which follows the
        affinity mask); 4 in a serial build.

    Raises
    ------
    RuntimeError
        If the cpu backend's compiled extension cannot be imported.

    Notes
    -----
    More threads never speed up these memory-bound kernels, and each thread costs a
    stack.
    """
    most: int = _required().max_threads()
    return most


def set_output_cache(max_bytes: int) -> None:
    """Set how much idle memory of earlier outputs the cpu backend keeps for reuse.

    Outputs of the cpu backend of 4 MiB and more (y, dx) reuse the memory of earlier
    outputs of the same size once those arrays are gone, instead of fresh pages that
    the operating system maps and zeroes on first touch.

    Parameters
    ----------
    max_bytes : int
        At most this many bytes of such idle memory are kept (256 MiB at import); 0
        frees it and turns reuse off.

    Raises
    ------
    TypeError
        If ``max_bytes`` is not an int (NumPy integers are; bools and floats are
        refused).
    ValueError
        If ``max_bytes`` is negative or more than ``sys.maxsize``.
    RuntimeError
        If the cpu backend's compiled extension cannot be imported.
    """
    max_bytes = check.integer(max_bytes, "max_bytes")
    if not 0 <= max_bytes <= sys.maxsize:   # a Py_ssize_t
        raise ValueError(f"max_bytes must be >= 0 (and at most {sys.maxsize}), got {max_bytes}")
    _required("_buffers").set_idle_limit(max_bytes)
