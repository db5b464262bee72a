"""Check a kit with no network: does each target resolve from its ``wheels/`` alone?

For each ``requirements/<target>.txt``, three checks, as far as this machine allows:

- pip itself, ``pip install --dry-run --no-index --find-links wheels --platform ...
  --python-version ... --only-binary=:all: --target TMP --no-deps -r requirements``: every
  pinned wheel is in the kit for that platform and Python;
- ``closure.walk`` over the wheels' own metadata, each marker evaluated for the target: every
  dependency of every wheel is pinned and present;
- pip's full resolution (the same command without ``--no-deps``) where this machine has the
  target's system, CPU and Python: pip evaluates markers for the machine it runs on (pip issue
  6117), so elsewhere it would ask a Mac's torch for CUDA libraries.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from packaging.utils import canonicalize_name

from helpers.bundle import SOURCE, BundleError
from helpers.bundle.closure import walk
from helpers.bundle.kit import roots
from helpers.bundle.targets import PLATFORMS, Target


def kit_targets(kit: Path) -> list[Target]:
    """Return the targets a kit has requirements for; raise BundleError if it has none."""
    found = []
    for path in sorted((kit / "requirements").glob("*.txt")):
        name, _, python = path.stem.rpartition("-py")
        if name not in PLATFORMS:
            raise BundleError(f"{path}: not a kit target's name ({', '.join(PLATFORMS)})")
        found.append(Target(PLATFORMS[name], python))
    if not found:
        raise BundleError(f"{kit} holds no requirements/<target>.txt: is it a kit?")
    return found


def kit_pins(kit: Path, target: Target) -> dict[str, str]:
    """Return the versions ``requirements/<target>.txt`` pins, by canonical name."""
    lines = (kit / "requirements" / f"{target.name}.txt").read_text().split()
    return {
        canonicalize_name(name): version for name, _, version in (x.partition("==") for x in lines)
    }


def pip_command(kit: Path, target: Target, dest: Path, python: str, deps: bool) -> list[str]:
    """Return pip's offline dry-run install of ``target`` from the kit into ``dest``."""
    command = [python, "-m", "pip", "install", "--isolated", "--dry-run", "--no-index"]
    command += ["--find-links", str(kit / "wheels"), *target.pip_options(), "--target", str(dest)]
    command += [] if deps else ["--no-deps"]
    return command + ["-r", str(kit / "requirements" / f"{target.name}.txt")]


def native_python(target: Target) -> str | None:
    """Return a Python here that evaluates markers as ``target`` would, or None."""
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    if (sys.platform, machine) != (target.platform.sys_platform, target.platform.machine):
        return None
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == target.python:
        return sys.executable
    return shutil.which(f"python{target.python}")


def _pip(kit: Path, target: Target, python: str, deps: bool) -> str | None:
    """Run the offline dry run; return pip's last error line, or None when it resolves."""
    with tempfile.TemporaryDirectory() as tmp:
        command = pip_command(kit, target, Path(tmp), python, deps)
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        return None
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    return (errors or [result.stderr.strip() or f"exit status {result.returncode}"])[-1]


def check_target(kit: Path, target: Target) -> tuple[list[str], list[str]]:
    """Return the checks ``target`` passed and the problems found."""
    with tarfile.open(kit / SOURCE) as source:
        pyproject = source.extractfile("pyproject.toml").read().decode()
    passed, problems = [], []
    if error := _pip(kit, target, sys.executable, deps=False):
        problems.append(f"pip --no-deps: {error}")
    else:
        passed.append("pip --no-deps")
    _, missing = walk(roots(pyproject), target, kit / "wheels", kit_pins(kit, target))
    problems += [f"closure: {item}" for item in missing]
    passed += [] if missing else ["closure"]
    if python := native_python(target):
        if error := _pip(kit, target, python, deps=True):
            problems.append(f"pip resolution: {error}")
        else:
            passed.append(f"pip resolution ({Path(python).name})")
    return passed, problems


def check_kit(kit: Path) -> dict[str, list[str]]:
    """Check every target of ``kit``, print one line each; return the problems by target."""
    failures = {}
    for target in kit_targets(kit):
        passed, problems = check_target(kit, target)
        verdict = "FAILED: " + "; ".join(problems) if problems else "resolves offline"
        print(f"{target.name:<22} {verdict} ({', '.join(passed) or 'no check passed'})")
        if problems:
            failures[target.name] = problems
    return failures
