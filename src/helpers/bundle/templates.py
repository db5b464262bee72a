"""The bundle's install.sh and README.txt, filled in for this machine (``@KEY@`` placeholders)."""

from __future__ import annotations

import platform
import sys

from helpers import models
from helpers.bundle import SOURCE


def _platform() -> str:
    """Return what the wheels fit, as install.sh checks it: ``3.11 Linux x86_64``."""
    return f"{sys.version_info[0]}.{sys.version_info[1]} {platform.system()} {platform.machine()}"


# Both install scripts end the same way: copy the converted model into the cache unless it
# is there; @FROM@ is the folder holding model/ (the bundle's or the kit's).
RESTORE_MODEL = r"""MODEL_DIR="$(.venv/bin/python -c 'from helpers import model_cache
print(model_cache.embedded_model_dir())')"
if [ ! -f "$MODEL_DIR/config.json" ]; then
    echo "Copying the converted model into $MODEL_DIR..."
    mkdir -p "$(dirname "$MODEL_DIR")"
    rm -rf "$MODEL_DIR.partial"
    cp -R "@FROM@/model/@MODEL@" "$MODEL_DIR.partial"
    mv "$MODEL_DIR.partial" "$MODEL_DIR"
fi
"""

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

@RESTORE_MODEL@.venv/bin/python -m helpers info
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
        INSTALL_SH.replace("@RESTORE_MODEL@", RESTORE_MODEL.replace("@FROM@", "$BUNDLE")),
        platform=_platform(),
        source=SOURCE,
        torch_spec=torch_spec,
        model=models.EMBEDDED_MODEL,
    )


def readme_text(commit: str, date: str) -> str:
    """Return README.txt: what the bundle holds and how to install it on a laptop."""
    return _fill(
        README_TXT,
        commit=commit[:12],
        date=date,
        platform=_platform(),
        source=SOURCE,
        model=models.EMBEDDED_MODEL,
    )
