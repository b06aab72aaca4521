"""The one markdown-table writer of reports.

    markdown_table(["policy", "MiB"], [["none", 12.5], ["dots", 3.25]])
    records_table([{"policy": "none", "MiB": 12.5}], columns=["policy", "MiB"])

Cells go through `fmt` (default `format_cell`: floats to 4 significant digits, None as "-");
pipes inside cells are escaped so a cell never splits a row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any


def format_cell(value: Any) -> str:
    """Default cell text: floats with 4 significant digits, None as '-', the rest as str."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]],
                   fmt: Callable[[Any], str] = format_cell) -> str:
    """A GitHub-markdown table (ending in a newline) of `rows`, each as long as `header`."""
    escape = lambda text: str(text).replace("|", "\\|")
    lines = ["| " + " | ".join(escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"row {row} has {len(row)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(escape(fmt(cell)) for cell in row) + " |")
    return "\n".join(lines) + "\n"


def records_table(records: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                  fmt: Callable[[Any], str] = format_cell, missing: Any = "") -> str:
    """`markdown_table` of dict rows: `columns` (default: the first record's keys) in order;
    a key a record lacks is shown as `missing`. No records: an empty string."""
    if not records:
        return ""
    columns = list(records[0]) if columns is None else list(columns)
    return markdown_table(columns, ([r.get(c, missing) for c in columns] for r in records), fmt)
