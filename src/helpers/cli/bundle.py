"""``bundle``: the offline install bundle for a room of laptops (wheels, model, source)."""

from __future__ import annotations

import argparse


def cmd_bundle(args: argparse.Namespace) -> int:
    """Build the offline install bundle for a room of laptops: wheels, model, source."""
    from helpers.bundle.build import build_bundle

    build_bundle(args.out)  # BundleError: main prints it, exit 2
    return 0


def add_commands(commands) -> None:
    """Register ``bundle``."""
    pack = commands.add_parser(
        "bundle",
        help="offline install bundle for laptops: wheels, converted model, source",
        description="Write wheels of this environment's exact versions, the converted model "
        "and the repository at HEAD into one folder; copy it to each laptop and run "
        "`bash install.sh` there (no network needed).",
    )
    pack.add_argument("--out", help="output folder (default runs/bundle)")
    pack.set_defaults(func=cmd_bundle)
