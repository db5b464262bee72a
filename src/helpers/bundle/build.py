"""``build_bundle``: the wheels, the converted model, the source and the scripts, in one folder."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from packaging.utils import canonicalize_name

from helpers import model_cache, models
from helpers.bundle import DEFAULT_OUT, PARTS, SOURCE, BundleError
from helpers.bundle.templates import install_script, readme_text
from helpers.bundle.wheels import download_wheels, missing_wheels, requirements, unmet
from helpers.paths import display_path, from_root, repo_root


def prepared_model() -> Path:
    """Return the converted embedded model's folder; raise BundleError if it is not prepared."""
    source = model_cache.embedded_model_dir()
    if not (source / "config.json").is_file():
        raise BundleError(
            f"the embedded model is not prepared yet in {display_path(source)}: "
            "run `python -m helpers prepare-model` (or `make model`) first"
        )
    return source


def copy_model(dest: Path) -> Path:
    """Copy the converted embedded model into ``dest/<name>``; return the copy."""
    target = dest / models.EMBEDDED_MODEL
    shutil.copytree(prepared_model(), target)
    return target


def _git(*args: str) -> str:
    """Run git in the repository and return its output; raise BundleError if it fails."""
    try:
        result = subprocess.run(
            ["git", "-C", str(repo_root()), *args], capture_output=True, text=True
        )
    except FileNotFoundError:
        raise BundleError("the source copy needs git: install it") from None
    if result.returncode != 0:
        raise BundleError(f"git {args[0]} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def write_source(path: Path) -> str:
    """Write ``git archive HEAD`` of the repository to ``path``; return the commit."""
    commit = _git("rev-parse", "HEAD")
    _git("archive", "--format=tar.gz", "-o", str(path), commit)
    return commit


def _size(path: Path) -> str:
    """Return a folder's or file's size as ``1,234 MB`` (or ``12 kB``)."""
    size = model_cache.folder_size(path)
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def build_bundle(out=None, download=download_wheels) -> Path:
    """Write the bundle into ``out`` (default runs/bundle), print its parts and size; return it."""
    start = time.perf_counter()
    out = from_root(out or DEFAULT_OUT)
    if out.exists() and {p.name for p in out.iterdir()} - {*PARTS, "wheels.partial"}:
        raise BundleError(
            f"{display_path(out)} holds more than a bundle: name an empty or new folder"
        )
    prepared_model()  # fail before the long download, not after it
    out.mkdir(parents=True, exist_ok=True)

    reqs = requirements()
    if problems := unmet(reqs, _git("show", "HEAD:pyproject.toml")):
        raise BundleError(
            "this environment lacks what the committed pyproject.toml needs, so the laptops "
            f"could not install it: {'; '.join(problems)}. Run `make setup` (or "
            "`pip install -e '.[dev]'`) first"
        )
    print(f"Fetching {len(reqs)} wheels with pip (the first time, several minutes)...", flush=True)
    partial = out / "wheels.partial"
    shutil.rmtree(partial, ignore_errors=True)
    download(reqs, partial)
    if missing := missing_wheels(reqs, partial):
        raise BundleError(f"pip left no wheel for: {', '.join(missing)}")
    for name in PARTS:  # the previous bundle's, if any
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink(missing_ok=True)
    partial.rename(out / "wheels")
    (out / "requirements.txt").write_text("\n".join(reqs) + "\n")

    copy_model(out / "model")
    commit = write_source(out / SOURCE)
    torch = next((r for r in reqs if canonicalize_name(r.partition("==")[0]) == "torch"), "torch")
    (out / "install.sh").write_text(install_script(torch))
    (out / "install.sh").chmod(0o755)
    (out / "README.txt").write_text(readme_text(commit, time.strftime("%Y-%m-%d")))

    for name in PARTS:
        print(f"  {name:<24} {_size(out / name):>10}")
    print(f"Bundle: {display_path(out)}, {_size(out)} in {time.perf_counter() - start:.0f} s")
    print(f"On each laptop: bash {display_path(out)}/install.sh [FOLDER] (no network needed)")
    if _git("status", "--porcelain", "--untracked-files=no"):
        print(f"Note: the source is commit {commit[:12]}; uncommitted changes are not in it.")
    return out
