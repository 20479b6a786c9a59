"""Plain-text tables for the command line and the conformance kit's reports."""


def table(header, rows):
    """Left-aligned columns two spaces apart, a dashed rule under the header."""
    widths = [max(len(str(v)) for v in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
