"""The printed report of ``bench --grid``: a header, a line per cell and the summary."""
from normops._text import table

from . import report
from .report import fmt, fmt_ms

GRID_HEADER = ("layout", "C", "size", "dtype", "threads", "op", "shape", "cpu ms", "cpu IQR/med",
               "cpu min-max ms", "pytorch ms", "pytorch IQR/med", "cpu/pytorch", "copy GB/s",
               "cpu/copy", "noisy")


def _cell_line(c):
    cpu, pt = c["cells"].get("cpu"), c["cells"].get("pytorch")
    return (c["layout"], str(c["channels"]), c["size"], c["dtype"], str(c["threads"]), c["op"],
            c["shape"], fmt_ms(cpu and cpu["median_s"]), fmt(cpu and cpu["iqr_over_median"], ".0%"),
            f"{fmt_ms(cpu['min_s'])}-{fmt_ms(cpu['max_s'])}" if cpu else "-",
            fmt_ms(pt and pt["median_s"]), fmt(pt and pt["iqr_over_median"], ".0%"),
            fmt(c["cpu_over_pytorch"], ".2f"), fmt(c["copy_gbps"], ".1f"),
            fmt(c["cpu_fraction_of_copy"], ".0%"), ",".join(c["noisy_columns"]))


def _verdict_line(name, s, summary):
    mean = s["geomean_cpu_over_pytorch"]
    met = {None: "n/a", True: "met", False: "not met"}[s["geomean_target_met"]]
    return (f"{name}: {s['cells']} cells, {len(s['noisy_cells'])} noisy; geometric mean "
            f"cpu/pytorch {fmt(mean, '.2f')} over {s['compared']} (target <= "
            f"{summary['geomean_target']:.2f}: {met}); cpu not faster than pytorch in "
            f"{len(s['not_faster'])}; {summary['large_bytes'] // 2**20} MB or more below "
            f"{summary['bandwidth_target']:.0%} of the copy bandwidth in "
            f"{len(s['below_bandwidth'])} of {s['large_cells']}")


def format_summary(summary):
    lines = [_verdict_line("all cells", summary, summary)]
    lines += [_verdict_line(f"{t} thread{'s' * (t != '1')}", s, summary)
              for t, s in summary["by_threads"].items()]
    lines.append(f"cells where cpu is not faster than pytorch (cpu/pytorch >= 1): "
                 f"{len(summary['not_faster']) or 'none'}")
    lines += [f"  {e['cell']}: {e['cpu_over_pytorch']:.2f}" for e in summary["not_faster"]]
    lines.append(f"cells of {summary['large_bytes'] // 2**20} MB or more below "
                 f"{summary['bandwidth_target']:.0%} of the copy bandwidth: "
                 f"{len(summary['below_bandwidth']) or 'none'}")
    lines += [f"  {e['cell']}: {e['cpu_fraction_of_copy']:.0%}" for e in summary["below_bandwidth"]]
    if summary["noise"]["warning"]:
        lines.append(summary["noise"]["warning"])
    return "\n".join(lines)


def format_report(result, json_path, png_path):
    meta, cells = result["meta"], result["cells"]
    grid = meta["grid"]
    load = meta["load_average"]
    policy = meta["repeat_policy"]
    calls = (f"{policy['fixed']} per callable" if policy["fixed"] is not None else
             f"{policy['min_repeats']} to {policy['max_repeats']} per callable, filling "
             f"{policy['budget_s']:g} s")
    lines = [
        report.format_environment(meta),
        f"grid: layouts {', '.join(grid['layouts'])}; channels {', '.join(map(str, grid['channels']))}; "
        f"sizes {', '.join(grid['sizes'])}; dtypes {', '.join(grid['dtypes'])}; threads "
        f"{', '.join(map(str, grid['threads']))}; ops {', '.join(grid['ops'])}",
        f"calls: {calls}, in alternating blocks with the copies (one set of blocks per shape and "
        f"thread count)" + (f"; load average {load['start']:.2f} before, {load['end']:.2f} after"
                            if load else ""),
        f"IQR/med: interquartile range of the single calls over their median; noisy: timings "
        f"whose IQR/med exceeds {meta['noisy_spread']:.0%}; cpu/copy: cpu's effective bandwidth "
        f"(2 passes forward-train and inference, 3 backward) over the faster copy's",
        "",
        table(GRID_HEADER, [_cell_line(c) for c in cells]),
        "",
        format_summary(result["summary"]),
        f"JSON: {json_path}" + (f"  PNG: {png_path}" if png_path else "") + f"  ({meta['elapsed_s']:.1f} s)",
    ]
    return "\n".join(lines)
