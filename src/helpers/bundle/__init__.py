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

- ``wheels``: pin this environment, check it against pyproject.toml, fetch and check wheels;
- ``templates``: install.sh and README.txt, filled in for this machine;
- ``build``: the model, the source archive and the folder, put together by ``build_bundle``.

With ``--room`` or ``--platforms``/``--pythons``, a workshop kit for a mixed room instead
(``runs/kit/``, see ``kit``): ``targets`` (platforms, pip's tags, markers), ``closure`` (what a
target needs, under its own markers), ``fetch`` (``pip download --platform``), ``kit`` (the
folder), ``kit_templates`` (install.sh, install.ps1, README.txt) and ``check`` (offline check).
"""

from __future__ import annotations

from helpers.paths import PROJECT_NAME

DEFAULT_OUT = "runs/bundle"
SOURCE = f"{PROJECT_NAME}.tar.gz"
# What a bundle folder holds: a rebuild replaces these and nothing else.
PARTS = ("wheels", "model", SOURCE, "install.sh", "README.txt", "requirements.txt")


class BundleError(RuntimeError):
    """The bundle could not be built; the message says why and what to do."""
