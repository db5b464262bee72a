"""``serve``: the local OpenAI-compatible fine-tuning server, until interrupted."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from helpers.cli.args import port, positive_float, positive_int

# The model names the server answers (helpers.server.catalogue.MODEL_NAME_PATTERN, not
# imported here: it loads torch, and the command line starts fast).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9._:/~-]{1,256}$")


def alias(text: str) -> tuple[str, str]:
    """A ``NAME=MODEL`` pair for ``serve --alias``."""
    name, sep, target = text.partition("=")
    if not sep or not name or not target:
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL, got {text!r}")
    return name, target


def served_model(text: str) -> tuple[str, str]:
    """A ``NAME=DIR`` pair for ``serve --model``: a model folder (config.json and weights)."""
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    if name.startswith("ft:") or not NAME_PATTERN.match(name):
        raise argparse.ArgumentTypeError(
            f"{name!r}: a model name takes letters, digits and . _ : / ~ - (not ft:...)"
        )
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{folder}: no such folder")
    if not (path / "config.json").is_file():
        hint = (
            " it is a LoRA adapter: merge it first (python -m helpers export DIR --out MERGED)"
            if (path / "adapter_config.json").is_file()
            else " expected a model folder as save_pretrained writes it"
        )
        raise argparse.ArgumentTypeError(f"{folder}: no config.json;{hint}")
    return name, str(path)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the local OpenAI-compatible fine-tuning API until interrupted."""
    from helpers.server import run_server

    run_server(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        data_dir=args.data_dir,
        max_steps=args.max_steps,
        max_upload_mb=args.max_upload_mb,
        aliases=dict(args.alias),
        served=dict(args.model),
    )
    return 0


def add_commands(commands) -> None:
    """Register ``serve``."""
    serve = commands.add_parser("serve", help="local OpenAI-compatible fine-tuning server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default local)")
    serve.add_argument("--port", type=port, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--api-key", help="the key clients must send (default $FINETUNE_COURSE_API_KEY, or new)"
    )
    serve.add_argument("--data-dir", help="files, jobs and models (default $CACHE/server)")
    serve.add_argument(
        "--max-steps",
        type=positive_int,
        help="cap every job's training steps (tests, short workshops)",
    )
    serve.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=100.0,
        help="largest upload (default 100 MB)",
    )
    serve.add_argument(
        "--alias",
        action="append",
        type=alias,
        default=[],
        metavar="NAME=MODEL",
        help="serve model NAME with a local MODEL (OpenAI names map to the embedded model)",
    )
    serve.add_argument(
        "--model",
        action="append",
        type=served_model,
        default=[],
        metavar="NAME=DIR",
        help="serve the model folder DIR (e.g. from helpers export) as NAME; repeatable",
    )
    serve.set_defaults(func=cmd_serve)
