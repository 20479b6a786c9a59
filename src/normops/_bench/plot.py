"""The PNG heatmap of ``bench --grid`` (matplotlib, imported only here and only when a
PNG is written; no pyplot, so no display is needed).

A row of panels per (layout, dtype), a column per (threads, op); in each panel, a
channels x size grid of cells coloured by cpu/pytorch on a logarithmic scale diverging
around 1 (blue: cpu faster, red: slower; the same scale in every run, ratios beyond it
take its end colours), each annotated with cpu/pytorch and, under it, cpu's fraction of
the copy bandwidth; a noisy cell's ratio carries a '*'.
"""
import math

from .backends import BenchError

INSTALL = 'pip install "normops[bench]"'
# the colour scale spans [1 / SPAN, SPAN]
SPAN = 4.0


def require_matplotlib():
    """BenchError with how to install matplotlib when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BenchError(f"the PNG heatmap needs matplotlib: {INSTALL} (or leave the PNG out "
                         f"with --no-png)") from None


def _distinct(cells, *keys):
    return list(dict.fromkeys(tuple(c[k] for k in keys) for c in cells))


def heatmap(cells, path):
    """Write the heatmap of the grid's ``cells`` (its JSON cells) to ``path``."""
    require_matplotlib()
    from matplotlib import colors
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure

    rows, cols = _distinct(cells, "layout", "dtype"), _distinct(cells, "threads", "op")
    channels = sorted({c["channels"] for c in cells})
    sizes = sorted({(c["size_bytes"], c["size"]) for c in cells})
    by_key = {(c["layout"], c["dtype"], c["threads"], c["op"], c["channels"], c["size"]): c for c in cells}
    norm, cmap = colors.LogNorm(vmin=1 / SPAN, vmax=SPAN, clip=True), "RdBu_r"
    fig = Figure(figsize=(max(4.5, 1.6 + 0.75 * len(sizes) * len(cols)),
                          1.6 + 0.42 * len(channels) * len(rows)),
                 layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    for i, (layout, dtype) in enumerate(rows):
        for j, (threads, op) in enumerate(cols):
            ax = axes[i][j]
            grid = [[by_key.get((layout, dtype, threads, op, ch, size)) for _, size in sizes]
                    for ch in channels]
            values = [[(c or {}).get("cpu_over_pytorch") or math.nan for c in row] for row in grid]
            ax.imshow(values, norm=norm, cmap=cmap, aspect="auto")
            for y, row in enumerate(grid):
                for x, c in enumerate(row):
                    if c is not None:
                        shade = norm(values[y][x]) if c["cpu_over_pytorch"] else 0.5
                        ax.text(x, y, _annotation(c), ha="center", va="center", fontsize=6,
                                color="white" if abs(shade - 0.5) > 0.3 else "black")
            ax.set_xticks(range(len(sizes)), [s for _, s in sizes], fontsize=6)
            ax.set_yticks(range(len(channels)), [f"C={ch}" if j == 0 else "" for ch in channels],
                          fontsize=6)
            if i == 0:
                ax.set_title(f"{threads} thread{'s' * (threads != 1)}\n{op}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{layout} {dtype}", fontsize=8)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.6, extend="both",
                       label="cpu/pytorch")
    ticks = [SPAN ** (k / 2) for k in range(-2, 3)]
    bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
    bar.minorticks_off()
    fig.suptitle("normops cpu backend vs PyTorch's batch norm; per cell:\ncpu/pytorch (blue: cpu "
                 "faster; * noisy)\nover cpu's fraction of the copy bandwidth", fontsize=8)
    fig.savefig(path, dpi=110)


def _annotation(cell):
    ratio, fraction = cell["cpu_over_pytorch"], cell["cpu_fraction_of_copy"]
    top = "n/a" if ratio is None else f"{ratio:.2f}" + ("*" if cell["noisy"] else "")
    return f"{top}\n{'-' if fraction is None else format(fraction, '.0%')}"
