"""Three (or more) runs of ``python -m normops bench --grid`` as one:
``python benchmarks/grid_median.py RUN1.json RUN2.json RUN3.json [--json OUT] [--png OUT]``.

Each cell's cpu/pytorch and cpu/copy are the medians over the runs (normops._bench.grid_runs);
prints the summary against the targets and writes the combined JSON and heatmap.
"""
import argparse
import json
import sys

from normops._bench import grid_report, grid_runs, plot


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="JSON files of bench --grid runs of one grid")
    parser.add_argument("--json", default="normops-bench-grid-median.json")
    parser.add_argument("--png", default="normops-bench-grid-median.png")
    args = parser.parse_args(argv)
    runs = []
    for path in args.runs:
        with open(path) as f:
            runs.append(json.load(f))
    result = grid_runs.combine(runs)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    plot.heatmap(result["cells"], args.png)
    print(f"{len(runs)} runs: {', '.join(args.runs)}; each cell's ratios are the medians over the runs")
    print(grid_report.format_summary(result["summary"]))
    print(f"JSON: {args.json}  PNG: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
