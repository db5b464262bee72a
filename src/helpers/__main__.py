"""The course's one command line: ``python -m helpers <command>``.

Each subcommand is a thin function over a library call; ``--help`` on any of them
says what it takes.
"""

from __future__ import annotations

import argparse
import json
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


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a chat JSONL file; print its problems and a summary (exit 1: errors, 2: unreadable)."""
    import json

    from helpers import data

    try:
        report = data.validate(args.file)
    except data.DataFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        for problem in report.problems:
            print(problem)
        print(report.summary())
    return 0 if report.ok else 1


def cmd_split(args: argparse.Namespace) -> int:
    """Split a file's valid examples into train/validation/test JSONL files; skip invalid lines."""
    from pathlib import Path

    from helpers import data
    from helpers.paths import display_path

    try:
        report = data.validate(args.file)
        parts = data.split(report.examples, args.ratios, args.seed)
    except (data.DataFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{report.source}: {report.summary()}")
    if report.invalid:
        print(f"skipped {report.invalid} invalid lines (python -m helpers validate shows why)")
    if not report.examples:
        print("error: no valid examples to split", file=sys.stderr)
        return 1
    try:
        for name, part in zip(data.SPLIT_NAMES, parts, strict=True):
            path = data.write_jsonl(part, Path(args.out) / f"{name}.jsonl")
            print(f"{name:<11}{len(part):>6}  {display_path(path)}")
    except OSError as error:
        print(f"error: cannot write to {args.out}: {error}", file=sys.stderr)
        return 2
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Print token statistics (model tokenizer and OpenAI encoding) and an OpenAI cost estimate."""
    import json

    from helpers import data

    openai_model = args.model or data.DEFAULT_OPENAI_MODEL
    try:
        report = data.validate(args.file)
        data.openai_encoding(openai_model)
        tokenizer = models.load_tokenizer(args.hf_model)
    except (data.DataFileError, ValueError, models.ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not report.examples:
        print(f"error: {report.source} has no valid examples", file=sys.stderr)
        return 1
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


def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune headless from a YAML/JSON config; runs the same under torchrun and accelerate."""
    import os

    from helpers.train import load_config, train_from_config

    try:
        config = load_config(args.config)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = train_from_config(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result.summary(), indent=2))
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    """Benchmark the seed article's training pipeline against the course's on this machine."""
    from helpers.bench import bench_train, format_table
    from helpers.data import load_examples
    from helpers.paths import sample_path

    figures = bench_train(
        args.model,
        load_examples(sample_path("customer_service")),
        method=args.method,
        steps=args.steps,
        batch_size=args.batch_size,
        packing=args.packing,
    )
    print(format_table(figures))
    if args.json:
        print(json.dumps(figures))
    return 0


def _aliases(pairs: list[str]) -> dict[str, str]:
    """Parse ``--alias NAME=MODEL`` options into a model-name map."""
    aliases = {}
    for pair in pairs:
        name, sep, target = pair.partition("=")
        if not sep or not name or not target:
            raise SystemExit(f"error: --alias expects NAME=MODEL, got {pair!r}")
        aliases[name] = target
    return aliases


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
        aliases=_aliases(args.alias),
    )
    return 0


def cmd_bench_server(args: argparse.Namespace) -> int:
    """Time chat completions and the notebook's default fine-tuning job on a fresh local server."""
    from helpers.server import benchmark

    figures = benchmark(requests=args.requests, max_tokens=args.max_tokens)
    for name, value in figures.items():
        print(f"{name:<40} {value}")
    return 0


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
        type=float,
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
        "--hf-model",
        default=models.EMBEDDED_MODEL,
        help=f"model whose tokenizer to count with (default {models.EMBEDDED_MODEL})",
    )
    stats.add_argument("--epochs", type=int, help="epochs (default: OpenAI's heuristic)")
    stats.add_argument("--limit", type=int, help="count the examples longer than this")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(func=cmd_stats)

    train = commands.add_parser("train", help="fine-tune from a YAML/JSON config (torchrun-ready)")
    train.add_argument("config", help="config file: model, train_file, method, training: {...}")
    train.set_defaults(func=cmd_train)

    bench = commands.add_parser("bench-train", help="seed pipeline vs course pipeline throughput")
    bench.add_argument("--model", default=models.EMBEDDED_MODEL, help="model to train")
    bench.add_argument("--method", choices=["lora", "full"], default="lora")
    bench.add_argument("--steps", type=int, default=6, help="timed optimizer steps per pipeline")
    bench.add_argument("--batch-size", type=int, default=4, help="examples per step")
    bench.add_argument("--packing", action="store_true", help="pack each batch into one row")
    bench.add_argument("--json", action="store_true", help="also print the figures as JSON")
    bench.set_defaults(func=cmd_bench_train)

    serve = commands.add_parser("serve", help="local OpenAI-compatible fine-tuning server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default local)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--api-key", help="the key clients must send (default $FINETUNE_COURSE_API_KEY, or new)"
    )
    serve.add_argument("--data-dir", help="files, jobs and models (default $CACHE/server)")
    serve.add_argument(
        "--max-steps", type=int, help="cap every job's training steps (tests, short workshops)"
    )
    serve.add_argument(
        "--max-upload-mb", type=float, default=100.0, help="largest upload (default 100 MB)"
    )
    serve.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="serve model NAME with a local MODEL (OpenAI names map to the embedded model)",
    )
    serve.set_defaults(func=cmd_serve)

    bench_server = commands.add_parser(
        "bench-server", help="chat latency and the default job's wall time on the local server"
    )
    bench_server.add_argument("--requests", type=int, default=10, help="timed chat requests")
    bench_server.add_argument("--max-tokens", type=int, default=64, help="new tokens per request")
    bench_server.set_defaults(func=cmd_bench_server)

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
