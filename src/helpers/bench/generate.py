"""Generation throughput benchmark: the evaluation generator against plain ``model.generate``.

The baseline is what a learner writes first: one prompt at a time, fp32 weights, the
default cache, greedy (``model.generate(**inputs, do_sample=False)``). The course's
:func:`helpers.evaluate.generate` answers the same prompts in left-padded batches, once
in fp32 (so its answers can be compared token for token) and once with its default
precision for the device (:func:`helpers.evaluate.generation_bf16`: bf16 autocast where
a CPU computes bf16 natively, fp32 on a GPU). Every figure comes from one process on one
machine; tokens are the reply's tokens, counted the same way for all. The batch-1 limit
comes from the read bandwidth of the memory the weights are in: the GPU's for a model on
a GPU.
"""

from __future__ import annotations

import time

import torch

from helpers.chat import render_prompt
from helpers.evaluate import generate, generation_bf16
from helpers.models import EMBEDDED_MODEL, load_base_model


def sample_prompts(count: int) -> list[list[dict]]:
    """Return ``count`` customer questions from the sample data, as chat messages."""
    from helpers.data import load_examples
    from helpers.paths import sample_path

    examples = load_examples(sample_path("customer_service"))
    users = [next(m for m in e["messages"] if m["role"] == "user") for e in examples]
    return [[{"role": "user", "content": m["content"]}] for m in users[:count]]


def plain_generate(model, tokenizer, prompt: list[dict], max_new_tokens: int) -> list[int]:
    """Answer one prompt the way a learner would: ``model.generate``, greedy; return new ids."""
    inputs = tokenizer(render_prompt(tokenizer, prompt), return_tensors="pt")
    inputs = inputs.to(model.device)
    with torch.no_grad():
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def reply_tokens(tokenizer, replies: list[str]) -> int:
    """Count the tokens of the replies (plus one end-of-turn each), the same way for every run."""
    return sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) + 1 for r in replies)


def timed(function, *args, **kwargs):
    """Return ``(result, seconds)`` of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def synchronize(device: str | torch.device) -> None:
    """Wait until ``device`` has finished the work queued on it (a no-op on a CPU)."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def read_bandwidth(device: str | torch.device = "cpu", megabytes: int = 512, repeats: int = 5):
    """Return how fast ``device`` reads its own memory (bytes/s): the best of a few big sums.

    A GPU runs the sum asynchronously, so each timing waits for it to finish; the first
    sum (kernel selection, allocation) is not counted.
    """
    array = torch.ones(megabytes * 2**20 // 4, device=device)

    def one_sum() -> float:
        start = time.perf_counter()
        array.sum()
        synchronize(device)
        return time.perf_counter() - start

    one_sum()
    best = min(one_sum() for _ in range(repeats))
    return array.numel() * 4 / best


def batch1_limit(model, bandwidth: float) -> float:
    """Tokens/s one prompt can reach at most: every weight is read once per new token."""
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return bandwidth / weight_bytes


def bench_generate(
    model_name: str = EMBEDDED_MODEL,
    prompts: int = 16,
    max_new_tokens: int = 64,
    batch_size: int = 8,
) -> dict:
    """Time plain ``generate`` against :func:`helpers.evaluate.generate`; return the figures."""
    model, tokenizer = load_base_model(model_name)
    questions = sample_prompts(prompts)
    plain_generate(model, tokenizer, questions[0], 4)  # warm up kernels and the allocator
    ids, plain_s = timed(
        lambda: [plain_generate(model, tokenizer, q, max_new_tokens) for q in questions]
    )
    plain = [tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]
    figures = {
        "model": model_name,
        "prompts": len(questions),
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "baseline_tokens_per_s": reply_tokens(tokenizer, plain) / plain_s,
    }
    runs = {"fp32": False, "default": None}
    for label, bf16 in runs.items():
        replies, seconds = timed(
            generate,
            model,
            tokenizer,
            questions,
            max_new_tokens,
            batch_size=batch_size,
            bf16=bf16,
            progress=False,
        )
        rate = reply_tokens(tokenizer, replies) / seconds
        figures[f"{label}_tokens_per_s"] = rate
        figures[f"{label}_speedup"] = rate / figures["baseline_tokens_per_s"]
        figures[f"{label}_identical"] = sum(a == b for a, b in zip(replies, plain, strict=True))
    figures["default_precision"] = "bf16" if generation_bf16(model.device) else "fp32"
    figures["device"] = str(model.device)
    bandwidth = read_bandwidth(model.device, megabytes=2048 if model.device.type == "cuda" else 512)
    figures["read_gb_per_s"] = bandwidth / 1e9
    figures["batch1_limit_tokens_per_s"] = batch1_limit(model, bandwidth)
    figures["baseline_share_of_limit"] = (
        figures["baseline_tokens_per_s"] / figures["batch1_limit_tokens_per_s"]
    )
    return figures


def format_generate_table(figures: dict) -> str:
    """Format :func:`bench_generate`'s figures as a small table."""
    n = figures["prompts"]
    lines = [
        f"{n} prompts, up to {figures['max_new_tokens']} new tokens, greedy, {figures['model']}",
        f"{'':34} {'tokens/s':>9} {'x plain':>8} {'same answer':>12}",
        f"{'plain generate, 1 prompt, fp32':34} {figures['baseline_tokens_per_s']:9.1f}"
        f" {1:8.2f} {n:>9} / {n}",
    ]
    batch = figures["batch_size"]
    for label, name in (("fp32", "fp32"), ("default", figures["default_precision"])):
        lines.append(
            f"{f'evaluate.generate, batch {batch}, {name}':34}"
            f" {figures[f'{label}_tokens_per_s']:9.1f} {figures[f'{label}_speedup']:8.2f}"
            f" {figures[f'{label}_identical']:>9} / {n}"
        )
    lines += [
        f"batch-1 limit: every fp32 weight read once per token from {figures['device']} memory"
        f" at {figures['read_gb_per_s']:.1f} GB/s: {figures['batch1_limit_tokens_per_s']:.1f}"
        " tokens/s;",
        f"plain generate reaches {100 * figures['baseline_share_of_limit']:.0f}% of it",
    ]
    return "\n".join(lines)
