"""Markdown tables whose figures are generated and whose words people keep writing.

A :class:`Table` names its columns and rows. Its ``kept`` columns (what a section does, what
a notebook teaches) are written by people: :func:`render` takes them from the table already
in the block, matching rows by the ``key`` column, so regenerating a block replaces only the
figures. A row the block does not have yet gets the generated text for those columns.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

from helpers.notebook import metric_key

CELL_SPLIT = re.compile(r"(?<!\\)\|")


@dataclass
class Table:
    """A table: header, rows (column -> cell), the key column, the columns people write."""

    columns: list[str]
    rows: list[dict[str, str]]
    key: str
    kept: tuple[str, ...] = ()
    right: tuple[str, ...] = ()  # right-aligned (numeric) columns
    notes: list[str] = field(default_factory=list)  # lines after the table


def paragraph(text: str, indent: str = "") -> str:
    """Return prose wrapped at the documents' width (a bullet's next lines indented)."""
    return textwrap.fill(
        " ".join(text.split()),
        width=94,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def escape(cell: str) -> str:
    """Return text safe inside one Markdown table cell."""
    return " ".join(str(cell).split()).replace("|", r"\|")


def split_row(line: str) -> list[str]:
    """Return the cells of a Markdown table row, stripped (escaped pipes kept)."""
    cells = CELL_SPLIT.split(line.strip())
    if cells and cells[0] == "":
        cells = cells[1:]
    if cells and cells[-1] == "":
        cells = cells[:-1]
    return [cell.strip() for cell in cells]


def parse_table(text: str) -> list[dict[str, str]]:
    """Return the rows of the first Markdown table in ``text`` as column -> cell."""
    lines = [line for line in text.splitlines() if line.lstrip().startswith("|")]
    if len(lines) < 2:
        return []
    header = split_row(lines[0])
    return [dict(zip(header, split_row(line), strict=False)) for line in lines[2:]]


def row_key(cell: str) -> str:
    """Return a row's key as compared across runs: ``What LoRA does`` -> ``what_lora_does``."""
    return metric_key(cell)


def render(table: Table, current: str = "") -> str:
    """Return the table as Markdown, with its kept columns taken from ``current``'s table."""
    before = {row_key(row.get(table.key, "")): row for row in parse_table(current)}
    lines = [
        "| " + " | ".join(table.columns) + " |",
        "|" + "|".join("---:" if c in table.right else "---" for c in table.columns) + "|",
    ]
    for row in table.rows:
        old = before.get(row_key(row.get(table.key, "")), {})
        cells = [
            old[column] if column in table.kept and column in old else escape(row.get(column, ""))
            for column in table.columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for note in table.notes:
        lines += ["", paragraph(note)]
    return "\n".join(lines)
