"""Fetch wheels for another platform: ``pip download --platform ... --only-binary=:all:``.

Each call is ``--no-deps`` on an exact list (``closure.walk`` decides what a target needs).
Linux's torch comes from the PyTorch CPU index: PyPI's Linux wheels of torch are CUDA builds
that pull several gigabytes of NVIDIA libraries. A pure-Python package published only as a
source archive is built here once into a ``py3-none-any`` wheel, which every target shares.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from helpers.bundle import BundleError
from helpers.bundle.closure import Fetch
from helpers.bundle.targets import CPU_INDEX, Target
from helpers.bundle.wheels import _pip_error, _pip_wheel

NOT_FOUND = r"No matching distribution found for (\S+)"


def download_command(reqs: list[str], target: Target, dest: Path, *options: str) -> list[str]:
    """Return pip's command line that downloads exactly ``reqs`` for ``target`` into ``dest``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "off"]
    command += ["--dest", str(dest), *target.pip_options(), *options]
    return command + reqs


def _run(command: list[str]) -> subprocess.CompletedProcess:
    """Run one pip command, capturing its output."""
    return subprocess.run(command, capture_output=True, text=True)


def is_pure(name: str) -> bool:
    """Tell whether the installed distribution ``name`` is pure Python (one wheel fits all)."""
    try:
        wheel = metadata.distribution(name).read_text("WHEEL") or ""
    except metadata.PackageNotFoundError:
        return False
    return "Root-Is-Purelib: true" in wheel


def _build_pure(failed: list[str], dest: Path) -> bool:
    """Build a wheel here of each failed requirement that is pure Python; tell if all were."""
    if not all(is_pure(_name(req)) for req in failed):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        result = _pip_wheel(failed, Path(tmp))
        if result.returncode != 0:
            raise BundleError(_pip_error(result))
        for path in Path(tmp).glob("*.whl"):
            path.replace(dest / path.name)
    return True


def _name(req: str) -> str:
    """Return the canonical name of a requirement such as ``rouge-score==0.1.2``."""
    return canonicalize_name(re.split(r"[=<>!~ ;\[]", req, maxsplit=1)[0])


def download(reqs: list[str], target: Target, dest: Path, *options: str, run=_run) -> None:
    """Download ``reqs`` for ``target``; build pure-Python sdists; raise BundleError on failure."""
    while reqs:
        result = run(download_command(reqs, target, dest, *options))
        if result.returncode == 0:
            return
        failed = {_name(req) for req in re.findall(NOT_FOUND, result.stderr)}
        retry = [r for r in reqs if _name(r) not in failed]
        if (
            not failed
            or len(retry) == len(reqs)
            or not _build_pure([r for r in reqs if _name(r) in failed], dest)
        ):
            raise BundleError(f"{target.name}: {_pip_error(result)}")
        reqs = retry


def fetcher(dest: Path, torch_index: str = CPU_INDEX, run=_run) -> Fetch:
    """Return a ``closure.Fetch`` that downloads into ``dest``, torch's CPU build from its index."""

    def fetch(reqs: list[str], target: Target) -> None:
        """Download ``reqs`` for ``target``; on Linux, torch from ``torch_index`` alone.

        Only that index (``--index-url``, not ``--extra-index-url``): any torch request,
        pinned or not, then gets a CPU build and never PyPI's CUDA one.
        """
        cpu = bool(target.platform.torch_local)
        torch = [r for r in reqs if cpu and _name(r) == "torch"]
        download([r for r in reqs if r not in torch], target, dest, run=run)
        try:
            download(torch, target, dest, "--index-url", torch_index, run=run)
        except BundleError as error:
            raise BundleError(
                f"{error} (the CPU build comes from {torch_index}: check that this machine "
                "reaches it, or name a mirror with --torch-index)"
            ) from None

    return fetch
