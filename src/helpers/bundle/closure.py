"""What a target needs: the project's requirements and theirs, with the target's own markers.

pip evaluates environment markers for the machine it runs on, even with ``--platform`` (pip
issue 6117): run on Linux, it would leave out ``pywinpty`` and ``appnope`` and add Linux-only
wheels. ``walk`` follows ``Requires-Dist`` through the wheels' own metadata instead, evaluating
each marker for the target, and pins each name to this environment's version where that fits.
Given ``fetch`` it asks pip for what the folder lacks, round by round; without it, it only
reports what is missing, which is the kit's offline check.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from email.parser import HeaderParser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from helpers.bundle.targets import Target

Fetch = Callable[[list[str], Target], None]


def applies(req: Requirement, target: Target, extras: set[str]) -> bool:
    """Tell whether ``req`` holds on ``target`` for a package asked with ``extras``."""
    if req.marker is None:
        return True
    env = target.markers()
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in {"", *extras})


def _metadata(path: Path):
    """Return a wheel's METADATA headers."""
    with zipfile.ZipFile(path) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        return HeaderParser().parsestr(wheel.read(name).decode("utf-8"))


def fits_python(path: Path, target: Target) -> bool:
    """Tell whether a wheel's Requires-Python admits every release of the target's Python."""
    spec = SpecifierSet(_metadata(path).get("Requires-Python") or "")
    return spec.contains(target.markers()["python_full_version"], prereleases=True)


def find_wheel(folder: Path, req: Requirement, target: Target, python=True) -> Path | None:
    """Return the newest wheel in ``folder`` that meets ``req`` and installs on ``target``.

    With ``python``, only a wheel whose Requires-Python admits the target's ``x.y.0``.
    """
    supported, found = target.supported(), []
    for path in folder.glob("*.whl"):
        name, version, _, wheel_tags = parse_wheel_filename(path.name)
        fits = name == canonicalize_name(req.name) and wheel_tags & supported
        if fits and req.specifier.contains(version, prereleases=True):
            found.append((version, path))
    for _, path in sorted(found, reverse=True):
        if not python or fits_python(path, target):
            return path
    return None


def wheel_requires(path: Path) -> list[Requirement]:
    """Return a wheel's ``Requires-Dist`` entries, read from its METADATA."""
    return [Requirement(text) for text in _metadata(path).get_all("Requires-Dist") or []]


def fetch_fitting(req: Requirement, target: Target, folder: Path, fetch: Fetch) -> Path | None:
    """Fetch the newest release meeting ``req`` whose Requires-Python fits the target.

    pip does not always know a release's Requires-Python before downloading it (a find-links
    folder does not say), so each release that does not fit is excluded and pip asked again.
    """
    name, spec = canonicalize_name(req.name), SpecifierSet(str(req.specifier))
    for _ in range(5):
        fetch([f"{name}{spec}"], target)
        if wheel := find_wheel(folder, Requirement(f"{name}{spec}"), target):
            return wheel
        newest = find_wheel(folder, Requirement(f"{name}{spec}"), target, python=False)
        if newest is None:
            return None
        spec &= SpecifierSet(f"!={parse_wheel_filename(newest.name)[1]}")
    return None


def pin(req: Requirement, pins: dict[str, str], target: Target) -> str:
    """Return what to ask pip for: this environment's version if it meets ``req``, else ``req``."""
    name = canonicalize_name(req.name)
    version = pins.get(name)
    if version is None or not req.specifier.contains(version, prereleases=True):
        return f"{name}{req.specifier}"
    if name == "torch":  # the public version, plus the CPU build's label where that matters
        local = target.platform.torch_local
        version = Version(version).public + (f"+{local}" if local else "")
    return f"{name}=={version}"


def walk(
    roots: list[Requirement],
    target: Target,
    folder: Path,
    pins: dict[str, str],
    fetch: Fetch | None = None,
) -> tuple[dict[str, Path], list[str]]:
    """Return the wheel ``target`` installs for each name it needs, and what is missing."""
    chosen: dict[str, Path] = {}
    asked: dict[str, Requirement] = {}
    done: set[tuple[str, str]] = set()
    problems: list[str] = []
    todo = [(r, "the project") for r in roots if applies(r, target, set())]
    while todo:
        new = {canonicalize_name(r.name): r for r, _ in todo}
        new = {name: r for name, r in new.items() if name not in asked}
        if fetch and new:
            fetch([pin(r, pins, target) for r in new.values()], target)
        asked |= new
        following = []
        for req, parent in todo:
            name = canonicalize_name(req.name)
            wheel = chosen.get(name) or find_wheel(
                folder, Requirement(pin(req, pins, target)), target
            )
            wheel = wheel or find_wheel(folder, req, target)
            if wheel is None and fetch:
                wheel = fetch_fitting(req, target, folder, fetch)
            if wheel is None:
                problems.append(f"{req} (needed by {parent}): no wheel for {target.name}")
                continue
            chosen[name] = wheel
            if not req.specifier.contains(parse_wheel_filename(wheel.name)[1], prereleases=True):
                problems.append(f"{req} (needed by {parent}): the kit has {wheel.name}")
            extras = {e for e in {"", *req.extras} if (name, e) not in done}
            done |= {(name, e) for e in extras}
            if extras:
                following += [
                    (r, name) for r in wheel_requires(wheel) if applies(r, target, extras - {""})
                ]
        todo = following
    return chosen, sorted(set(problems))
