"""Strip what must not be committed from an executed notebook: machine paths and the host name.

Text outputs (streams, plain text, HTML, Markdown, tracebacks) get the repository's
absolute path replaced by ``.``, the cache folder by ``$CACHE``, the home folder by ``~``
and the host name by ``<host>``; papermill's metadata keeps file names only. Images and
other binary outputs are left alone. Widget progress bars become text (:mod:`.progress`), so
a static page shows them.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import nbformat

from helpers.batch.progress import widgets_to_text
from helpers.paths import cache_dir, repo_root

TEXT_TYPES = ("text/plain", "text/html", "text/markdown")


def replacements() -> list[tuple[re.Pattern, str]]:
    """Return (pattern, replacement) pairs, the longest paths first."""
    paths = [(str(repo_root()), "."), (str(cache_dir()), "$CACHE"), (str(Path.home()), "~")]
    pairs = [
        (re.compile(re.escape(path) + r"(?=[/\\\s'\"]|$)"), label)
        for path, label in sorted(paths, key=lambda pair: -len(pair[0]))
        if len(path) > 1
    ]
    host = socket.gethostname()
    if host:
        pairs.append((re.compile(rf"(?<![\w.-]){re.escape(host)}(?![\w-])"), "<host>"))
    return pairs


def scrub_text(text: str, pairs: list[tuple[re.Pattern, str]]) -> str:
    """Return ``text`` with every machine path and the host name replaced."""
    for pattern, label in pairs:
        text = pattern.sub(label, text)
    return text


def _scrub(value, pairs):
    """Scrub a string or a list of strings (notebook JSON keeps text in either form)."""
    if isinstance(value, list):
        return [scrub_text(v, pairs) for v in value]
    return scrub_text(value, pairs)


def scrub_notebook(path: str | Path) -> int:
    """Scrub a notebook file in place; return how many outputs changed."""
    notebook = nbformat.read(path, as_version=4)
    pairs, changed = replacements(), widgets_to_text(notebook)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            before = repr(output)
            if "text" in output:
                output["text"] = _scrub(output["text"], pairs)
            for kind in TEXT_TYPES:
                if kind in output.get("data", {}):
                    output["data"][kind] = _scrub(output["data"][kind], pairs)
            if "traceback" in output:
                output["traceback"] = _scrub(output["traceback"], pairs)
            changed += repr(output) != before
    papermill = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if papermill.get(key):
            papermill[key] = Path(papermill[key]).name
    nbformat.write(notebook, path)
    return changed
