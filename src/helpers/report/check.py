"""``report --check``: say which block differs from the runs, and at which figure.

For each block whose committed text is not what the report would write, one line names the
document, the block and its first difference: in a table the row and the column with both
cells; elsewhere the line number and the first words that differ.
"""

from __future__ import annotations

from itertools import zip_longest

from helpers.report.blocks import read_blocks, spans
from helpers.report.tables import split_row


def _table_header(lines: list[str], index: int) -> list[str] | None:
    """Return the header of the table that line ``index`` belongs to (None if no table)."""
    start = index
    while start > 0 and lines[start - 1].lstrip().startswith("|"):
        start -= 1
    return split_row(lines[start]) if lines[index].lstrip().startswith("|") else None


def _words(line: str, other: str) -> tuple[str, str]:
    """Return a few words of each line, from just before their first difference."""
    a, b = line.split(), other.split()
    first = next((i for i, (x, y) in enumerate(zip_longest(a, b)) if x != y), 0)
    start = max(first - 3, 0)
    return " ".join(a[start : first + 3]), " ".join(b[start : first + 3])


def first_difference(committed: str, generated: str) -> tuple[int, str]:
    """Return (line index in the block, what differs) for two texts of one block."""
    old, new = committed.splitlines(), generated.splitlines()
    for index, (a, b) in enumerate(zip_longest(old, new, fillvalue="")):
        if a == b:
            continue
        header = _table_header(new, index) if index < len(new) else None
        cells_a, cells_b = split_row(a), split_row(b)
        same_shape = len(cells_a) == len(cells_b) == len(header or [])
        column = next(
            (i for i, (x, y) in enumerate(zip(cells_a, cells_b, strict=False)) if x != y), None
        )
        if header and a.lstrip().startswith("|") and same_shape and column is not None:
            return index, (
                f"row {cells_b[0]!r}, column {header[column]!r}: {cells_a[column]!r} committed, "
                f"{cells_b[column]!r} from the metrics"
            )
        shown_a, shown_b = _words(a, b)
        return index, f"{shown_a!r} committed, {shown_b!r} from the metrics"
    return 0, "the same text"


def differences(text: str, new: str, source: str) -> list[str]:
    """Return one line per block of ``text`` that differs from the same block in ``new``."""
    committed, generated = read_blocks(text, source), read_blocks(new, source)
    starts = {name: first for name, first, _ in spans(text, source)}
    lines = text.splitlines()
    found = []
    for name, block in committed.items():
        if block == generated.get(name, block):
            continue
        index, what = first_difference(block, generated[name])
        first = starts[name]
        while first < len(lines) and not lines[first].strip():
            first += 1  # the blank lines before the block's text
        found.append(f"{source}:{first + index + 1}: block report:{name} differs: {what}")
    return found
