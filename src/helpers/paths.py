"""Where things live: the repository, its data, the model cache and run outputs.

Every path in the project is resolved here, so a notebook behaves the same under
JupyterLab, nbval (which runs inside ``notebooks/``) and papermill (which runs in
the caller's folder).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PROJECT_NAME = "finetune-course"


def repo_root() -> Path:
    """Return the repository root: ``$FINETUNE_COURSE_ROOT`` or the folder holding our pyproject."""
    if env := os.environ.get("FINETUNE_COURSE_ROOT"):
        return Path(env).resolve()
    for folder in Path(__file__).resolve().parents:
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and f'name = "{PROJECT_NAME}"' in pyproject.read_text("utf-8"):
            return folder
    return Path.cwd()


def data_dir() -> Path:
    """Return the repository's ``data/`` folder."""
    return repo_root() / "data"


def samples_dir() -> Path:
    """Return the folder of sample datasets, ``data/samples/``."""
    return data_dir() / "samples"


def sample_path(name: str) -> Path:
    """Return the path of a sample file; a bare name gets ``.jsonl`` appended."""
    path = samples_dir() / name
    return path if path.suffix else path.with_suffix(".jsonl")


def notebooks_dir() -> Path:
    """Return the repository's ``notebooks/`` folder."""
    return repo_root() / "notebooks"


def cache_dir() -> Path:
    """Return the cache for converted models: ``$FINETUNE_COURSE_CACHE`` or the user cache."""
    if env := os.environ.get("FINETUNE_COURSE_CACHE"):
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / PROJECT_NAME


def runs_dir() -> Path:
    """Return the default parent folder of run outputs, ``runs/`` (git-ignored)."""
    return repo_root() / "runs"


def from_root(path: str | os.PathLike) -> Path:
    """Return ``path`` as given if absolute, else relative to the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else repo_root() / path


def output_dir(path: str | os.PathLike | None = None) -> Path:
    """Create and return a run folder (default ``runs/<timestamp>``); relative to the repo root."""
    if path is None:
        path = runs_dir() / time.strftime("%Y%m%d-%H%M%S")
    path = from_root(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def display_path(path: str | os.PathLike) -> str:
    """Return a path relative to the repo root, cache or ``~``: never a machine path."""
    path = Path(path).resolve()
    for base, label in ((repo_root(), ""), (cache_dir(), "$CACHE/"), (Path.home(), "~/")):
        try:
            relative = path.relative_to(base)
        except ValueError:
            continue
        return f"{label}{relative.as_posix()}" if relative.parts else (label.rstrip("/") or ".")
    return path.as_posix()
