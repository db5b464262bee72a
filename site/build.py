"""Build the course website into site/_build/html: ``python site/build.py`` (``make site``).

Sphinx reads the repository's root with this folder's ``conf.py``; ``-W --keep-going``
makes every warning (a broken link, a missing page, a widget output) fail the build after
listing them all, and ``-n`` warns about every reference that resolves to nothing. Every
build reads every file (``-E``), so no warning is lost to a saved environment. Prints the
output folder and the seconds the build took.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sphinx.cmd.build import build_main

SITE = Path(__file__).resolve().parent
HTML = SITE / "_build" / "html"
DOCTREES = SITE / "_build" / "doctrees"


def sphinx_arguments() -> list[str]:
    """Return sphinx-build's arguments: HTML, warnings as errors, every reference checked."""
    options = ["-b", "html", "-c", str(SITE), "-d", str(DOCTREES), "-W", "--keep-going", "-n", "-E"]
    return [*options, "-q", str(SITE.parent), str(HTML)]


def main() -> int:
    """Build the site; return sphinx-build's exit status."""
    started = time.monotonic()
    status = build_main(sphinx_arguments())
    seconds = time.monotonic() - started
    outcome = "built" if status == 0 else "FAILED (the warnings above)"
    print(f"site: {HTML} {outcome} in {seconds:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
