"""The platforms a workshop kit serves: names, pip's platform tags and each one's markers.

A target is a platform and a Python version, named like ``linux-x86_64-py3.12``. ``win-amd64``
is served through WSL2 (the course needs bash, make, ``os.fork`` and the ``resource`` module,
none of which native Windows has): it adds the Linux x86_64 wheels and ``install.ps1``, which
sends a Windows learner to WSL2.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from packaging import tags

from helpers.bundle import BundleError

# glibc 2.28 (Debian 10, Ubuntu 18.10, RHEL 8) is the oldest torch's manylinux wheels accept.
GLIBC = (2, 28)
MACOS = (14, 0)  # torch's arm64 wheels are built for macOS 14 (Sonoma) and later
PYTHONS = ("3.11", "3.12", "3.13")
WSL = "win-amd64"


def _manylinux(arch: str) -> tuple[str, ...]:
    """Return pip's platform tags for glibc ``GLIBC`` and older on ``arch``, newest first."""
    names = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC[1], 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    for minor, name in legacy.items():
        if arch == "x86_64" or minor == 17:
            names.insert(names.index(f"manylinux_2_{minor}_{arch}") + 1, f"{name}_{arch}")
    return tuple(names)


@dataclass(frozen=True)
class Platform:
    """One kind of laptop: pip's tags for it, its marker values and its torch build."""

    name: str
    tags: tuple[str, ...]
    sys_platform: str
    system: str
    machine: str
    torch_local: str = ""  # the local build (cpu) where the index's default pulls CUDA

    def markers(self, python: str) -> dict[str, str]:
        """Return the PEP 508 marker environment of this platform with CPython ``python``."""
        return {
            "os_name": "nt" if self.sys_platform == "win32" else "posix",
            "sys_platform": self.sys_platform,
            "platform_system": self.system,
            "platform_machine": self.machine,
            "platform_release": "",
            "platform_version": "",
            "python_version": python,
            "python_full_version": f"{python}.0",
            "implementation_name": "cpython",
            "implementation_version": f"{python}.0",
            "platform_python_implementation": "CPython",
        }


# Linux's CPU build of torch: PyPI's Linux wheels are the CUDA build.
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

PLATFORMS = {
    p.name: p
    for p in (
        Platform("linux-x86_64", _manylinux("x86_64"), "linux", "Linux", "x86_64", "cpu"),
        Platform("linux-aarch64", _manylinux("aarch64"), "linux", "Linux", "aarch64", "cpu"),
        Platform(
            "macos-arm64",
            tuple(tags.mac_platforms(MACOS, "arm64")),
            "darwin",
            "Darwin",
            "arm64",
        ),
    )
}
ROOM = ("linux-x86_64", "linux-aarch64", "macos-arm64", WSL)


@functools.cache
def _supported(platforms: tuple[str, ...], python: str) -> frozenset[tags.Tag]:
    """Return the wheel tags CPython ``python`` installs on ``platforms``."""
    version = tuple(int(part) for part in python.split("."))
    found = set(tags.cpython_tags(version, platforms=platforms))
    found |= set(tags.compatible_tags(version, f"cp{version[0]}{version[1]}", platforms))
    return frozenset(found)


@dataclass(frozen=True)
class Target:
    """A platform and a CPython version: one set of wheels in the kit."""

    platform: Platform
    python: str

    @property
    def name(self) -> str:
        """Return the target's name, as its requirements file and install.sh use it."""
        return f"{self.platform.name}-py{self.python}"

    def markers(self) -> dict[str, str]:
        """Return the marker environment a laptop of this target has."""
        return self.platform.markers(self.python)

    def supported(self) -> frozenset[tags.Tag]:
        """Return the wheel tags a CPython of this target installs."""
        return _supported(self.platform.tags, self.python)

    def pip_options(self) -> list[str]:
        """Return pip's options that make it choose wheels for this target, not this machine."""
        options = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python]
        for tag in self.platform.tags:
            options += ["--platform", tag]
        return options


def _split(text: str, what: str) -> list[str]:
    """Split a comma-separated option into its non-empty items; raise BundleError if none."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise BundleError(f"--{what} names nothing: give a comma-separated list")
    return list(dict.fromkeys(items))


def parse_targets(platforms: str, pythons: str) -> tuple[list[Target], bool]:
    """Return the targets of ``--platforms`` x ``--pythons`` and whether Windows (WSL) is asked."""
    names = _split(platforms, "platforms")
    known = (*PLATFORMS, WSL)
    if unknown := [name for name in names if name not in known]:
        raise BundleError(f"unknown platform {', '.join(unknown)}: choose from {', '.join(known)}")
    versions = _split(pythons, "pythons")
    if wrong := [v for v in versions if v not in PYTHONS]:
        raise BundleError(
            f"--pythons {', '.join(wrong)}: the course supports CPython {', '.join(PYTHONS)}"
        )
    wsl = WSL in names
    wanted = [name for name in names if name != WSL]
    if wsl and "linux-x86_64" not in wanted:
        wanted.append("linux-x86_64")  # what a Windows laptop runs inside WSL2
    return [Target(PLATFORMS[name], v) for name in wanted for v in versions], wsl
