"""Which columns can run here (the normops backends, PyTorch), what kind of arrays the
chosen backend gets, and the thread count of normops and PyTorch."""
import contextlib
import os

import normops

from .columns import PYTORCH

DEFAULT_BACKEND = "cpu"


def load_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


class BenchError(Exception):
    """The bench cannot run as asked (an unknown or unavailable --backend): its message
    is printed as the command's error."""


def cpu_against_torch(mode):
    """PyTorch, for a mode (its flag) that sets the cpu backend against it; BenchError
    when either is missing."""
    torch = load_torch()
    if torch is None:
        raise BenchError(f"{mode} sets the cpu backend against PyTorch's batch norm: PyTorch "
                         "is not installed")
    available, note = normops_backend_status("cpu")
    if not available:
        raise BenchError(f"{mode} times the cpu backend, which is {note}")
    return torch


def normops_backend_status(name):
    """(available, note): note says why a backend is left out."""
    for info in normops.backends():
        if info.name == name:
            return info.available, None if info.available else f"unavailable: {info.reason}"
    return False, "not registered in this build"


def backend_status(torch):
    """(available, note) of every column but the chosen backend's (checked by
    chosen_backend, which refuses to run without it)."""
    status = {name: normops_backend_status(name) for name in ("cpu", "reference")}
    status[PYTORCH] = (True, None) if torch is not None else (False, "PyTorch is not installed")
    return status


# what the bench hands the chosen backend: the NumPy arrays themselves, or PyTorch CPU
# tensors on their memory
ARRAYS = {
    "numpy": "the NumPy arrays",
    "torch": "PyTorch CPU tensors on the NumPy arrays' memory (torch.from_numpy: same layout "
             "and axis)",
}


def chosen_backend(name, torch):
    """The kind of arrays ("numpy" or "torch", see ARRAYS) the normops backend ``name``
    gets; BenchError saying why when it is unknown, cannot run here, or works on arrays
    that live off the cpu (cupy: a GPU's, timed by benchmarks/gpu_check.py)."""
    from normops._registry import ANY_LIBRARY, backend_library
    try:
        normops.get_backend(name)
    except normops.BackendError as exc:
        hint = ""
        if name == PYTORCH:
            hint = (f" (PyTorch's own batch norm is always timed, as the {PYTORCH!r} column; "
                    f"the normops backend for tensors is 'torch')")
        raise BenchError(f"{exc}{hint}") from None
    library = backend_library(name)
    if library in (None, "numpy", ANY_LIBRARY):
        # an array-API backend takes NumPy arrays through array-api-compat's namespace
        return "numpy"
    if library == "torch" and torch is not None:
        return "torch"
    where = " (on a GPU machine, benchmarks/gpu_check.sh times it)" if library == "cupy" else ""
    raise BenchError(f"backend {name!r} works on {library} arrays; the bench times the cpu on "
                     f"NumPy arrays and PyTorch CPU tensors only{where}")


def normops_thread_control():
    """(get, set) of normops' thread count, or None: set_num_threads arrives with the cpu
    backend, and may refuse when that backend is not built."""
    get = getattr(normops, "get_num_threads", None)
    set_ = getattr(normops, "set_num_threads", None)
    if get is None or set_ is None:
        return None
    try:
        get()
    except normops.BackendError:
        return None
    return get, set_


@contextlib.contextmanager
def thread_count(n, torch):
    """Run normops (when it can be told) and torch on n threads; restore the previous
    counts afterwards."""
    controls = [c for c in (normops_thread_control(),
                            torch and (torch.get_num_threads, torch.set_num_threads)) if c]
    previous = [get() for get, _ in controls]
    for _, set_ in controls:
        set_(n)
    try:
        yield
    finally:
        for (_, set_), count in zip(controls, previous):
            set_(count)


def usable_cpus():
    """The CPUs this process may run on (its affinity mask where the OS has one): a
    process pinned to fewer CPUs than the machine has gains nothing from more threads,
    and normops refuses more than 4 per such CPU."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def load_average():
    """The 1-minute load average of the machine (this process included), or None."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def load_record(before, after):
    """{"start", "end"}: the load averages before and after a run; None if unknown."""
    return None if before is None or after is None else {"start": before, "end": after}
