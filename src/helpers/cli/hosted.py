"""``hosted``: the notebooks' install cell for Colab and Kaggle, and the README's Colab links."""

from __future__ import annotations

import argparse
import sys


def cmd_hosted(args: argparse.Namespace) -> int:
    """Print the install cell, or write or check (``--write``, ``--check``) notebooks and README."""
    from helpers import hosted
    from helpers.cli import user_error
    from helpers.paths import repo_root
    from helpers.report import ReportError
    from helpers.report import hosted as hosted_docs

    if not (args.write or args.check):
        print(hosted.install_cell_source(), end="")
        return 0
    root = repo_root()
    try:
        if args.write:
            changed = hosted_docs.write(root)
            print("rewritten: " + ", ".join(map(str, changed)) if changed else "all up to date")
            return 0
        found = hosted_docs.stale(root)
    except ReportError as error:
        return user_error(error)
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print(
            "run `python -m helpers hosted --write` (after editing helpers.hosted)", file=sys.stderr
        )
        return 1
    print("notebooks and README: the install cell and the Colab links are up to date")
    return 0


def add_commands(commands) -> None:
    """Register ``hosted``."""
    hosted = commands.add_parser(
        "hosted",
        help="the notebooks' Colab/Kaggle install cell and the README's Colab links",
        description="Without options, print the install cell (helpers.hosted: COURSE_REPO).",
    )
    action = hosted.add_mutually_exclusive_group()
    action.add_argument(
        "--write", action="store_true", help="rewrite the notebooks' first cell and the links"
    )
    action.add_argument(
        "--check", action="store_true", help="exit 1 when a notebook or the README is out of date"
    )
    hosted.set_defaults(func=cmd_hosted)
