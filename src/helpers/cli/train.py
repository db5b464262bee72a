"""``train``: fine-tune headless from a YAML/JSON config (also under torchrun and accelerate)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from helpers.cli import user_error


def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune headless from a YAML/JSON config; runs the same under torchrun and accelerate."""
    from helpers.cli.train_config import load_config, train_from_config

    try:
        config = load_config(args.config)  # checked before the model loads
    except ValueError as error:  # ConfigError, a ValueError, says which file and field
        return user_error(error)
    result = train_from_config(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.summary(), indent=2))
        limit = config["max_seq_length"]
        _print_examples(f"truncated to max_seq_length={limit} tokens", result, "truncated_examples")
        _print_examples("dropped, nothing left to train on", result, "dropped_examples")
    return 0


def _print_examples(what: str, result, field: str) -> None:
    """Print one line on stderr naming the train examples (1-based) in a result's ``field``."""
    numbers = getattr(result, field, [])
    if numbers:
        print(f"{what}: train examples {', '.join(map(str, numbers))}", file=sys.stderr)


def add_commands(commands) -> None:
    """Register ``train``."""
    train = commands.add_parser("train", help="fine-tune from a YAML/JSON config (torchrun-ready)")
    train.add_argument("config", help="config file: model, train_file, method, training: {...}")
    train.set_defaults(func=cmd_train)
