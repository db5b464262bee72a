"""``chat``: talk to a model (or a model with a LoRA adapter) in the terminal, streamed."""

from __future__ import annotations

import argparse
import math

from helpers.cli.args import positive_int


def temperature(text: str) -> float:
    """A sampling temperature from 0 (greedy) to 2."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 2:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 2, got {text!r}")
    return value


def cmd_chat(args: argparse.Namespace) -> int:
    """Load the model (and adapter) and talk until /quit or end of input."""
    from helpers.talk import Conversation, chat_loop, load_for_chat

    model, tokenizer = load_for_chat(args.model, args.adapter, device=args.device)
    conversation = Conversation(
        model,
        tokenizer,
        system=args.system,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    chat_loop(conversation)
    return 0


def add_commands(commands) -> None:
    """Register ``chat``."""
    chat = commands.add_parser(
        "chat",
        help="talk to a model in the terminal (/reset, /system TEXT, /base, /quit)",
        description="Talk to a model, streamed. Commands: /reset, /system TEXT, /base (switch "
        "the adapter off and on), /quit. Ctrl-C stops an answer, Ctrl-D or /quit leaves.",
    )
    chat.add_argument("model", help="a model folder, a hub id, or smollm2-135m-instruct")
    chat.add_argument("--adapter", metavar="DIR", help="a LoRA adapter folder to load on top")
    chat.add_argument("--system", help="the system prompt to start with")
    chat.add_argument(
        "--max-new-tokens", type=positive_int, default=256, help="longest answer (default 256)"
    )
    chat.add_argument(
        "--temperature", type=temperature, default=0.0, help="0 answers greedily (default); up to 2"
    )
    chat.add_argument("--seed", type=int, help="seed each sampled answer (with --temperature)")
    chat.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    chat.set_defaults(func=cmd_chat)
