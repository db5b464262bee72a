"""An offline install bundle for a room of laptops: wheels, the converted model, the source.

``python -m helpers bundle`` writes, by default into ``runs/bundle/``::

    install.sh            bash install.sh [FOLDER]: unpack, install offline, restore the model
    README.txt            what is here and how to use it
    requirements.txt      the pinned versions of this environment (the wheels below)
    finetune-course.tar.gz  the repository at HEAD (git archive): notebooks, data, helpers
    wheels/               a wheel for each requirement, plus pip, setuptools and wheel
    model/<name>/         the converted embedded model, copied into the laptop's cache

The wheels fit laptops with the same system, CPU architecture and Python version as the
machine that built them; install.sh checks that before installing anything.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from helpers import models
from helpers.paths import PROJECT_NAME, display_path, from_root, repo_root

DEFAULT_OUT = "runs/bundle"
SOURCE = f"{PROJECT_NAME}.tar.gz"
# What a bundle folder holds: a rebuild replaces these and nothing else.
PARTS = ("wheels", "model", SOURCE, "install.sh", "README.txt", "requirements.txt")
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
)


class BundleError(RuntimeError):
    """The bundle could not be built; the message says why and what to do."""


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
    embedded, _, _ = models.EMBEDDED_PACKAGE.partition("==")
    pins.setdefault(canonicalize_name(embedded), models.EMBEDDED_PACKAGE)
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
        what = f"pip wheel failed (exit status {result.returncode})"
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


def prepared_model() -> Path:
    """Return the converted embedded model's folder; raise BundleError if it is not prepared."""
    source = models.embedded_model_dir()
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


def _platform() -> str:
    """Return what the wheels fit, as install.sh checks it: ``3.11 Linux x86_64``."""
    import platform

    return f"{sys.version_info[0]}.{sys.version_info[1]} {platform.system()} {platform.machine()}"


INSTALL_SH = r"""#!/usr/bin/env bash
# Install finetune-course from this bundle with no network: bash install.sh [FOLDER]
# Unpacks the course into FOLDER (default ./finetune-course), runs the Makefile's own setup
# with pip reading only wheels/, and copies the converted model into the cache.
set -euo pipefail
BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="${1:-finetune-course}"
PYTHON="${PYTHON:-python3}"
WANT="@PLATFORM@"

fail() { echo "install.sh: error: $*" >&2; exit 1; }
command -v "$PYTHON" >/dev/null ||
    fail "$PYTHON not found: install Python $WANT (or: PYTHON=/path/to/python bash install.sh)"
command -v make >/dev/null || fail "make not found: install it (Debian/Ubuntu: apt install make)"
HAVE="$("$PYTHON" -c 'import platform as p, sys; v = sys.version_info
print(f"{v[0]}.{v[1]} {p.system()} {p.machine()}")')"
[ "$HAVE" = "$WANT" ] || fail "the wheels are for Python $WANT and $PYTHON is $HAVE: \
name a matching Python (PYTHON=... bash install.sh) or build the bundle on a laptop like this"
if [ -e "$TARGET" ] && [ -n "$(ls -A "$TARGET")" ]; then
    fail "$TARGET exists and is not empty: remove it or name another folder"
fi
mkdir -p "$TARGET"
tar -xzf "$BUNDLE/@SOURCE@" -C "$TARGET"
cd "$TARGET"

echo "Installing from $BUNDLE/wheels (no network)..."
export PIP_NO_INDEX=1 PIP_FIND_LINKS="$BUNDLE/wheels" PIP_CONFIG_FILE=/dev/null
export PIP_DISABLE_PIP_VERSION_CHECK=1
make setup PYTHON="$PYTHON" TORCH_SPEC="@TORCH_SPEC@"

MODEL_DIR="$(.venv/bin/python -c 'from helpers import models
print(models.embedded_model_dir())')"
if [ ! -f "$MODEL_DIR/config.json" ]; then
    echo "Copying the converted model into $MODEL_DIR..."
    mkdir -p "$(dirname "$MODEL_DIR")"
    rm -rf "$MODEL_DIR.partial"
    cp -R "$BUNDLE/model/@MODEL@" "$MODEL_DIR.partial"
    mv "$MODEL_DIR.partial" "$MODEL_DIR"
fi
.venv/bin/python -m helpers info
echo
echo "Installed in $(pwd). Next: cd $TARGET && make lab   (or: make workshop)"
"""

README_TXT = """finetune-course offline bundle (commit @COMMIT@, built @DATE@)

On each laptop, with no network:

    bash install.sh [FOLDER]      # default FOLDER: ./finetune-course
    cd FOLDER && make lab         # or: make workshop

The laptop needs bash, make and Python @PLATFORM@ with its venv module:
the wheels were built for that (if python3 is another version: PYTHON=/path/to/it bash install.sh).
install.sh unpacks @SOURCE@ into FOLDER, runs the Makefile's setup with
PIP_NO_INDEX=1 and PIP_FIND_LINKS=wheels/ (pip never reaches an index), registers the
Jupyter kernel and copies model/@MODEL@ into the model cache
($FINETUNE_COURSE_CACHE, default ~/.cache/finetune-course), so nothing is converted again.

requirements.txt lists the pinned versions the wheels hold.
"""


def _fill(template: str, **values: str) -> str:
    """Replace each ``@KEY@`` in ``template`` with its value."""
    for key, value in values.items():
        template = template.replace(f"@{key.upper()}@", value)
    return template


def install_script(torch_spec: str) -> str:
    """Return install.sh: check the Python, unpack, ``make setup`` offline, restore the model."""
    return _fill(
        INSTALL_SH,
        platform=_platform(),
        source=SOURCE,
        torch_spec=torch_spec,
        model=models.EMBEDDED_MODEL,
    )


def _size(path: Path) -> str:
    """Return a folder's or file's size as ``1,234 MB`` (or ``12 kB``)."""
    size = models.folder_size(path)
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
    (out / "README.txt").write_text(
        _fill(
            README_TXT,
            commit=commit[:12],
            date=time.strftime("%Y-%m-%d"),
            platform=_platform(),
            source=SOURCE,
            model=models.EMBEDDED_MODEL,
        )
    )

    for name in PARTS:
        print(f"  {name:<24} {_size(out / name):>10}")
    print(f"Bundle: {display_path(out)}, {_size(out)} in {time.perf_counter() - start:.0f} s")
    print(f"On each laptop: bash {display_path(out)}/install.sh [FOLDER] (no network needed)")
    if _git("status", "--porcelain", "--untracked-files=no"):
        print(f"Note: the source is commit {commit[:12]}; uncommitted changes are not in it.")
    return out
