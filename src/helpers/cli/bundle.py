"""``bundle``: an offline install bundle for this machine's laptops, or a kit for a mixed room."""

from __future__ import annotations

import argparse


def cmd_bundle(args: argparse.Namespace) -> int:
    """Build the offline bundle for laptops like this one, or a kit for several platforms."""
    from helpers.bundle import BundleError, targets

    if args.check:
        from helpers.bundle.check import check_kit
        from helpers.paths import from_root

        if failures := check_kit(from_root(args.check)):
            raise BundleError(
                f"{len(failures)} target(s) do not resolve offline: {', '.join(failures)}"
            )
        return 0
    if args.room:
        args.platforms = args.platforms or ",".join(targets.ROOM)
        args.pythons = args.pythons or ",".join(targets.PYTHONS)
    if args.platforms or args.pythons:  # BundleError: main prints it, exit 2
        from helpers.bundle.kit import build_kit

        wanted, wsl = targets.parse_targets(
            args.platforms or "linux-x86_64", args.pythons or ",".join(targets.PYTHONS)
        )
        build_kit(args.out, wanted, wsl, args.torch_index)
        return 0
    from helpers.bundle.build import build_bundle

    build_bundle(args.out)
    return 0


def add_commands(commands) -> None:
    """Register ``bundle``."""
    from helpers.bundle.targets import CPU_INDEX, PLATFORMS, PYTHONS, ROOM, WSL

    pack = commands.add_parser(
        "bundle",
        help="offline install bundle for laptops: wheels, converted model, source",
        description="Without options: wheels of this environment's exact versions, the "
        "converted model and the repository at HEAD in one folder, for laptops like this one. "
        "With --platforms/--pythons or --room: a workshop kit with wheels for each platform "
        "and Python (pip download --platform ... --only-binary=:all:), the model once, "
        "install.sh and, for Windows, install.ps1 (which points to WSL2). Copy the folder to "
        "each laptop and run `bash install.sh` there (no network needed).",
    )
    pack.add_argument("--out", help="output folder (default runs/bundle, or runs/kit for a kit)")
    pack.add_argument(
        "--platforms",
        help=f"comma-separated: {', '.join([*PLATFORMS, WSL])} ({WSL}: through WSL2)",
    )
    pack.add_argument("--pythons", help=f"comma-separated CPython versions: {', '.join(PYTHONS)}")
    pack.add_argument(
        "--room",
        action="store_true",
        help=f"a mixed room: --platforms {','.join(ROOM)} --pythons {','.join(PYTHONS)}",
    )
    pack.add_argument(
        "--torch-index",
        default=CPU_INDEX,
        help=f"where Linux's CPU build of torch comes from (default {CPU_INDEX})",
    )
    pack.add_argument(
        "--check",
        metavar="KIT",
        help="check a built kit with no network: each target resolves from its wheels alone",
    )
    pack.set_defaults(func=cmd_bundle)
