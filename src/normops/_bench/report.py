"""The default bench's printed report: the header (versions, settings, copy bandwidth),
the table of rows and the footer (ratios and targets); and the versions and machine that
every mode records."""
import json
import os
import platform
import sys

import numpy

import normops

from . import half, noise
from .backends import ARRAYS, DEFAULT_BACKEND
from .columns import PYTORCH


def environment():
    """The versions and the machine, as every mode records them in its JSON."""
    return {"normops_version": normops.__version__, "numpy_version": numpy.__version__,
            "python_version": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus"}


def format_environment(meta):
    """The first line of a report: versions (torch's where the mode records it) and the
    machine."""
    torch = (f"  torch {meta['torch_version'] or 'not installed'}" if "torch_version" in meta else "")
    return (f"normops {meta['normops_version']}  numpy {meta['numpy_version']}{torch}  "
            f"python {meta['python_version']}  {meta['machine']}")


def fmt_ms(seconds):
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def fmt_range(blocks):
    return "-" if blocks is None else f"{blocks['min']:.2f}-{blocks['max']:.2f}"


def format_table(rows, backend=DEFAULT_BACKEND):
    """The table: a column per header; the chosen backend's three columns when it is not
    cpu, and the reference's own two unless it is the chosen one."""
    ours = backend != "cpu"
    ref = backend != "reference"
    dram = any("dram_sized" in r for r in rows)   # a half dtype: its DRAM-sized rows marked
    header = ("shape", "op", "copy GB/s", "cpu ms",
              *((f"{backend} ms", f"{backend}/cpu", "per block") if ours else ()),
              *(("reference ms",) if ref else ()), "pytorch ms", "cpu/pytorch",
              *(("ref/cpu",) if ref else ()), "cpu GB/s", "cpu/copy", "cpu IQR/med", "noisy",
              *(("DRAM",) if dram else ()))
    body = []
    for r in rows:
        med = {c: cell["median_s"] for c, cell in r["cells"].items()}
        body.append((r["shape"], r["op"], fmt(r["copy_gbps"], ".1f"), fmt_ms(med.get("cpu")),
                     *((fmt_ms(med.get(backend)), fmt(r["backend_over_cpu"], ".2f"),
                        fmt_range(r["backend_over_cpu_blocks"])) if ours else ()),
                     *((fmt_ms(med.get("reference")),) if ref else ()), fmt_ms(med.get(PYTORCH)),
                     fmt(r["cpu_over_pytorch"], ".2f"),
                     *((fmt(r["reference_over_cpu"], ".1f"),) if ref else ()),
                     fmt(r["cpu_gbps"], ".1f"), fmt(r["cpu_fraction_of_copy"], ".0%"),
                     fmt(r["cpu_spread"], ".0%"), ",".join(r["noisy_columns"]),
                     *((("yes" if r.get("dram_sized") else "no"),) if dram else ())))
    widths = [max(len(v) for v in col) for col in zip(header, *body)]
    # text columns left-aligned, numbers right-aligned
    def line(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def format_header(meta, copies, rows=()):
    load = meta.get("load_average")
    lines = [
        format_environment(meta),
        f"dtype {meta['dtype']}"
        + (f" (parameters {meta['parameter_dtype']})" if "parameter_dtype" in meta else "")
        + f"  threads {meta['threads']} (normops: {meta['normops_threads']}, "
        f"torch: {meta['torch_threads']})  mode {meta['mode']}"
        + (f"  load average {load['start']:.2f} before, {load['end']:.2f} after" if load else ""),
        f"backend {meta['backend']} on {ARRAYS[meta['backend_arrays']]}"
        + (f", timed in the same blocks as cpu; {meta['backend']}/cpu: median over median; "
           "per block: its lowest and highest over the blocks" if meta["backend"] != "cpu" else ""),
        f"{PYTORCH}: PyTorch's own torch.nn.functional.batch_norm (and its backward)",
        f"cpu IQR/med: the interquartile range of cpu's calls over their median; noisy: the row's "
        f"timings (columns, copy baseline) whose IQR/median exceeds {noise.NOISY_SPREAD:.0%}",
    ]
    if "parameter_dtype" in meta:   # a half dtype
        dram = list(dict.fromkeys(r["shape"] for r in rows if r.get("dram_sized")))
        lines += half.header_lines(meta, dram)
    for column, note in meta["notes"].items():
        lines.append(f"{column} column left empty: {note}")
    lines.append("copy bandwidth (2 x nbytes / median copy time, the three ops' blocks pooled; each "
                 "row's baseline is the larger in its op's blocks):")
    for name, rec in copies.items():
        kernels = "  ".join(f"{k} {v['gbps']:.1f} GB/s" for k, v in rec["kernels"].items())
        lines.append(f"  {name:<18} {rec['nbytes'] / 1e6:7.1f} MB  {kernels}")
    return "\n".join(lines)


def format_footer(summary, notes, meta=None):
    lines = []
    if summary["rows_compared"] == 0:
        why = "; ".join(f"{c}: {n}" for c, n in notes.items() if c in ("cpu", PYTORCH)) or "no rows"
        lines.append(f"cpu/pytorch: n/a ({why})")
    else:
        verdict = summary["cpu_faster_than_pytorch_everywhere"]
        lines += [
            f"geometric mean cpu/pytorch over {summary['rows_compared']} rows: "
            f"{summary['geomean_cpu_over_pytorch']:.2f}  (< 1: cpu faster)",
            f"worst cpu/pytorch: {summary['max_cpu_over_pytorch']:.2f} ({summary['max_at']})",
            f"cpu faster than pytorch on every row: {'yes' if verdict else 'no'}",
        ]
    if meta is not None and "parameter_dtype" in meta:   # a half dtype: its targets
        lines += half.footer_lines(meta, summary)
    backend = summary["backend"]
    if backend == "cpu":
        return "\n".join(lines)
    if summary["backend_rows_compared"] == 0:
        why = notes.get("cpu") or "no rows"
        lines.append(f"{backend}/cpu: n/a ({why})")
        return "\n".join(lines)
    within = summary["within"]
    beyond = summary["backend_rows_beyond"]
    lines += [
        f"geometric mean {backend}/cpu over {summary['backend_rows_compared']} rows: "
        f"{summary['geomean_backend_over_cpu']:.2f}  (> 1: {backend} slower)",
        f"worst {backend}/cpu: {summary['max_backend_over_cpu']:.2f} ({summary['backend_max_at']})",
        f"{backend} within {within - 1:.0%} of cpu on every row: "
        f"{'yes' if summary['backend_within_cpu_everywhere'] else 'no'}"
        + (f" (beyond: {', '.join(beyond)})" if beyond else ""),
    ]
    return "\n".join(lines)


def print_and_save(result, text, path):
    """A mode's report: ``text`` printed, ``result`` written as JSON to ``path`` (if any)."""
    print(text)
    sys.stdout.flush()
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def ending(summary, meta):
    """A mode's last lines: the noise warning (if any) and its run time."""
    warning = summary["noise"]["warning"]
    return ([warning] if warning else []) + [f"({meta['elapsed_s']:.1f} s)"]
