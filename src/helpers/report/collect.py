"""The committed snapshot of each canonical run: ``notebooks/metrics/<notebook stem>.json``.

A run writes ``metrics.json`` into its ``output_dir`` under ``runs/`` (git-ignored). After
``make notebooks`` has run a notebook with its defaults, :func:`collect` copies that file
into ``notebooks/metrics/``, wrapped with what the report needs from the executed notebook
itself: papermill's duration of the whole run and the section names in order (metrics.json
keeps its keys sorted, so the order of the sections is read from ``timer.section`` calls).
:func:`load_runs` reads the snapshots back, one per notebook, each checked on the way in.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from helpers.report import ReportError

METRICS_DIR = Path("notebooks") / "metrics"
# The same notebooks run where training is fp32 (PyTorch capped at AVX2, ``size="small"``):
# ``make notebooks-avx2`` collects those runs here.
AVX2_DIR = METRICS_DIR / "avx2"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
SECTION_CALL = re.compile(r"""timer\.section\(\s*(["'])(.+?)\1\s*\)""")


@dataclass(frozen=True)
class Run:
    """One canonical run: its notebook, papermill's seconds, its sections and its metrics."""

    notebook: str  # the notebook's stem, e.g. 03_lora_peft
    seconds: float  # papermill's duration of the whole run
    sections: tuple[str, ...]  # "1. Data preparation", ... in the notebook's order
    metrics: dict = field(default_factory=dict)  # the run's metrics.json, claims included
    source: str = ""  # the snapshot's path, for messages


def default_output_dir(notebook: Path) -> str:
    """Return the default of a notebook's ``output_dir`` parameter (its parameters cell)."""
    from papermill.inspection import inspect_notebook

    try:
        parameters = inspect_notebook(str(notebook))
    except ValueError as error:  # no kernel name, no parameters cell
        raise ReportError(f"{notebook}: cannot read its parameters ({error})") from None
    if "output_dir" not in parameters:
        raise ReportError(f"{notebook}: its parameters cell has no output_dir")
    default = parameters["output_dir"]["default"]
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, str):
        raise ReportError(f"{notebook}: output_dir's default is not a string literal: {default}")
    return value


def section_names(notebook) -> tuple[str, ...]:
    """Return the names a notebook gives ``timer.section(...)``, in the order of its cells."""
    names = []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            names += [match[1] for match in SECTION_CALL.findall(cell.source)]
    return tuple(dict.fromkeys(names))


def _papermill_run(notebook_path: Path, notebook) -> dict:
    """Return the executed notebook's papermill metadata, checked: a finished run."""
    run = notebook.metadata.get("papermill") or {}
    if not isinstance(run.get("duration"), int | float):
        raise ReportError(
            f"{notebook_path}: no papermill run in its metadata: run it with `make notebooks`"
        )
    if run.get("exception"):
        raise ReportError(f"{notebook_path}: its last papermill run failed: rerun it")
    return run


def collect(
    notebook_path: str | Path,
    root: str | Path,
    output_dir: str | Path | None = None,
    into: Path = METRICS_DIR,
) -> Path:
    """Copy the metrics.json of an executed notebook's run into ``into``; return the snapshot.

    ``output_dir``: where that run wrote (default: the notebook's own ``output_dir`` default).
    """
    import nbformat

    root, notebook_path = Path(root), Path(notebook_path)
    notebook = nbformat.read(notebook_path, as_version=4)
    run = _papermill_run(notebook_path, notebook)
    output_dir = Path(output_dir or default_output_dir(notebook_path))
    source = (output_dir if output_dir.is_absolute() else root / output_dir) / "metrics.json"
    shown = output_dir / "metrics.json"
    if not source.is_file():
        raise ReportError(f"{shown} is missing: {notebook_path.name}'s run wrote no metrics")
    started = run.get("start_time")
    if started and source.stat().st_mtime < datetime.fromisoformat(started).timestamp():
        raise ReportError(
            f"{shown} is older than {notebook_path.name}'s run (started {started}): "
            "that run did not write it"
        )
    metrics = _read_json(source, shown)
    record = {
        "notebook": notebook_path.name,
        "papermill_seconds": round(float(run["duration"]), 3),
        "sections": list(section_names(notebook)),
        "metrics": metrics,
    }
    target = root / into / f"{notebook_path.stem}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def _read_json(path: Path, shown: Path | str) -> dict:
    """Return a JSON object from a file; anything else is a one-line ReportError."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ReportError(f"{shown}: not valid JSON (line {error.lineno}: {error.msg})") from None
    except UnicodeDecodeError:
        raise ReportError(f"{shown}: not a text file") from None
    if not isinstance(value, dict):
        raise ReportError(f"{shown}: expected a JSON object, got {type(value).__name__}")
    return value


def read_run(path: Path, shown: Path | str) -> Run:
    """Return one snapshot as a :class:`Run`; a missing or malformed file is a ReportError."""
    if not path.is_file():
        raise ReportError(
            f"{shown} is missing: run `make notebooks` (or, after a canonical run, "
            f"`python -m helpers report --collect notebooks/{Path(shown).stem}.ipynb`)"
        )
    record = _read_json(path, shown)
    expected = {"papermill_seconds": (int, float), "sections": list, "metrics": dict}
    for key, kind in expected.items():
        if not isinstance(record.get(key), kind):
            raise ReportError(
                f"{shown}: not a collected run ({key!r} missing or of the wrong type): "
                "write it with `python -m helpers report --collect`"
            )
    return Run(
        notebook=Path(shown).stem,
        seconds=float(record["papermill_seconds"]),
        sections=tuple(map(str, record["sections"])),
        metrics=record["metrics"],
        source=str(shown),
    )


def notebooks(root: str | Path) -> list[Path]:
    """Return the course's notebooks (``notebooks/NN_*.ipynb``), in order."""
    return sorted((Path(root) / "notebooks").glob(NOTEBOOK_GLOB))


def load_runs(root: str | Path) -> dict[str, Run]:
    """Return every notebook's committed run, by stem; each notebook must have one."""
    root = Path(root)
    found = notebooks(root)
    if not found:
        raise ReportError(f"no notebooks in {root / 'notebooks'}")
    return {
        path.stem: read_run(
            root / METRICS_DIR / f"{path.stem}.json", METRICS_DIR / f"{path.stem}.json"
        )
        for path in found
    }


def load_avx2_runs(root: str | Path) -> dict[str, Run]:
    """Return the notebooks' runs on the fp32 path (``make notebooks-avx2``) that exist."""
    root = Path(root)
    return {
        path.stem: read_run(root / AVX2_DIR / f"{path.stem}.json", AVX2_DIR / f"{path.stem}.json")
        for path in notebooks(root)
        if (root / AVX2_DIR / f"{path.stem}.json").is_file()
    }
