"""``python -m normops bench --dtype float16|bfloat16``: what the half precision mode of
the bench does differently from float32 and float64 (see normops._bench.standard).

* Inputs: x and dy in the half dtype, rounded from the float32 run's data (same seed);
  gamma, beta, running_mean and running_var stay float32, for normops and for PyTorch
  alike: PyTorch's mixed-precision rule (half activations, float32 weight and running
  statistics), which is what networks run.
* PyTorch gets tensors on the NumPy arrays' memory. torch.from_numpy refuses
  ml_dtypes.bfloat16 arrays, so a bfloat16 array goes through an int16 view of its
  memory, reinterpreted as torch.bfloat16 (``as_tensor``).
* The copy baseline copies the half array (its byte size: half the float32 bytes).
  numpy.copyto takes it as it is; the cpu backend's copy_into reads its arguments through
  the buffer protocol, which has no bfloat16 format ("cannot include dtype 'E' in a
  buffer"), so it copies a uint16 view of the same memory (``buffer_view``).
* Targets, printed in the footer: cpu faster than PyTorch on every row, and the cpu
  backend's effective bandwidth at least BANDWIDTH_TARGET of the copy's on the
  DRAM-sized rows: those whose x alone is at least as large as the last-level cache
  (``dram_sized``), so that neither the op nor its copy baseline can run from cache.
"""
import os

import numpy

from normops._halves import HALF_NAMES, is_half, name_of, numpy_dtype  # noqa: F401 (for the bench)

PARAMETER_DTYPE = "float32"
# the cpu backend's effective bandwidth over the copy's, on the DRAM-sized rows
BANDWIDTH_TARGET = 0.85
# where the machine does not say how large its last-level cache is
ASSUMED_LLC_BYTES = 32 * 2**20
MIB = 2**20


# ---------------------------------------------------------------------------- inputs

def data_dtype(dtype):
    """The dtype the random data is drawn in: NumPy's generator has no half dtype, so a
    half run draws the float32 run's numbers and rounds them."""
    return numpy.dtype(numpy.float32) if is_half(dtype) else numpy.dtype(dtype)


def parameter_dtype(dtype):
    """gamma, beta and the running statistics' dtype for x of ``dtype``."""
    return numpy.dtype(PARAMETER_DTYPE) if is_half(dtype) else numpy.dtype(dtype)


# ---------------------------------------------------------------------------- memory views

def buffer_view(a):
    """``a``, or for a bfloat16 array a uint16 view of the same memory: what reaches the
    buffer protocol (memoryview), which has no bfloat16 format."""
    return a.view(numpy.uint16) if name_of(a.dtype) == "bfloat16" else a


def as_tensor(torch, a):
    """A PyTorch CPU tensor on the memory of the NumPy array ``a`` (a tensor is returned
    as it is). torch.from_numpy refuses ml_dtypes.bfloat16: such an array becomes an int16
    tensor on its memory, viewed as torch.bfloat16 (same bits, same strides)."""
    if isinstance(a, torch.Tensor):
        return a
    if name_of(a.dtype) == "bfloat16":
        return torch.from_numpy(a.view(numpy.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


# ---------------------------------------------------------------------------- DRAM-sized rows

def _parse_size(text):
    text = text.strip().upper()
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def last_level_cache(sysfs="/sys/devices/system/cpu/cpu0/cache"):
    """(bytes, where from) of the last-level cache one core sees: the highest-level data
    or unified cache in sysfs (one instance of it: on a chip with several L3 slices,
    lscpu's "32 MiB (1 instance)"; sysconf's LEVEL3_CACHE_SIZE may count the whole
    package's), else ASSUMED_LLC_BYTES."""
    best = None
    try:
        entries = sorted(os.listdir(sysfs))
    except OSError:
        entries = []
    for entry in entries:
        if not entry.startswith("index"):
            continue
        path = os.path.join(sysfs, entry)
        try:
            with open(os.path.join(path, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(path, "level")) as f:
                level = int(f.read())
            with open(os.path.join(path, "size")) as f:
                size = _parse_size(f.read())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and size > 0 and (best is None or level > best[0]):
            best = (level, size)
    if best is None:
        return ASSUMED_LLC_BYTES, f"assumed: {sysfs} gives no cache sizes"
    return best[1], f"L{best[0]}, {sysfs}"


def dram_sized(nbytes, llc_bytes):
    """Whether a row of an x of ``nbytes`` runs from memory: x alone fills the
    last-level cache, so x and y (or x, dy and dx), and the copy's source and destination,
    are at least twice the cache."""
    return nbytes >= llc_bytes


# ---------------------------------------------------------------------------- report

def meta_fields(dtype, llc):
    llc_bytes, source = llc
    return {"parameter_dtype": PARAMETER_DTYPE, "last_level_cache_bytes": llc_bytes,
            "last_level_cache_source": source, "bandwidth_target": BANDWIDTH_TARGET}


def mark_rows(rows, llc_bytes):
    for row in rows:
        row["dram_sized"] = dram_sized(row["nbytes"], llc_bytes)
    return rows


def summarize(rows, summary):
    """The half-precision targets added to ``summary``: bandwidth fraction over the
    DRAM-sized rows (None when there is none, or one lacks the cpu column)."""
    dram = [r for r in rows if r["dram_sized"]]
    fractions = [(r["cpu_fraction_of_copy"], r) for r in dram if r["cpu_fraction_of_copy"] is not None]
    low, at = min(fractions, key=lambda p: p[0]) if fractions else (None, None)
    met = (None if not dram or len(fractions) < len(dram)
           else all(v >= BANDWIDTH_TARGET for v, _ in fractions))
    summary.update(
        bandwidth_target=BANDWIDTH_TARGET,
        dram_sized_rows=[f"{r['shape']} {r['op']}" for r in dram],
        min_cpu_fraction_of_copy_dram=low,
        min_cpu_fraction_of_copy_dram_at=f"{at['shape']} {at['op']}" if at else None,
        bandwidth_target_met=met,
        dram_rows_below_target=[f"{r['shape']} {r['op']}" for v, r in fractions if v < BANDWIDTH_TARGET],
    )
    return summary


def header_lines(meta, shape_names_dram):
    llc = meta["last_level_cache_bytes"]
    dram = ", ".join(shape_names_dram) or "none of the shapes run"
    return [
        f"{meta['dtype']}: x and dy {meta['dtype']}; gamma, beta and the running statistics "
        f"{meta['parameter_dtype']} for normops and PyTorch alike (PyTorch's mixed precision)",
        *(["bfloat16 tensors (pytorch, --backend torch): "
            "torch.from_numpy(a.view(numpy.int16)).view(torch.bfloat16), on the arrays' memory"]
          if meta["dtype"] == "bfloat16" else []),
        f"copy baseline and cpu GB/s in {meta['dtype']} bytes; DRAM-sized rows (x at least the "
        f"last-level cache, {llc / MIB:g} MiB: {meta['last_level_cache_source']}): {dram}",
    ]


def _yes_no(value):
    return "n/a" if value is None else ("yes" if value else "no")


def footer_lines(meta, summary):
    target = summary["bandwidth_target"]
    line = f"cpu/copy >= {target:.0%} on every DRAM-sized row: "
    if not summary["dram_sized_rows"]:
        line += "n/a (no DRAM-sized row among the shapes run)"
    elif summary["min_cpu_fraction_of_copy_dram"] is None:
        line += "n/a (no cpu column)"
    else:
        below = summary["dram_rows_below_target"]
        line += (f"{_yes_no(summary['bandwidth_target_met'])} (lowest "
                 f"{summary['min_cpu_fraction_of_copy_dram']:.0%}, "
                 f"{summary['min_cpu_fraction_of_copy_dram_at']}"
                 + (f"; below: {', '.join(below)}" if below else "") + ")")
    return [f"targets for {meta['dtype']} (parameters {meta['parameter_dtype']}):",
            f"  cpu faster than pytorch on every row: "
            f"{_yes_no(summary['cpu_faster_than_pytorch_everywhere'])}",
            f"  {line}"]
