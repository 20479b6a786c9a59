"""Build and threading configuration of the cpu backend: ``show_config`` and the thread
count of its OpenMP kernels."""
import operator


def _extension():
    """The compiled kernels, or None with the reason they could not be imported."""
    try:
        from ._backends import _cpu
    except ImportError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return _cpu, None


def config():
    """A dict describing the cpu backend's build: compiler and flags, OpenMP, threads."""
    ext, reason = _extension()
    if ext is None:
        return {"cpu extension": f"not importable ({reason})"}
    return {
        "cpu extension": "built",
        "build": ext.build_info(),
        "openmp": "on" if ext.openmp_enabled() else "off (serial build)",
        "threads": ext.get_num_threads(),
    }


def show_config():
    """Prints how the cpu backend was built and how many threads its kernels use."""
    for key, value in config().items():
        print(f"{key}: {value}")


def set_num_threads(n):
    """Threads for the cpu backend's kernels from now on (all Python threads); ``None`` or
    0 goes back to OpenMP's default (OMP_NUM_THREADS, or what threadpoolctl sets)."""
    n = 0 if n is None else operator.index(n)
    if n < 0:
        raise ValueError(f"set_num_threads takes a positive count, 0 or None, got {n}")
    ext, reason = _extension()
    if ext is None:
        raise RuntimeError(f"the cpu backend is not available: {reason}")
    ext.set_num_threads(n)


def get_num_threads():
    """Threads the cpu backend's kernels use now (1 when it was built without OpenMP)."""
    ext, reason = _extension()
    if ext is None:
        raise RuntimeError(f"the cpu backend is not available: {reason}")
    return ext.get_num_threads()
