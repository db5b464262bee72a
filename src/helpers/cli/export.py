"""``export``: a model or adapter folder as merged safetensors, GGUF and an Ollama Modelfile."""

from __future__ import annotations

import argparse
import json
import sys

from helpers.cli import user_error

GGUF_CHOICES = ("f16", "q8_0")


def cmd_export(args: argparse.Namespace) -> int:
    """Export SOURCE into --out; print the files, sizes, times and round-trip checks."""
    from helpers.export import ExportError, export

    everything = not args.gguf and not args.merge
    gguf_types = tuple(dict.fromkeys(args.gguf)) if args.gguf else ()
    try:
        result = export(
            args.source,
            args.out,
            gguf_types=GGUF_CHOICES if everything else gguf_types,
            merged=everything or args.merge,
            check=not args.no_check,
            base=args.base,
        )
    except ExportError as error:
        return user_error(error)
    for check in result.round_trips:
        print(check.summary(), file=sys.stderr)
    print(json.dumps({k: v for k, v in result.as_dict().items() if k != "round_trips"}, indent=2))
    if not result.passed:
        print("error: a GGUF file failed its round trip (see above)", file=sys.stderr)
        return 1
    return 0


def add_commands(commands) -> None:
    """Register ``export``."""
    export = commands.add_parser(
        "export",
        help="merged safetensors, GGUF (f16, q8_0) and an Ollama Modelfile, round-trip checked",
        description=(
            "Export a model folder, or a LoRA adapter folder merged into its base in fp32, into "
            "OUT/merged (safetensors, tokenizer, chat template), OUT/gguf (model-f16.gguf, "
            "model-q8_0.gguf, Modelfile) and OUT/export.json. Without --gguf and --merge, all "
            "of them; with either, only what they name. Each GGUF is loaded back through "
            "Transformers and compared with the merged model (logits, greedy answers)."
        ),
    )
    export.add_argument("source", help="a model folder (config.json) or an adapter folder")
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument(
        "--gguf",
        action="append",
        choices=GGUF_CHOICES,
        default=[],
        help="write this GGUF type (repeat for both; default both, unless --merge alone)",
    )
    export.add_argument("--merge", action="store_true", help="write the merged safetensors")
    export.add_argument(
        "--base", help="the adapter's base model, where adapter_config.json's has moved"
    )
    export.add_argument(
        "--no-check", action="store_true", help="skip the round trip through Transformers"
    )
    export.set_defaults(func=cmd_export)
