"""Which blocks each document holds, and writing or checking them all.

``README.md``: ``notebooks`` (the notebook table's measured columns) and ``scorecard`` (the
claims scorecard). ``docs/instructor.md``: ``course-plan``, ``estimates``, ``run-times`` and
per notebook NN ``sections-NN`` (seconds per section) and ``figures-NN`` (what learners
will see, in figures). Each block is built from ``notebooks/metrics/*.json`` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from helpers.report import ReportError
from helpers.report.blocks import read_blocks, replace_blocks
from helpers.report.check import differences
from helpers.report.collect import load_avx2_runs, load_runs
from helpers.report.figures import NOTEBOOKS
from helpers.report.notebooks import (
    course_plan,
    estimates,
    readme_table,
    run_figures,
    run_times,
    sections,
)
from helpers.report.scorecard import scorecard
from helpers.report.tables import Table, render
from helpers.report.values import Figures

README = Path("README.md")
GUIDE = Path("docs") / "instructor.md"

Builder = Callable[[dict[str, Figures]], "Table | str"]


def readme_builders(figures: dict[str, Figures]) -> dict[str, Builder]:
    """Return the README's blocks by name."""
    runs = {stem: f.run for stem, f in figures.items()}
    return {"notebooks": readme_table, "scorecard": lambda _: scorecard(runs, "notebooks/")}


def guide_builders(figures: dict[str, Figures]) -> dict[str, Builder]:
    """Return the instructor's guide's blocks by name."""
    builders: dict[str, Builder] = {
        "course-plan": course_plan,
        "estimates": estimates,
        "run-times": run_times,
    }
    for stem, f in figures.items():
        builders[f"sections-{stem[:2]}"] = lambda _, f=f: sections(f)
        if stem in NOTEBOOKS:
            builders[f"figures-{stem[:2]}"] = lambda _, f=f, stem=stem: NOTEBOOKS[stem].results(f)
    return builders


DOCUMENTS = {README: readme_builders, GUIDE: guide_builders}


@dataclass
class Rendered:
    """A document as it is and as the report writes it."""

    path: Path
    text: str
    new: str
    warnings: list[str] = field(default_factory=list)


def render_document(root: Path, path: Path, figures: dict[str, Figures]) -> Rendered:
    """Return a document with its blocks rebuilt from the runs (its kept columns as written)."""
    file = root / path
    if not file.is_file():
        raise ReportError(f"{path} is missing")
    text = file.read_text(encoding="utf-8")
    current = read_blocks(text, str(path))
    contents = {}
    for name, build in DOCUMENTS[path](figures).items():
        built = build(figures)
        contents[name] = render(built, current.get(name, "")) if isinstance(built, Table) else built
    return Rendered(path, text, replace_blocks(text, contents, str(path)))


def render_all(root: str | Path) -> tuple[list[Rendered], list[str]]:
    """Return every document rendered from ``notebooks/metrics/``, and the figures missing."""
    root = Path(root)
    figures = run_figures(load_runs(root), load_avx2_runs(root))
    rendered = [render_document(root, path, figures) for path in DOCUMENTS]
    missing = [
        f"{f.run.source} has no figure {key!r}: the documents show n/a"
        for f in figures.values()
        for key in dict.fromkeys(f.missing)
    ]
    return rendered, missing


def write_report(root: str | Path) -> tuple[list[Path], list[str]]:
    """Rewrite the documents' blocks; return the documents changed and the missing figures."""
    rendered, missing = render_all(root)
    changed = []
    for document in rendered:
        if document.new != document.text:
            (Path(root) / document.path).write_text(document.new, encoding="utf-8")
            changed.append(document.path)
    return changed, missing


def check_report(root: str | Path) -> list[str]:
    """Return one line per block whose committed text differs from what the report writes."""
    found = []
    for document in render_all(root)[0]:
        found += differences(document.text, document.new, str(document.path))
    return found
