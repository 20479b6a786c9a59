"""Whether a run's numbers are worth quoting: cells whose single calls spread too much,
and a machine that other work kept busy.

* A timing is noisy when the interquartile range of its calls exceeds NOISY_SPREAD of
  its median; a cell (a row of the table) is noisy when any timing its ratios divide is:
  its columns' and its copy baseline's.
* The machine may have been busy when the 1-minute load average (os.getloadavg, which
  counts every runnable thread, this process's included) exceeds LOAD_MARGIN at the
  start, before the bench ran anything, or its own thread count plus LOAD_MARGIN at the
  end, after it ran that many threads.
"""
NOISY_SPREAD = 0.10
LOAD_MARGIN = 0.5


def is_noisy(timing, threshold=NOISY_SPREAD):
    return timing.relative_spread > threshold


def noisy_names(timings, threshold=NOISY_SPREAD):
    """The names of the noisy timings of ``timings`` ({name: Timing}), in its order."""
    return [name for name, t in timings.items() if is_noisy(t, threshold)]


def machine_busy(load, threads):
    """Whether ``load`` ({"start", "end"}: the load average before and after the run)
    says another process may have been busy while this one ran ``threads`` threads;
    None when the load average is unknown."""
    if load is None:
        return None
    return load["start"] > LOAD_MARGIN or load["end"] > threads + LOAD_MARGIN


def assess(noisy_cells, cells, load, threads):
    """The JSON record of a run's noise: its noisy cells (labels) out of ``cells``, the
    load average, whether the machine was busy, and the warning line (None if neither)."""
    busy = machine_busy(load, threads)
    record = {"threshold": NOISY_SPREAD, "cells": cells, "noisy_cells": list(noisy_cells),
              "load_average": load, "load_margin": LOAD_MARGIN, "threads": threads,
              "machine_busy": busy}
    record["warning"] = warning(record)
    return record


def warning(record):
    """'WARNING: ...' when some cells are noisy or the machine was busy, else None."""
    noisy, busy = record["noisy_cells"], record["machine_busy"]
    if not noisy and not busy:
        return None
    parts = []
    if noisy:
        parts.append(f"{len(noisy)} of {record['cells']} cells are noisy (IQR/median > "
                     f"{record['threshold']:.0%})")
    if busy:
        load = record["load_average"]
        parts.append(f"another process may be busy (load average {load['start']:.2f} at the "
                     f"start, {load['end']:.2f} at the end; this run's threads: "
                     f"{record['threads']}, margin {record['load_margin']:g})")
    return f"WARNING: {'; '.join(parts)}: these numbers are not worth quoting"
