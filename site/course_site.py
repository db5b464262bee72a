"""The course website's own build steps (a Sphinx extension loaded by ``conf.py``).

- the README, the landing page, gets the table of contents in course order, so the README
  itself stays as GitHub shows it;
- each lesson gets a box under its title: the notebook to download, its Colab link (from
  :mod:`helpers.hosted`, the one setting) and the papermill command that reruns it;
- a notebook output that shows a Jupyter widget (blank on a static page) is a warning,
  which ``make site`` (``-W``) turns into an error naming the command that fixes it.

Both additions are made to the source as Sphinx reads it (the ``source-read`` event); no
file in the repository is changed.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import nbformat
from sphinx.util import logging

from helpers.hosted import colab_url

logger = logging.getLogger(__name__)

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

TOC = """

```{toctree}
:hidden:
:caption: Lessons
:glob:

notebooks/[0-9][0-9]_*
```

```{toctree}
:hidden:
:caption: Results and teaching

site/scorecard
docs/instructor
data/samples/README
```
"""

RUN_BOX = """:::{{admonition}} Run this lesson
:class: tip

{{download}}`Download {name} <{name}>` and open it in JupyterLab (`make lab`), open it
[in Colab]({colab}) (its first cell installs the course there), or rerun it from the
repository's root with papermill, with its defaults as in the committed run:

```bash
.venv/bin/python -m papermill --cwd notebooks -k python3 \\
    notebooks/{name} runs/{name}
```

Add `-p quick True` to check quickly that every cell runs, or `-p NAME VALUE` to change
any knob of its `parameters` cell (`papermill --help-notebook notebooks/{name}` lists
them). The outputs below are the committed run's, not rerun for this page.
:::
"""


def widget_outputs(notebook: nbformat.NotebookNode) -> int:
    """Return how many outputs of a notebook show a Jupyter widget."""
    return sum(
        WIDGET_VIEW in output.get("data", {})
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


def with_run_box(cells: list, name: str) -> list:
    """Return a notebook's cells with the run box under the title (the first cell's first line)."""
    box = nbformat.v4.new_markdown_cell(RUN_BOX.format(name=name, colab=colab_url(name)))
    first = cells[0] if cells else None
    if first is None or first.cell_type != "markdown" or not first.source.startswith("# "):
        return [box, *cells]
    title, _, rest = first.source.partition("\n")
    head = [nbformat.v4.new_markdown_cell(title), box]
    if rest.strip():
        head.append(nbformat.v4.new_markdown_cell(rest.strip()))
    return head + cells[1:]


def lesson_source(docname: str, text: str) -> str:
    """Return a notebook's JSON with the run box under its title; warn about widgets."""
    notebook = nbformat.reads(text, as_version=4)
    name = PurePosixPath(docname).name + ".ipynb"
    if count := widget_outputs(notebook):
        logger.warning(
            "%d output(s) show a Jupyter widget, blank on a static page: run "
            "`python -m helpers scrub notebooks/%s` (make notebooks does) to turn them into text",
            count,
            name,
            location=docname,
        )
    notebook.cells = with_run_box(notebook.cells, name)
    return nbformat.writes(notebook)


def add_course_parts(app, docname: str, source: list[str]) -> None:
    """Add the table of contents to the landing page and the run box to each lesson."""
    if docname == app.config.root_doc:
        source[0] += TOC
    elif docname.startswith("notebooks/"):
        source[0] = lesson_source(docname, source[0])


def setup(app) -> dict:
    """Register the source-read step."""
    app.connect("source-read", add_course_parts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
