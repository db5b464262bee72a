"""The course's one command line: ``python -m helpers <command>``.

Each subcommand is a thin function over a library call; ``--help`` on any of them
says what it takes.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from importlib import metadata

from helpers import models
from helpers.paths import cache_dir

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "datasets",
    "accelerate",
    "openai",
    "papermill",
    "nbval",
    "jupyterlab",
    "fastapi",
)


def cmd_info(args: argparse.Namespace) -> int:
    """Print versions, device, precision and cache; with ``--timing``, time a model reload."""
    print(f"python        {platform.python_version()} ({platform.machine()})")
    for name in PACKAGES:
        try:
            print(f"{name:<13} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            print(f"{name:<13} not installed")
    device = models.pick_device()
    print(f"device        {device}")
    print(f"bf16          {'yes' if models.use_bf16(device) else 'no'} (mixed precision)")
    print(f"cache         {cache_dir()}")
    folder = models.embedded_model_dir()
    ready = (folder / "config.json").is_file()
    print(
        f"embedded      {models.EMBEDDED_MODEL}: "
        f"{'ready' if ready else 'not prepared yet (python -m helpers prepare-model)'}"
    )
    if args.timing:
        models.prepare_embedded_model()
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            models.load_base_model(models.EMBEDDED_MODEL, device="cpu")
            seconds.append(time.perf_counter() - start)
        print(
            f"reload        {min(seconds):.2f} s best, {max(seconds):.2f} s worst of "
            f"{args.repeats} (model + tokenizer from the converted folder; target < 5 s)"
        )
    return 0


def cmd_prepare_model(args: argparse.Namespace) -> int:
    """Fetch, convert and cache a model; print where it is and how large."""
    try:
        if args.name != models.EMBEDDED_MODEL:
            models.load_base_model(args.name, device="cpu")
            print(f"{args.name}: ready (kept in the Hugging Face cache, HF_HOME)")
            return 0
        folder = models.prepare_embedded_model(force=args.force)
    except models.ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.name}: {folder} ({models.folder_size(folder) / 1e6:.0f} MB)")
    return 0


def _grid(pairs: list[str]) -> dict[str, list]:
    """Parse ``-p name=VALUE`` options (YAML scalars or lists) into a parameter grid."""
    import yaml

    grid = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.isidentifier():
            raise SystemExit(f"error: -p expects NAME=VALUE or NAME=[V1,V2], got {pair!r}")
        value = yaml.safe_load(text)
        grid[name] = value if isinstance(value, list) else [value]
    return grid


def cmd_batch(args: argparse.Namespace) -> int:
    """Run notebooks over a parameter grid with papermill and print the results table."""
    from pathlib import Path

    from helpers import batch

    notebooks = [Path(n).resolve() for n in args.notebooks] or batch.find_notebooks()
    if not notebooks:
        print("No notebooks found in notebooks/ yet.")
        return 0
    table = batch.run_batch(notebooks, _grid(args.param), Path(args.out) if args.out else None)
    print(table.drop(columns=["run_dir"]).to_string(index=False))
    print(f"\nResults: {table['run_dir'].iloc[0].rsplit('/', 1)[0]}/summary.csv")
    return 0 if (table["status"] == "ok").all() else 1


def cmd_workshop(args: argparse.Namespace) -> int:
    """Prepare the embedded model, then run every notebook with its defaults."""
    models.prepare_embedded_model()
    print(f"Embedded model ready: {models.embedded_model_dir()}")
    args.notebooks, args.param = [], []
    return cmd_batch(args)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="versions, device, precision and cache")
    info.add_argument("--timing", action="store_true", help="time reloading the embedded model")
    info.add_argument("--repeats", type=int, default=3, help="reloads to time (default 3)")
    info.set_defaults(func=cmd_info)

    prepare = commands.add_parser("prepare-model", help="fetch, convert and cache a model")
    prepare.add_argument(
        "name",
        nargs="?",
        default=models.EMBEDDED_MODEL,
        help=f"model name (default {models.EMBEDDED_MODEL})",
    )
    prepare.add_argument("--force", action="store_true", help="convert again even if cached")
    prepare.set_defaults(func=cmd_prepare_model)

    run = commands.add_parser("batch", help="run notebooks over a parameter grid (papermill)")
    run.add_argument("notebooks", nargs="*", help="notebooks to run (default: all in notebooks/)")
    run.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter value or YAML list of values; repeat for a grid",
    )
    run.add_argument("--out", help="output folder (default runs/<timestamp>)")
    run.set_defaults(func=cmd_batch)

    workshop = commands.add_parser("workshop", help="prepare the model and run all notebooks")
    workshop.add_argument("--out", help="output folder (default runs/<timestamp>)")
    workshop.set_defaults(func=cmd_workshop)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
