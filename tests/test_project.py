"""The project's own wiring: dependencies agree, paths resolve, the command line answers."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from helpers import models, paths

ROOT = Path(__file__).resolve().parents[1]


def _normalise(requirement: str) -> str:
    return requirement.replace(" ", "").lower()


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict)]
    assert len(pip_lists) == 1, "environment.yml needs exactly one pip: section"
    mirrored = [r for r in pip_lists[0] if not r.startswith("-e")]
    assert sorted(map(_normalise, mirrored)) == sorted(map(_normalise, wanted))
    assert "-e .[dev]" in pip_lists[0]


def test_repo_root_is_found_from_any_working_directory(tmp_path):
    code = (
        "from helpers.paths import repo_root, sample_path as s; print(repo_root()); print(s('x'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "FINETUNE_COURSE_ROOT"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert Path(out[0]) == ROOT
    assert Path(out[1]) == ROOT / "data" / "samples" / "x.jsonl"


def test_output_dir_resolves_relative_paths_from_the_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FINETUNE_COURSE_ROOT", str(tmp_path / "repo"))
    made = paths.output_dir("runs/demo")
    assert made == tmp_path / "repo" / "runs" / "demo" and made.is_dir()
    assert paths.output_dir().parent == tmp_path / "repo" / "runs"


def test_cache_dir_follows_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("FINETUNE_COURSE_CACHE", str(tmp_path / "c"))
    assert paths.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FINETUNE_COURSE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "finetune-course"


def test_display_path_never_shows_machine_paths():
    assert paths.display_path(ROOT / "data" / "samples" / "a.jsonl") == "data/samples/a.jsonl"
    assert paths.display_path(paths.cache_dir() / "models") == "$CACHE/models"
    assert not paths.display_path(Path.home() / "elsewhere").startswith("/")


@pytest.mark.slow  # starts the command line in a subprocess
def test_cli_info_reports_device_and_cache():
    result = subprocess.run(
        [sys.executable, "-m", "helpers", "info"], capture_output=True, text=True, check=True
    )
    # The best device of this machine: CUDA and Apple MPS users run the tests too.
    assert f"device        {models.pick_device()}" in result.stdout.splitlines()
    assert str(paths.cache_dir()) in result.stdout
    assert "transformers" in result.stdout
