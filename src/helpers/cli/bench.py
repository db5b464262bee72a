"""The benchmarks: ``bench-train``, ``bench-generate``, ``bench-server``, ``bench-codeexec``,
and ``gpu-check`` (training and generation on this machine's GPU, random weights).

Each prints a small table and, with ``--json``, ends with the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import json

from helpers.cli.args import positive_int


def _print_json(args: argparse.Namespace, figures: dict) -> None:
    """Print the figures as one JSON line when ``--json`` was given."""
    if args.json:
        print(json.dumps(figures))


def cmd_bench_train(args: argparse.Namespace) -> int:
    """Benchmark the seed article's training pipeline against the course's on this machine."""
    from helpers import models
    from helpers.bench.train import bench_train, format_table
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
    _print_json(args, figures)
    return 0


def cmd_bench_server(args: argparse.Namespace) -> int:
    """Measure chat throughput (1, 4, N concurrent; idle and while training) on a fresh server."""
    from helpers.bench.server import bench_server

    figures = bench_server(max_tokens=args.max_tokens, concurrency=args.concurrency)
    for name, value in figures.items():
        print(f"{name:<40} {value}")
    _print_json(args, figures)
    return 0


def cmd_bench_generate(args: argparse.Namespace) -> int:
    """Time the evaluation generator against plain ``model.generate``, side by side."""
    from helpers.bench.generate import bench_generate, format_generate_table
    from helpers.models import EMBEDDED_MODEL

    model = args.model or EMBEDDED_MODEL
    figures = bench_generate(model, args.prompts, args.max_tokens, args.batch_size)
    print(format_generate_table(figures))
    _print_json(args, figures)
    return 0


def cmd_bench_codeexec(args: argparse.Namespace) -> int:
    """Time trivial sandboxed test runs, one after another and with ``run_many``."""
    from helpers.bench.codeexec import bench_codeexec, format_codeexec_line

    figures = bench_codeexec(args.tasks, args.workers)
    print(format_codeexec_line(figures))
    _print_json(args, figures)
    return 0


def cmd_gpu_check(args: argparse.Namespace) -> int:
    """Train and generate with random weights of real shapes on this machine's GPU (or CPU)."""
    from helpers.bench.gpu import TABLE_FOOTER, gpu_check

    packings = {"no": (False,), "yes": (True,), "both": (False, True)}[args.packing]
    figures = gpu_check(
        shapes=args.shape,
        methods=tuple(args.method or ("lora", "full")),
        batch_sizes=args.batch_size,
        packings=packings,
        steps=args.steps,
        generation=not args.no_generate,
        max_new_tokens=args.max_tokens,
        progress=lambda line: print(line, flush=True),  # each run's row as soon as it is done
    )
    print("\n".join(TABLE_FOOTER))
    _print_json(args, figures)
    return 0


def add_commands(commands) -> None:
    """Register the benchmarks: ``bench-*`` and ``gpu-check``."""
    train = commands.add_parser("bench-train", help="seed pipeline vs course pipeline throughput")
    train.add_argument("--model", help="model to train (default: the embedded model)")
    train.add_argument("--method", choices=["lora", "full"], default="lora")
    train.add_argument(
        "--steps", type=positive_int, default=6, help="timed optimizer steps per pipeline"
    )
    train.add_argument("--batch-size", type=positive_int, default=4, help="examples per step")
    train.add_argument("--packing", action="store_true", help="pack each batch into one row")
    train.add_argument("--json", action="store_true", help="also print the figures as JSON")
    train.set_defaults(func=cmd_bench_train)

    server = commands.add_parser(
        "bench-server", help="chat throughput (1, 4, N concurrent), idle and while a job trains"
    )
    server.add_argument(
        "--concurrency", type=positive_int, default=16, help="concurrent requests (default 16)"
    )
    server.add_argument("--json", action="store_true", help="end with one JSON line")
    server.add_argument(
        "--max-tokens", type=positive_int, default=64, help="new tokens per request"
    )
    server.set_defaults(func=cmd_bench_server)

    generate = commands.add_parser(
        "bench-generate", help="evaluation generator vs plain model.generate (tokens/s, answers)"
    )
    generate.add_argument("--model", help="model (default: the embedded model)")
    generate.add_argument("--prompts", type=positive_int, default=16, help="questions")
    generate.add_argument("--max-tokens", type=positive_int, default=64, help="new tokens")
    generate.add_argument("--batch-size", type=positive_int, default=8, help="per batch")
    generate.add_argument("--json", action="store_true", help="end with one JSON line")
    generate.set_defaults(func=cmd_bench_generate)

    codeexec = commands.add_parser(
        "bench-codeexec", help="cost of a sandboxed test run (run_tests alone, run_many)"
    )
    codeexec.add_argument("--tasks", type=positive_int, default=20, help="tasks (default 20)")
    codeexec.add_argument("--workers", type=positive_int, help="run_many's (default: the cores)")
    codeexec.add_argument("--json", action="store_true", help="end with one JSON line")
    codeexec.set_defaults(func=cmd_bench_codeexec)

    gpu = commands.add_parser(
        "gpu-check",
        help="train (LoRA, full) and generate on this GPU, random weights: tokens/s, memory, MFU",
    )
    gpu.add_argument(
        "--shape",
        action="append",
        choices=["135m", "1.7b", "tiny"],
        help="model shape, repeatable (default: 135m and 1.7b on a CUDA GPU, tiny elsewhere)",
    )
    gpu.add_argument("--method", action="append", choices=["lora", "full"], help="repeatable")
    gpu.add_argument(
        "--batch-size", type=positive_int, nargs="+", help="one or more (default 8; 2 on a CPU)"
    )
    gpu.add_argument(
        "--packing", choices=["no", "yes", "both"], default="no", help="pack each batch (no)"
    )
    gpu.add_argument("--steps", type=positive_int, help="timed steps after the warm-up (10)")
    gpu.add_argument("--max-tokens", type=positive_int, help="new tokens per reply (64)")
    gpu.add_argument("--no-generate", action="store_true", help="train only")
    gpu.add_argument("--json", action="store_true", help="end with one JSON line")
    gpu.set_defaults(func=cmd_gpu_check)
