"""Result tables as text: the one renderer of fixed-width (terminal) and Markdown tables, and the
results.csv / results.md pair a study writes. Cells are strings; `row_cells` formats a result row's
values (floats to four decimals, None as empty)."""
from __future__ import annotations

import csv
import io
import os
from typing import Any, Mapping, Sequence

from maskedbert._atomic import write_text_atomic

__all__ = ["text_table", "markdown_table", "row_cells", "results_csv", "results_markdown", "results_text_table",
           "write_results"]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns two spaces apart, each as wide as its widest cell, a dash rule under the header."""
    cells = [list(header)] + [list(row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown (GitHub) table, without a trailing newline."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def row_cells(row: Mapping, columns: Sequence[str]) -> list[str]:
    return [_cell(row.get(c)) for c in columns]


def results_csv(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(row_cells(row, columns))
    return buffer.getvalue()


def results_markdown(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    return markdown_table(columns, [row_cells(row, columns) for row in rows]) + "\n"


def results_text_table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    """A fixed-width table for the terminal."""
    return text_table(columns, [row_cells(row, columns) for row in rows])


def write_results(rows: Sequence[Mapping], out_dir: str, columns: Sequence[str], stem: str = "results") -> list[str]:
    """results.csv and results.md in out_dir (atomic); returns the paths."""
    paths = [os.path.join(out_dir, f"{stem}.csv"), os.path.join(out_dir, f"{stem}.md")]
    write_text_atomic(paths[0], results_csv(rows, columns))
    write_text_atomic(paths[1], results_markdown(rows, columns))
    return paths
