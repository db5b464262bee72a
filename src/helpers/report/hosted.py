"""Keep the notebooks' install cell and the README's Colab links in step with :mod:`helpers.hosted`.

Each notebook ``notebooks/NN_*.ipynb`` carries the install cell as its first code cell, tagged
``hosted-install``; the README carries one "Open in Colab" link per notebook between
``<!-- hosted:colab-links -->`` and ``<!-- /hosted:colab-links -->`` (the report's block
mechanism, :mod:`helpers.report.blocks`, with its own prefix). :func:`write` rewrites what is
out of date; :func:`check` names it.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from helpers.hosted import CELL_TAG, colab_links, install_cell_source
from helpers.report.blocks import read_blocks, replace_blocks
from helpers.report.collect import notebooks

README = Path("README.md")
PREFIX = "hosted"
BLOCK = "colab-links"


def _code_cells(notebook) -> list:
    """Return a notebook's code cells."""
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _tagged(cell) -> bool:
    """Tell whether a cell is the install cell."""
    return CELL_TAG in cell.get("metadata", {}).get("tags", [])


def cell_is_current(notebook, source: str) -> bool:
    """Tell whether the install cell is the first code cell, once, with ``source``."""
    tagged = [cell for cell in notebook.cells if _tagged(cell)]
    code = _code_cells(notebook)
    return len(tagged) == 1 and bool(code) and code[0] is tagged[0] and code[0].source == source


def with_install_cell(notebook, source: str, stem: str):
    """Put the install cell first among the code cells (others tagged so are dropped)."""
    kept = [cell for cell in notebook.cells if not _tagged(cell)]
    cell = nbformat.v4.new_code_cell(source, id=f"nb{stem[:2]}-hosted")
    cell.metadata["tags"] = [CELL_TAG]
    first = next((i for i, c in enumerate(kept) if c.cell_type == "code"), len(kept))
    notebook.cells = [*kept[:first], cell, *kept[first:]]
    return notebook


def readme_text(root: Path) -> tuple[str, str]:
    """Return the README as it is and with its Colab links rebuilt."""
    text = (root / README).read_text(encoding="utf-8")
    links = colab_links([path.name for path in notebooks(root)])
    return text, replace_blocks(text, {BLOCK: links}, str(README), PREFIX)


def stale(root: str | Path) -> list[str]:
    """Return one line per notebook or README block that differs from what :func:`write` writes."""
    root, source = Path(root), install_cell_source()
    found = [
        f"{path.relative_to(root)}: its first code cell is not the current install cell"
        for path in notebooks(root)
        if not cell_is_current(nbformat.read(path, as_version=4), source)
    ]
    text, new = readme_text(root)
    if read_blocks(text, str(README), PREFIX) != read_blocks(new, str(README), PREFIX):
        found.append(f"{README}: the block {PREFIX}:{BLOCK} differs from the notebooks' links")
    return found


def write(root: str | Path) -> list[Path]:
    """Rewrite each stale install cell and the README's links; return the files changed."""
    root, source, changed = Path(root), install_cell_source(), []
    for path in notebooks(root):
        notebook = nbformat.read(path, as_version=4)
        if not cell_is_current(notebook, source):
            nbformat.write(with_install_cell(notebook, source, path.stem), path)
            changed.append(path.relative_to(root))
    text, new = readme_text(root)
    if new != text:
        (root / README).write_text(new, encoding="utf-8")
        changed.append(README)
    return changed
