"""Batch runs: execute notebooks with papermill over a parameter grid and collect their metrics.

Every notebook writes ``metrics.json`` into its ``output_dir`` parameter; a batch
gives each run its own folder under ``runs/<timestamp>/`` and gathers those files
into one results table (``summary.csv``).
"""

from __future__ import annotations

import itertools
import json
import time
import traceback
from pathlib import Path

import pandas as pd

from helpers.paths import display_path, notebooks_dir, output_dir


def find_notebooks() -> list[Path]:
    """Return the course notebooks in order (``notebooks/NN_*.ipynb``)."""
    return sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))


def expand_grid(grid: dict[str, list]) -> list[dict]:
    """Return every combination of a parameter grid, ``{"r": [4, 8]} -> [{"r": 4}, {"r": 8}]``."""
    names = list(grid)
    return [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(grid[name] for name in names))
    ]


def run_name(notebook: Path, parameters: dict) -> str:
    """Return a folder name for one run: the notebook stem plus its grid values."""
    suffix = "-".join(f"{key}={value}" for key, value in parameters.items())
    name = f"{notebook.stem}-{suffix}" if suffix else notebook.stem
    return "".join(c if c.isalnum() or c in "-_=." else "_" for c in name)


def run_notebook(notebook: Path, run_dir: Path, parameters: dict | None = None) -> dict:
    """Execute one notebook with papermill into ``run_dir``; return its status, time and metrics."""
    import papermill

    run_dir.mkdir(parents=True, exist_ok=True)
    parameters = {**(parameters or {}), "output_dir": str(run_dir)}
    start = time.perf_counter()
    row = {"notebook": notebook.name, **{k: v for k, v in parameters.items() if k != "output_dir"}}
    try:
        papermill.execute_notebook(
            str(notebook),
            str(run_dir / notebook.name),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(notebook.parent),
            progress_bar=False,
        )
        row["status"] = "ok"
    except Exception as error:  # a failed run is reported in the table, the batch goes on
        row["status"] = "failed"
        row["error"] = str(error).strip().splitlines()[-1][:200] if str(error) else repr(error)
        (run_dir / "error.txt").write_text(traceback.format_exc())
    row["seconds"] = round(time.perf_counter() - start, 1)
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))})
    row["run_dir"] = display_path(run_dir)
    return row


def run_batch(
    notebooks: list[Path], grid: dict[str, list] | None = None, out_root: Path | None = None
) -> pd.DataFrame:
    """Run each notebook for every grid combination; save and return the results table."""
    out_root = output_dir(out_root)
    rows = []
    for notebook in notebooks:
        for parameters in expand_grid(grid or {}):
            run_dir = out_root / run_name(notebook, parameters)
            print(
                f"running {notebook.name} {parameters or '(defaults)'} -> {display_path(run_dir)}",
                flush=True,
            )
            rows.append(run_notebook(notebook, run_dir, parameters))
            print(f"  {rows[-1]['status']} in {rows[-1]['seconds']} s", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out_root / "summary.csv", index=False)
    return table
