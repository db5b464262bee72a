"""Batch runs: notebooks executed by papermill over a parameter grid, in parallel, with resume.

- ``grid``: read a grid, check it against a notebook's ``parameters`` cell, expand it;
- ``run``: one run in its own process and folder (``run.json``, ``run.log``, metrics);
- ``pool``: plan the runs, skip finished ones, run the rest on a local pool or a Dask cluster;
- ``results``: the results table (CSV, Markdown), the comparison plot, the short summary;
- ``scrub``: strip machine paths from executed notebooks before they are committed.
"""

from __future__ import annotations

from pathlib import Path

from helpers.paths import notebooks_dir


def find_notebooks() -> list[Path]:
    """Return the course notebooks in order (``notebooks/NN_*.ipynb``)."""
    return sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
