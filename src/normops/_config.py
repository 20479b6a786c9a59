"""Build and run-time configuration of the cpu backend: ``show_config``, the thread count
of its OpenMP kernels and its cache of large output buffers."""
import importlib
import sys

from . import _validation as check

MIB = 1 << 20


def _extension(name="_cpu"):
    """A compiled module of the cpu backend, or None with the reason it could not be imported."""
    try:
        module = importlib.import_module(f"normops._backends.{name}")
    except ImportError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return module, None


def _required(name="_cpu"):
    module, reason = _extension(name)
    if module is None:
        raise RuntimeError(f"the cpu backend is not available: {reason}")
    return module


def config():
    """A dict describing the cpu backend's build: compiler and flags, OpenMP, threads,
    which loops run (AVX2 + FMA + F16C or portable) and the output cache."""
    ext, reason = _extension()
    if ext is None:
        return {"cpu extension": f"not importable ({reason})"}
    info = {
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


def show_config():
    """Prints how the cpu backend was built and how many threads its kernels use."""
    for key, value in config().items():
        print(f"{key}: {value}")


# why a forked child runs on one thread: cext/threads.c
_FORKED = ("set_num_threads: this process was forked after normops's OpenMP threads had "
           "started, and OpenMP's workers do not survive fork(), so normops's kernels run on "
           "one thread here (set_num_threads(1), 0 or None are accepted); worker processes "
           "that need threads should be started with the 'spawn' or 'forkserver' start "
           "method, e.g. multiprocessing.get_context('spawn')")


def set_num_threads(n):
    """Threads for the cpu backend's kernels from now on (all Python threads), at most
    ``max_threads()``; ``None`` or 0 goes back to OpenMP's default (OMP_NUM_THREADS, or
    what threadpoolctl sets, also capped at ``max_threads()``). In a process forked after
    the kernels started threads, they run on one thread and more is refused (_FORKED)."""
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


def get_num_threads():
    """Threads the cpu backend's kernels use now (1 when it was built without OpenMP, or
    in a process forked after they started threads)."""
    return _required().get_num_threads()


def max_threads():
    """The most threads the cpu backend's kernels run on: 4 per processor available to
    the process (OpenMP's count, which follows the affinity mask); 4 in a serial build.
    More never speeds up these memory-bound kernels, and each thread costs a stack."""
    return _required().max_threads()


def set_output_cache(max_bytes):
    """Outputs of the cpu backend of 4 MiB and more (y, dx) reuse the memory of earlier
    outputs of the same size once those arrays are gone, instead of fresh pages that the
    operating system maps and zeroes on first touch. At most ``max_bytes`` of such idle
    memory is kept (256 MiB at import); 0 frees it and turns reuse off."""
    max_bytes = check.integer(max_bytes, "max_bytes")
    if not 0 <= max_bytes <= sys.maxsize:   # a Py_ssize_t
        raise ValueError(f"max_bytes must be >= 0 (and at most {sys.maxsize}), got {max_bytes}")
    _required("_buffers").set_idle_limit(max_bytes)
