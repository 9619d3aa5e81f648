"""Numbers and tables as people read them: one formatter and one Markdown table for all of bvae.

The latent table, a sweep's comparison, a model card, the flows' Prefect artifacts and the
HTML report (through its template's ``number`` filter) all go through here, so a figure reads
the same everywhere and a missing one is always :data:`MISSING`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MISSING = "–"  # a figure that does not exist (None, NaN): never "None", "nan" or a blank cell


def number(value: object) -> str:
    """``1,234`` for an int, four significant digits for a float (``1.23e-04`` below 0.001),
    :data:`MISSING` for none; anything else as ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 or math.isinf(value) else f"{value:.2e}"


def cell(value: object) -> str:
    """A table cell: text as it is, a number through :func:`number`."""
    return value if isinstance(value, str) else number(value)


def markdown_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table (no trailing newline). Cells that are already text
    are kept as they are, so a column may carry its own precision (``f"{kl:.2f}"``)."""
    lines = [
        "| " + " | ".join(cell(item) for item in header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(cell(item) for item in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """An aligned plain-text table for a terminal (no trailing newline): text columns flush
    left, number columns flush right, two spaces between."""
    cells = [[cell(item) for item in header]] + [[cell(item) for item in row] for row in rows]
    widths = [max(len(line[index]) for line in cells) for index in range(len(header))]
    numeric = [
        all(isinstance(row[index], int | float) or row[index] is None for row in rows) and bool(rows)
        for index in range(len(header))
    ]
    lines = []
    for line in cells:
        parts = [
            text.rjust(width) if right else text.ljust(width)
            for text, width, right in zip(line, widths, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
