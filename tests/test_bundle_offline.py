"""A real workshop kit resolves offline for every target, from its own folder alone.

Building a kit downloads gigabytes, so these run only on a kit that exists: build one with
``python -m helpers bundle --room`` and run ``FINETUNE_COURSE_KIT=runs/kit pytest
tests/test_bundle_offline.py``. Each target is checked as ``python -m helpers bundle --check``
does: pip's dry run with ``--no-index --find-links wheels --platform ... --python-version ...``,
the dependency closure under the target's markers, and pip's full resolution where this machine
is the target.
"""

import json
import os

import pytest

from helpers.bundle import check
from helpers.paths import from_root

KIT = (
    from_root(os.environ["FINETUNE_COURSE_KIT"]) if os.environ.get("FINETUNE_COURSE_KIT") else None
)
HAVE_KIT = KIT is not None and (KIT / "requirements").is_dir()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not HAVE_KIT,
        reason="no kit given: build one (python -m helpers bundle --room) and set "
        "FINETUNE_COURSE_KIT to its folder",
    ),
]


@pytest.mark.parametrize(
    "target", check.kit_targets(KIT) if HAVE_KIT else [], ids=lambda target: target.name
)
def test_each_target_resolves_offline_from_the_kit_alone(target):
    passed, problems = check.check_target(KIT, target)
    assert problems == []
    assert {"pip --no-deps", "closure"} <= set(passed)


def test_the_kit_has_every_target_it_was_asked_for():
    manifest = json.loads((KIT / "kit.json").read_text())
    assert manifest["failed"] == {}
