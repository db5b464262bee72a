"""The course's one command line: ``python -m helpers <command>``.

Each subcommand is a thin function over a library call; ``--help`` on any of them
says what it takes.

Bad input never ends in a traceback. Numbers are checked by argparse (``type=``
functions below): it prints the usage and one line, exit status 2. Errors that are the
user's to fix (a data file or config that cannot be used, a model that cannot be
loaded, a file or folder named on the command line that is missing or unreadable)
print one line ``error: ...`` on stderr, exit status 2. Anything else is a bug in the
course: it is not hidden, Python prints its traceback (exit status 1); please report it.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

from helpers.paths import cache_dir

# The library's errors that are the user's to fix, as (module, class): main prints them in
# one line. Looked up only in modules already imported, so the command line starts fast.
USER_ERRORS = (
    ("helpers.data", "DataFileError"),
    ("helpers.models", "ModelLoadError"),
    ("helpers.config", "ConfigError"),
    ("helpers.batch.grid", "GridError"),
)
# Filesystem errors on a path the user named (they carry its name): one line, exit 2.
FILE_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)

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


# --- argument types: each returns the value or raises ArgumentTypeError ----------------------


def _number(kind: type, text: str):
    """Parse an int or a finite float, or raise ArgumentTypeError saying what was expected."""
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port(text: str) -> int:
    """A TCP port number, 1 to 65535."""
    value = _number(int, text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port must be between 1 and 65535, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number greater than 0."""
    value = _number(float, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def ratio(text: str) -> float:
    """A split ratio: a number from 0 to 1 (the three must sum to 1, checked by data.split)."""
    value = _number(float, text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a ratio must be between 0 and 1, got {text}")
    return value


def existing_file(text: str) -> Path:
    """A path to an existing file."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file")
    return path


def alias(text: str) -> tuple[str, str]:
    """A ``NAME=MODEL`` pair for ``serve --alias``."""
    name, sep, target = text.partition("=")
    if not sep or not name or not target:
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL, got {text!r}")
    return name, target


def grid_param(text: str) -> tuple[str, object]:
    """A ``NAME=VALUE`` or ``NAME=[V1,V2]`` batch parameter (a YAML value; a list sweeps)."""
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE or NAME=[V1,V2], got {text!r}")
    try:
        value = yaml.safe_load(value)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or error
        raise argparse.ArgumentTypeError(
            f"{text!r}: the value is not valid YAML ({problem})"
        ) from None
    return name, value


def _user_errors() -> tuple[type[Exception], ...]:
    """Return the classes of USER_ERRORS whose modules are imported (others cannot have raised)."""
    found = (getattr(sys.modules.get(module), name, None) for module, name in USER_ERRORS)
    return tuple(error for error in found if error is not None)


def _error(error: BaseException) -> int:
    """Print one ``error: ...`` line for a user's error and return exit status 2."""
    if isinstance(error, FileExistsError):  # from mkdir: a file where a folder should be
        message = f"{error.filename} exists and is not a folder"
    elif isinstance(error, OSError) and error.filename is not None:
        message = f"{error.filename}: {error.strerror or error}"
    else:
        message = str(error) or type(error).__name__
    print(f"error: {message}", file=sys.stderr)
    return 2


# --- commands ---------------------------------------------------------------------------


# What a CPU's class means for the README's notebook times (two columns, one per class).
CPU_CLASS_NOTE = {
    True: "bf16 in hardware: the README's fast-CPU times",
    False: "no bf16 in hardware: the README's AVX2-only times",
}


def cmd_info(args: argparse.Namespace) -> int:
    """Print versions, device, precision and cache; with ``--timing``, time a model reload."""
    from helpers import models

    print(f"python        {platform.python_version()} ({platform.machine()})")
    for name in PACKAGES:
        try:
            print(f"{name:<13} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            print(f"{name:<13} not installed")
    device = models.pick_device()
    print(f"device        {device}")
    print(f"cpu           {models.cpu_description()} ({CPU_CLASS_NOTE[models.cpu_has_bf16()]})")
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
    from helpers import models

    name = args.name or models.EMBEDDED_MODEL
    if name != models.EMBEDDED_MODEL:
        models.load_base_model(name, device="cpu")
        print(f"{name}: ready (kept in the Hugging Face cache, HF_HOME)")
        return 0
    folder = models.prepare_embedded_model(force=args.force)
    print(f"{name}: {folder} ({models.folder_size(folder) / 1e6:.0f} MB)")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    """Run notebooks over a parameter grid (parallel, resumable) and print the results table."""
    from helpers.batch import find_notebooks, pool
    from helpers.batch.grid import load_grid
    from helpers.batch.results import results_table, short_table
    from helpers.paths import display_path, output_dir

    notebooks = [n.resolve() for n in args.notebooks] or find_notebooks()
    if not notebooks:
        print("No notebooks found in notebooks/ yet.")
        return 0
    grid = load_grid(args.grid) if args.grid else {}
    grid.update(dict(args.param))  # -p wins over the grid file
    out = output_dir(args.out)
    show = tuple(args.show)
    runs, written = pool.run_grid(notebooks, grid, out, args.jobs, args.scheduler, show)
    swept = list(dict.fromkeys(name for run in runs for name in run.swept))
    table = short_table(results_table(runs), swept, show)
    print(table.to_string(index=False, max_colwidth=28))
    print("\nResults: " + ", ".join(display_path(path) for path in written))
    return 0 if all(run.record.get("status") == "ok" for run in runs) else 1


def cmd_workshop(args: argparse.Namespace) -> int:
    """Prepare the embedded model, then run every notebook with its defaults, one at a time."""
    from helpers import models
    from helpers.paths import output_dir

    out = output_dir(args.out)  # a bad --out fails now, not after preparing the model
    models.prepare_embedded_model()
    print(f"Embedded model ready: {models.embedded_model_dir()}")
    args.notebooks, args.param, args.grid, args.out = [], [], None, out
    args.jobs, args.scheduler, args.show = args.jobs or 1, None, []  # up to 4 GB per run
    return cmd_batch(args)


def cmd_scrub(args: argparse.Namespace) -> int:
    """Strip machine paths and the host name from executed notebooks (before committing them)."""
    from helpers.batch.scrub import scrub_notebook

    for notebook in args.notebooks:
        print(f"{notebook}: {scrub_notebook(notebook)} outputs scrubbed")
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    """Build the offline install bundle for a room of laptops: wheels, model, source."""
    from helpers import bundle

    try:
        bundle.build_bundle(args.out)
    except bundle.BundleError as error:
        return _error(error)
    return 0


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
            return _error(error)
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
        return _error(error)
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


def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune headless from a YAML/JSON config; runs the same under torchrun and accelerate."""
    import os

    from helpers.config import load_config, train_from_config

    try:
        config = load_config(args.config)  # checked before the model loads
    except ValueError as error:  # ConfigError, a ValueError, says which file and field
        return _error(error)
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


def cmd_bench_train(args: argparse.Namespace) -> int:
    """Benchmark the seed article's training pipeline against the course's on this machine."""
    from helpers import models
    from helpers.bench import bench_train, format_table
    from helpers.data import load_examples
    from helpers.paths import sample_path

    name = args.model or models.EMBEDDED_MODEL
    models.load_tokenizer(name)  # a model that cannot be found fails here, before the pipelines
    figures = bench_train(
        name,
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
    )
    return 0


def cmd_bench_server(args: argparse.Namespace) -> int:
    """Measure chat throughput (1, 4, N concurrent; idle and while training) on a fresh server."""
    from helpers.server.bench import benchmark

    figures = benchmark(max_tokens=args.max_tokens, concurrency=args.concurrency)
    for name, value in figures.items():
        print(f"{name:<40} {value}")
    if args.json:
        print(json.dumps(figures))
    return 0


def cmd_bench_generate(args: argparse.Namespace) -> int:
    """Time the evaluation generator against plain ``model.generate``, side by side."""
    from helpers.bench_generate import bench_generate, format_generate_table
    from helpers.models import EMBEDDED_MODEL

    model = args.model or EMBEDDED_MODEL
    figures = bench_generate(model, args.prompts, args.max_tokens, args.batch_size)
    print(format_generate_table(figures))
    if args.json:
        print(json.dumps(figures))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="versions, device, precision and cache")
    info.add_argument("--timing", action="store_true", help="time reloading the embedded model")
    info.add_argument("--repeats", type=positive_int, default=3, help="reloads to time (default 3)")
    info.set_defaults(func=cmd_info)

    prepare = commands.add_parser("prepare-model", help="fetch, convert and cache a model")
    prepare.add_argument(
        "name",
        nargs="?",
        help="model name (default: the embedded model)",
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
        "--hf-model",
        help="model whose tokenizer to count with (default: the embedded model)",
    )
    stats.add_argument("--epochs", type=positive_int, help="epochs (default: OpenAI's heuristic)")
    stats.add_argument("--limit", type=positive_int, help="count the examples longer than this")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(func=cmd_stats)

    train = commands.add_parser("train", help="fine-tune from a YAML/JSON config (torchrun-ready)")
    train.add_argument("config", help="config file: model, train_file, method, training: {...}")
    train.set_defaults(func=cmd_train)

    bench = commands.add_parser("bench-train", help="seed pipeline vs course pipeline throughput")
    bench.add_argument("--model", help="model to train (default: the embedded model)")
    bench.add_argument("--method", choices=["lora", "full"], default="lora")
    bench.add_argument(
        "--steps", type=positive_int, default=6, help="timed optimizer steps per pipeline"
    )
    bench.add_argument("--batch-size", type=positive_int, default=4, help="examples per step")
    bench.add_argument("--packing", action="store_true", help="pack each batch into one row")
    bench.add_argument("--json", action="store_true", help="also print the figures as JSON")
    bench.set_defaults(func=cmd_bench_train)

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
    serve.set_defaults(func=cmd_serve)

    bench_server = commands.add_parser(
        "bench-server", help="chat throughput (1, 4, N concurrent), idle and while a job trains"
    )
    bench_server.add_argument(
        "--concurrency", type=positive_int, default=16, help="concurrent requests (default 16)"
    )
    bench_server.add_argument("--json", action="store_true", help="end with one JSON line")
    bench_server.add_argument(
        "--max-tokens", type=positive_int, default=64, help="new tokens per request"
    )
    bench_server.set_defaults(func=cmd_bench_server)

    bench_generate = commands.add_parser(
        "bench-generate", help="evaluation generator vs plain model.generate (tokens/s, answers)"
    )
    bench_generate.add_argument("--model", help="model (default: the embedded model)")
    bench_generate.add_argument("--prompts", type=positive_int, default=16, help="questions")
    bench_generate.add_argument("--max-tokens", type=positive_int, default=64, help="new tokens")
    bench_generate.add_argument("--batch-size", type=positive_int, default=8, help="per batch")
    bench_generate.add_argument("--json", action="store_true", help="end with one JSON line")
    bench_generate.set_defaults(func=cmd_bench_generate)

    pack = commands.add_parser(
        "bundle",
        help="offline install bundle for laptops: wheels, converted model, source",
        description="Write wheels of this environment's exact versions, the converted model "
        "and the repository at HEAD into one folder; copy it to each laptop and run "
        "`bash install.sh` there (no network needed).",
    )
    pack.add_argument("--out", help="output folder (default runs/bundle)")
    pack.set_defaults(func=cmd_bundle)

    run = commands.add_parser(
        "batch",
        help="run notebooks over a parameter grid (papermill; parallel, resumable)",
        description="Run each notebook once per combination of the grid, each into its own "
        "folder under --out; a second call with the same --out skips finished runs and "
        "retries failed ones. Writes results.csv, results.md and comparison.png.",
    )
    run.add_argument(
        "notebooks",
        nargs="*",
        type=existing_file,
        help="notebooks to run (default: all in notebooks/)",
    )
    run.add_argument(
        "--grid", type=existing_file, help="YAML file: parameter -> value, or list of values"
    )
    run.add_argument(
        "-p",
        "--param",
        action="append",
        type=grid_param,
        default=[],
        metavar="NAME=VALUE",
        help="a parameter value, or a YAML list of values to sweep; wins over --grid",
    )
    run.add_argument("--out", help="output folder (default runs/<timestamp>); reuse it to resume")
    run.add_argument(
        "--jobs",
        type=positive_int,
        help="runs at once (default: as many as the cores and memory hold, 4.5 GB each)",
    )
    run.add_argument(
        "--scheduler", metavar="ADDRESS", help="run on a Dask cluster (tcp://host:8786)"
    )
    run.add_argument(
        "--show",
        action="append",
        default=[],
        metavar="METRIC",
        help="add a metric of metrics.json to the printed and Markdown tables; repeatable",
    )
    run.set_defaults(func=cmd_batch)

    workshop = commands.add_parser(
        "workshop", help="prepare the model and run every notebook with its defaults"
    )
    workshop.add_argument("--out", help="output folder (default runs/<timestamp>)")
    workshop.add_argument("--jobs", type=positive_int, help="runs at once (default 1)")
    workshop.set_defaults(func=cmd_workshop)

    scrub = commands.add_parser(
        "scrub", help="strip machine paths and the host name from executed notebooks"
    )
    scrub.add_argument("notebooks", nargs="+", type=existing_file, help="notebooks to scrub")
    scrub.set_defaults(func=cmd_scrub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except FILE_ERRORS as error:
        if error.filename is None:  # not about a path: a bug, keep its traceback
            raise
        return _error(error)
    except _user_errors() as error:
        return _error(error)


if __name__ == "__main__":
    sys.exit(main())
