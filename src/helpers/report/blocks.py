"""Generated blocks in a Markdown document, between ``<!-- report:NAME -->`` and its closing
``<!-- /report:NAME -->``, each marker on a line of its own.

:func:`read_blocks` returns each block's current text (its kept columns live there) and
:func:`replace_blocks` writes new text between the markers, leaving everything else as it
is. A blank line separates each marker from the block's text, so Markdown renders a table
inside a block as a table. A marker out of place is a one-line error naming its line.
"""

from __future__ import annotations

import re

from helpers.report import ReportError

MARKER = re.compile(r"^<!-- (/?)report:([A-Za-z0-9_-]+) -->\s*$")


def spans(text: str, source: str) -> list[tuple[str, int, int]]:
    """Return (name, first line inside, closing marker line) for each block, 0-based."""
    found, open_name, open_line, seen = [], None, 0, set()
    for number, line in enumerate(text.splitlines()):
        match = MARKER.match(line)
        if not match:
            continue
        closing, name = match[1] == "/", match[2]
        where = f"{source}: line {number + 1}"
        if not closing and open_name is not None:
            raise ReportError(f"{where}: report:{name} opens inside report:{open_name}")
        if closing and name != open_name:
            raise ReportError(f"{where}: /report:{name} closes no open report:{name}")
        if not closing and name in seen:
            raise ReportError(f"{where}: a second block report:{name}")
        if closing:
            found.append((name, open_line + 1, number))
            open_name = None
        else:
            open_name, open_line = name, number
            seen.add(name)
    if open_name is not None:
        raise ReportError(f"{source}: line {open_line + 1}: report:{open_name} is never closed")
    return found


def read_blocks(text: str, source: str = "document") -> dict[str, str]:
    """Return each block's current text by name, without the blank lines around it."""
    lines = text.splitlines()
    return {
        name: "\n".join(lines[first:end]).strip("\n") for name, first, end in spans(text, source)
    }


def replace_blocks(text: str, contents: dict[str, str], source: str = "document") -> str:
    """Return ``text`` with each block's text replaced by ``contents[name]``.

    Every block in the text must have new contents, and every name in ``contents`` a block.
    """
    found = spans(text, source)
    names = [name for name, _, _ in found]
    unknown = [name for name in names if name not in contents]
    if unknown:
        raise ReportError(
            f"{source}: unknown block report:{unknown[0]} (known: {', '.join(contents)})"
        )
    absent = [name for name in contents if name not in names]
    if absent:
        raise ReportError(
            f"{source} has no block report:{absent[0]}: add the lines "
            f"<!-- report:{absent[0]} --> and <!-- /report:{absent[0]} --> where it belongs"
        )
    lines = text.splitlines()
    out, position = [], 0
    for name, first, end in found:
        out += lines[position:first]
        out += ["", *contents[name].strip("\n").splitlines(), ""]
        position = end
    out += lines[position:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")
