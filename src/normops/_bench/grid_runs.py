"""Several ``bench --grid`` runs of the same grid as one: each cell's cpu/pytorch and
cpu/copy are the medians of its runs' values, so that a slow spell of the machine in one
run moves no cell. A combined cell is noisy when it was noisy in most of its runs.

``python benchmarks/grid_median.py RUN.json RUN.json RUN.json`` prints the combined
summary and writes its JSON and heatmap.
"""
import statistics

from . import grid, noise

# what identifies a cell across runs
KEY = ("layout", "channels", "size", "dtype", "threads", "op")


def _key(cell):
    return tuple(cell[k] for k in KEY)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def combine_cells(runs):
    """The cells of ``runs`` (grid results, each {"cells": [...]}), one per cell of the
    first run: its fields, with cpu_over_pytorch and cpu_fraction_of_copy the medians over
    the runs, "runs" each run's values, and "noisy" true when more than half of the runs
    had it noisy. ValueError when the runs do not cover the same cells."""
    keyed = [{_key(c): c for c in run["cells"]} for run in runs]
    if any(k.keys() != keyed[0].keys() for k in keyed[1:]):
        raise ValueError("the runs do not cover the same grid cells")
    cells = []
    for key, first in keyed[0].items():
        versions = [k[key] for k in keyed]
        cell = dict(first)
        cell["runs"] = [{"cpu_over_pytorch": v["cpu_over_pytorch"],
                         "cpu_fraction_of_copy": v["cpu_fraction_of_copy"], "noisy": v["noisy"]}
                        for v in versions]
        for field in ("cpu_over_pytorch", "cpu_fraction_of_copy"):
            cell[field] = _median(v[field] for v in versions)
        cell["noisy"] = 2 * sum(v["noisy"] for v in versions) > len(versions)
        cells.append(cell)
    return cells


def combine(runs):
    """The JSON-ready report of ``runs`` as one: the combined cells and their summary
    (grid.stats, overall and per thread count); the noise record counts the combined
    noisy cells and whether any run found the machine busy."""
    cells = combine_cells(runs)
    threads = sorted({c["threads"] for c in cells})
    busy = [r["summary"]["noise"]["machine_busy"] for r in runs]
    summary = {"geomean_target": grid.GEOMEAN_TARGET, "bandwidth_target": grid.BANDWIDTH_TARGET,
               "large_bytes": grid.LARGE_BYTES, **grid.stats(cells),
               "by_threads": {str(t): grid.stats([c for c in cells if c["threads"] == t])
                              for t in threads}}
    busy_runs = sum(bool(b) for b in busy)
    record = {"threshold": noise.NOISY_SPREAD, "cells": len(cells),
              "noisy_cells": summary["noisy_cells"], "runs": len(runs), "busy_runs": busy_runs}
    parts = []
    if record["noisy_cells"]:
        parts.append(f"{len(record['noisy_cells'])} of {len(cells)} cells are noisy (IQR/median "
                     f"> {noise.NOISY_SPREAD:.0%} in most of their runs)")
    if busy_runs:
        parts.append(f"the load average says another process may have been busy during "
                     f"{busy_runs} of the {len(runs)} runs")
    record["warning"] = (f"WARNING: {'; '.join(parts)}: these numbers are not worth quoting"
                         if parts else None)
    summary["noise"] = record
    return {"meta": {"mode": "grid, median of runs", "runs": [r["meta"] for r in runs]},
            "cells": cells, "summary": summary}
