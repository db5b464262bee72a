"""Generated blocks in a Markdown document, between ``<!-- report:NAME -->`` and its closing
``<!-- /report:NAME -->``, each marker on a line of its own. Another tool's blocks carry
another prefix (``<!-- hosted:NAME -->``, :mod:`helpers.report.hosted`): each sees only its own.

:func:`read_blocks` returns each block's current text (its kept columns live there) and
:func:`replace_blocks` writes new text between the markers, leaving everything else as it
is. A blank line separates each marker from the block's text, so Markdown renders a table
inside a block as a table. A marker out of place is a one-line error naming its line.
"""

from __future__ import annotations

import re

from helpers.report import ReportError


def marker(prefix: str = "report") -> re.Pattern:
    """Return the pattern of a block's opening or closing marker line for ``prefix``."""
    return re.compile(rf"^<!-- (/?){re.escape(prefix)}:([A-Za-z0-9_-]+) -->\s*$")


def spans(text: str, source: str, prefix: str = "report") -> list[tuple[str, int, int]]:
    """Return (name, first line inside, closing marker line) for each block, 0-based."""
    found, open_name, open_line, seen = [], None, 0, set()
    pattern = marker(prefix)
    for number, line in enumerate(text.splitlines()):
        match = pattern.match(line)
        if not match:
            continue
        closing, name = match[1] == "/", match[2]
        where = f"{source}: line {number + 1}"
        if not closing and open_name is not None:
            raise ReportError(f"{where}: {prefix}:{name} opens inside {prefix}:{open_name}")
        if closing and name != open_name:
            raise ReportError(f"{where}: /{prefix}:{name} closes no open {prefix}:{name}")
        if not closing and name in seen:
            raise ReportError(f"{where}: a second block {prefix}:{name}")
        if closing:
            found.append((name, open_line + 1, number))
            open_name = None
        else:
            open_name, open_line = name, number
            seen.add(name)
    if open_name is not None:
        raise ReportError(f"{source}: line {open_line + 1}: {prefix}:{open_name} is never closed")
    return found


def read_blocks(text: str, source: str = "document", prefix: str = "report") -> dict[str, str]:
    """Return each block's current text by name, without the blank lines around it."""
    lines = text.splitlines()
    return {
        name: "\n".join(lines[first:end]).strip("\n")
        for name, first, end in spans(text, source, prefix)
    }


def replace_blocks(
    text: str, contents: dict[str, str], source: str = "document", prefix: str = "report"
) -> str:
    """Return ``text`` with each block's text replaced by ``contents[name]``.

    Every block in the text must have new contents, and every name in ``contents`` a block.
    """
    found = spans(text, source, prefix)
    names = [name for name, _, _ in found]
    unknown = [name for name in names if name not in contents]
    if unknown:
        raise ReportError(
            f"{source}: unknown block {prefix}:{unknown[0]} (known: {', '.join(contents)})"
        )
    absent = [name for name in contents if name not in names]
    if absent:
        raise ReportError(
            f"{source} has no block {prefix}:{absent[0]}: add the lines "
            f"<!-- {prefix}:{absent[0]} --> and <!-- /{prefix}:{absent[0]} --> where it belongs"
        )
    lines = text.splitlines()
    out, position = [], 0
    for name, first, end in found:
        out += lines[position:first]
        out += ["", *contents[name].strip("\n").splitlines(), ""]
        position = end
    out += lines[position:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")
