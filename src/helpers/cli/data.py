"""``validate``, ``split`` and ``stats``: a chat fine-tuning JSONL file, checked and measured."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from helpers.cli import user_error
from helpers.cli.args import positive_int, ratio


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a chat JSONL file; print its problems and a summary (exit 1: errors, 2: unreadable)."""
    from helpers import data

    report = data.validate(args.file)  # DataFileError: main prints it, exit 2
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        for problem in report.problems:
            print(problem)
        print(report.summary())
    return 0 if report.ok else 1


def cmd_split(args: argparse.Namespace) -> int:
    """Split a file's valid examples into train/validation/test JSONL files; skip invalid lines."""
    from helpers import data
    from helpers.paths import display_path

    report = data.validate(args.file)  # for the summary; split_file keeps the same examples
    if not report.examples:
        print(f"error: {report.source} has no valid examples to split", file=sys.stderr)
        return 1
    with warnings.catch_warnings():  # the summary below says what was skipped
        warnings.simplefilter("ignore", UserWarning)
        try:
            paths = data.split_file(args.file, args.out, args.ratios, args.seed)
        except ValueError as error:  # the ratios
            return user_error(error)
    print(f"{report.source}: {report.summary()}")
    if report.invalid:
        print(f"skipped {report.invalid} invalid lines (python -m helpers validate shows why)")
    for name, path in paths.items():
        count = path.read_text(encoding="utf-8").count("\n")  # one example per line
        print(f"{name:<11}{count:>6}  {display_path(path)}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Print token statistics (model tokenizer and OpenAI encoding) and an OpenAI cost estimate."""
    from helpers import data

    openai_model = args.model or data.DEFAULT_OPENAI_MODEL
    try:
        data.openai_encoding(openai_model)
    except ValueError as error:  # a model whose encoding is unknown
        return user_error(error)
    report = data.validate(args.file)
    if not report.examples:
        print(f"error: {report.source} has no valid examples", file=sys.stderr)
        return 1
    from helpers import models

    tokenizer = models.load_tokenizer(args.hf_model or models.EMBEDDED_MODEL)
    stats = data.token_stats(report.examples, tokenizer, openai_model, args.limit)
    try:
        cost, note = data.estimate_cost(stats["openai"]["counts"], openai_model, args.epochs), ""
    except ValueError as error:
        cost, note = None, f"no cost estimate: {error}"
    if args.json:
        for figures in (stats["openai"], stats["tokenizer"]):
            figures.pop("counts")
        summary = {"source": report.source, "skipped_invalid": report.invalid, **stats}
        print(json.dumps({**summary, "cost": cost, "prices_as_of": data.PRICES_AS_OF}))
        return 0
    skipped = f" ({report.invalid} invalid lines skipped)" if report.invalid else ""
    print(f"{report.source}{skipped}")
    print(data.describe_stats(stats, cost))
    if note:
        print(note)
    return 0


def add_commands(commands) -> None:
    """Register ``validate``, ``split`` and ``stats``."""
    check = commands.add_parser("validate", help="check a chat fine-tuning JSONL file")
    check.add_argument("file", help="the JSONL file")
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")
    check.set_defaults(func=cmd_validate)

    cut = commands.add_parser("split", help="split a JSONL file into train/validation/test")
    cut.add_argument("file", help="the JSONL file")
    cut.add_argument("--out", required=True, help="folder for train/validation/test.jsonl")
    cut.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    cut.add_argument(
        "--ratios",
        type=ratio,
        nargs=3,
        default=[0.8, 0.1, 0.1],
        metavar=("TRAIN", "VALIDATION", "TEST"),
        help="split ratios summing to 1 (default 0.8 0.1 0.1)",
    )
    cut.set_defaults(func=cmd_split)

    stats = commands.add_parser("stats", help="token statistics and an OpenAI cost estimate")
    stats.add_argument("file", help="the JSONL file")
    stats.add_argument("--model", help="OpenAI model (default gpt-4o-mini-2024-07-18)")
    stats.add_argument(
        "--hf-model", help="model whose tokenizer to count with (default: the embedded model)"
    )
    stats.add_argument("--epochs", type=positive_int, help="epochs (default: OpenAI's heuristic)")
    stats.add_argument("--limit", type=positive_int, help="count the examples longer than this")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(func=cmd_stats)
