"""The workshop kit's install.sh, install.ps1 and README.txt (``@KEY@`` placeholders)."""

from __future__ import annotations

from helpers import models
from helpers.bundle import SOURCE
from helpers.bundle.templates import RESTORE_MODEL, _fill

INSTALL_SH = r"""#!/usr/bin/env bash
# Install finetune-course from this workshop kit with no network: bash install.sh [FOLDER]
# Works out this laptop's target (platform and Python), unpacks the course into FOLDER (default
# ./finetune-course), runs the Makefile's setup with pip reading only wheels/ and pinned to
# requirements/<target>.txt, and copies the converted model into the cache.
set -euo pipefail
KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="${1:-finetune-course}"
PYTHON="${PYTHON:-python3}"

fail() { echo "install.sh: error: $*" >&2; exit 1; }
case "$(uname -s)" in
    MINGW* | MSYS* | CYGWIN*) fail "native Windows cannot run the course: open WSL2 \
(in PowerShell: wsl --install) and run bash install.sh there (see install.ps1)" ;;
esac
command -v "$PYTHON" >/dev/null ||
    fail "$PYTHON not found: install CPython @PYTHONS@ (or: PYTHON=/path/to/python bash install.sh)"
command -v make >/dev/null ||
    fail "make not found: install it (Debian/Ubuntu: sudo apt install make; \
macOS: xcode-select --install)"
WHO="$("$PYTHON" -c 'import platform as p, sys
s, m, v = p.system().lower(), p.machine().lower(), sys.version_info
m = {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m) if s == "linux" else m
s = {"darwin": "macos"}.get(s, s)
print("%s-%s-py%d.%d" % (s, m, v[0], v[1]))')"
REQS="$KIT/requirements/$WHO.txt"
[ -f "$REQS" ] || fail "this kit has no wheels for $WHO ($PYTHON); it has: \
$(cd "$KIT/requirements" && ls | sed 's/\.txt$//' | tr '\n' ' ')- name a Python it has \
(PYTHON=python3.12 bash install.sh) or ask for a kit built with that target"
if [ -e "$TARGET" ] && [ -n "$(ls -A "$TARGET")" ]; then
    fail "$TARGET exists and is not empty: remove it or name another folder"
fi
mkdir -p "$TARGET"
tar -xzf "$KIT/@SOURCE@" -C "$TARGET"
cd "$TARGET"

echo "Installing $WHO from $KIT/wheels (no network)..."
export PIP_NO_INDEX=1 PIP_FIND_LINKS="$KIT/wheels" PIP_CONSTRAINT="$REQS" PIP_CONFIG_FILE=/dev/null
export PIP_DISABLE_PIP_VERSION_CHECK=1
make setup PYTHON="$PYTHON" TORCH_SPEC="$(grep -i '^torch==' "$REQS")"

@RESTORE_MODEL@.venv/bin/python -m helpers info
echo
echo "Installed in $(pwd). Next: cd $TARGET && make lab   (or: make workshop)"
"""

INSTALL_PS1 = r"""# finetune-course on Windows: the course runs inside WSL2, not on native Windows.
# Native Windows lacks what it needs: bash and make (the installer and every make target),
# os.fork and the resource module (the code sandbox of notebook 02, and the peak-memory
# figures), and bubblewrap or Landlock (Linux kernel features the sandbox confines code with).
$kit = $PSScriptRoot
Write-Host "finetune-course runs on Windows through WSL2 (Windows 10 2004+ or Windows 11)."
Write-Host ""
Write-Host "1. Once, in PowerShell as administrator:  wsl --install -d Ubuntu   (then restart)"
Write-Host "2. In the Ubuntu window:  sudo apt install -y make python3-venv"
if (Get-Command wsl -ErrorAction SilentlyContinue) {
    $linux = (wsl wslpath -a "$kit" 2>$null)
    if ($linux) {
        Write-Host "3. Then, from this kit:  wsl bash $linux/install.sh ~/finetune-course"
        exit 1
    }
}
Write-Host "3. Then, from this kit:  bash /mnt/c/<the kit's folder>/install.sh ~/finetune-course"
exit 1
"""

README_TXT = """finetune-course workshop kit (commit @COMMIT@, built @DATE@)

On each laptop, with no network:

    bash install.sh [FOLDER]      # Linux, macOS, WSL2; default FOLDER: ./finetune-course
    cd FOLDER && make lab         # or: make workshop

Windows: the course runs inside WSL2 (run install.ps1 in PowerShell for the steps).
The laptop needs bash, make and one of the Pythons below with its venv module
(another Python than python3: PYTHON=python3.12 bash install.sh).

Targets (wheels only; the model, @MODEL_SIZE@, and the source are shared):
@TABLE@
requirements/<target>.txt pins what each target installs; wheels/ holds them all once.
install.sh picks the laptop's target, runs the Makefile's setup with PIP_NO_INDEX=1,
PIP_FIND_LINKS=wheels/ and PIP_CONSTRAINT=requirements/<target>.txt, and copies
model/@MODEL@ into the model cache ($FINETUNE_COURSE_CACHE, default ~/.cache/finetune-course).
"""


def kit_install_script(pythons: list[str]) -> str:
    """Return the kit's install.sh: pick the target, ``make setup`` offline, restore the model."""
    script = INSTALL_SH.replace("@RESTORE_MODEL@", RESTORE_MODEL.replace("@FROM@", "$KIT"))
    return _fill(script, pythons=", ".join(pythons), source=SOURCE, model=models.EMBEDDED_MODEL)


def kit_readme(commit: str, date: str, table: str, model_size: str) -> str:
    """Return the kit's README.txt: how to install, and each target's size."""
    return _fill(
        README_TXT,
        commit=commit[:12],
        date=date,
        table=table,
        model_size=model_size,
        model=models.EMBEDDED_MODEL,
    )
