"""Training throughput benchmark: the seed article's pipeline against this project's.

Both pipelines train the same model on the same examples (so the same useful
tokens) through Transformers' ``Trainer`` on the same machine, in one run:

- *seed*: every example tokenised to ``max_length=512`` with padding, fp32, loss on
  every token (``DataCollatorForLanguageModeling``), as the article's code does;
- *course*: dynamic padding of length-grouped batches (or packing), bf16 autocast
  where the CPU supports it, loss on the assistant's tokens only.

Model FLOPs utilisation (MFU) = FLOPs per token x tokens per second / peak, with
6 x parameters FLOPs per token for full fine-tuning and 4 x for LoRA (frozen
weights need no weight gradients), against a matmul peak measured on the spot.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from transformers import DataCollatorForLanguageModeling, Trainer

from helpers.chat import ensure_chat_template, make_collator, tokenize_dataset
from helpers.models import count_parameters, load_base_model, use_bf16
from helpers.train import apply_lora, process_peak_rss_mb, run, training_arguments


def matmul_peak_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Return the best measured matrix-multiply FLOP/s for ``dtype`` on the CPU."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.matmul(a, b)  # warm up the kernels and threads
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def seed_dataset(examples: list[dict], tokenizer, max_length: int = 512):
    """Tokenise rendered conversations the seed's way: padded to ``max_length``, no label mask."""
    from datasets import Dataset

    texts = [tokenizer.apply_chat_template(e["messages"], tokenize=False) for e in examples]
    encoded = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        padding="max_length",
        add_special_tokens=False,
    )
    return Dataset.from_dict(dict(encoded))


def _train(model, tokenizer, dataset, collator, output_dir, bf16, steps, batch_size, sampling):
    """Train ``steps`` optimizer steps without evaluation or saving; return the TrainResult."""
    args = training_arguments(
        output_dir,
        has_eval=False,
        max_steps=steps,
        bf16=bf16,
        per_device_train_batch_size=batch_size,
        learning_rate=1e-4,
        logging_steps=steps,
        disable_tqdm=True,
        train_sampling_strategy=sampling,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tokenizer,
    )
    return run(trainer)


def train_pipeline(
    pipeline: str,
    model_name: str,
    examples: list[dict],
    method: str,
    steps: int,
    batch_size: int,
    packing: bool,
    bf16: bool,
    output_dir: str,
) -> dict:
    """Train one pipeline ("seed" or "course") for ``steps`` steps; return its figures."""
    model, tokenizer = load_base_model(model_name, device="cpu")
    ensure_chat_template(tokenizer)
    if method == "lora":
        model = apply_lora(model)
    if pipeline == "seed":
        dataset = seed_dataset(examples, tokenizer)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
        precision, sampling = False, "sequential"
    else:
        dataset, _ = tokenize_dataset(examples, tokenizer, max_seq_length=512)
        collator = make_collator(tokenizer, packing=packing)
        precision, sampling = bf16, "group_by_length"
    # One untimed step first warms up the kernels, the allocator and the thread pool.
    _train(model, tokenizer, dataset, collator, output_dir, precision, 1, batch_size, sampling)
    result = _train(
        model, tokenizer, dataset, collator, output_dir, precision, steps, batch_size, sampling
    )
    return {
        "tokens_per_s": result.tokens_per_second,
        "seconds_per_step": result.seconds_per_step,
        "peak_rss_mb": process_peak_rss_mb(),
    }


def _in_fresh_process(function, *args):
    """Run ``function(*args)`` in a new Python process, so that runs cannot disturb each other."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def bench_train(
    model_name: str = "smollm2-135m-instruct",
    examples: list[dict] | None = None,
    method: str = "lora",
    steps: int = 6,
    batch_size: int = 4,
    packing: bool = False,
    bf16: bool | None = None,
    output_dir: str = "runs/bench-train",
) -> dict:
    """Train the seed pipeline and the course pipeline on the same examples; return figures.

    Each pipeline trains one pass over the same ``steps * batch_size`` examples (so the
    same useful tokens) in its own fresh process, so peak memory is its own.
    """
    examples = examples[: steps * batch_size]
    bf16 = use_bf16("cpu", bf16)
    settings = (model_name, examples, method, steps, batch_size, packing, bf16, output_dir)
    seed = _in_fresh_process(train_pipeline, "seed", *settings)
    ours = _in_fresh_process(train_pipeline, "course", *settings)

    model, tokenizer = load_base_model(model_name, device="cpu")
    _, report = tokenize_dataset(examples, tokenizer, max_seq_length=512)
    flops_per_token = (4 if method == "lora" else 6) * count_parameters(model)[1]
    peak_fp32 = matmul_peak_flops(torch.float32)
    peak_ours = matmul_peak_flops(torch.bfloat16) if bf16 else peak_fp32
    return {
        "model": model_name,
        "method": method,
        "examples": len(examples),
        "steps": steps,
        "batch_size": batch_size,
        "useful_tokens": report.tokens,
        "trained_tokens_course": report.trained_tokens,
        "baseline_tokens_per_s": seed["tokens_per_s"],
        "baseline_seconds_per_step": seed["seconds_per_step"],
        "baseline_peak_rss_mb": seed["peak_rss_mb"],
        "baseline_mfu": flops_per_token * seed["tokens_per_s"] / peak_fp32,
        "tokens_per_s": ours["tokens_per_s"],
        "seconds_per_step": ours["seconds_per_step"],
        "peak_rss_mb": ours["peak_rss_mb"],
        "speedup": ours["tokens_per_s"] / seed["tokens_per_s"],
        "mfu": flops_per_token * ours["tokens_per_s"] / peak_ours,
        "dtype": "bf16" if bf16 else "fp32",
        "packing": packing,
        "flops_per_token": flops_per_token,
        "peak_fp32_gflops": peak_fp32 / 1e9,
        "peak_gflops": peak_ours / 1e9,
    }


def format_table(figures: dict) -> str:
    """Return the benchmark as a small text table."""
    rows = [
        ("", "seed pipeline", "course pipeline", "ratio"),
        ("precision", "fp32", figures["dtype"], ""),
        ("padding", "to 512", "packed" if figures["packing"] else "per batch, grouped", ""),
        (
            "useful tokens/s",
            f"{figures['baseline_tokens_per_s']:.0f}",
            f"{figures['tokens_per_s']:.0f}",
            f"{figures['speedup']:.2f}x",
        ),
        (
            "s per optimizer step",
            f"{figures['baseline_seconds_per_step']:.2f}",
            f"{figures['seconds_per_step']:.2f}",
            f"{figures['baseline_seconds_per_step'] / figures['seconds_per_step']:.2f}x",
        ),
        (
            "peak RSS (MB)",
            f"{figures['baseline_peak_rss_mb']:.0f}",
            f"{figures['peak_rss_mb']:.0f}",
            f"{figures['baseline_peak_rss_mb'] / figures['peak_rss_mb']:.2f}x",
        ),
        ("MFU", f"{figures['baseline_mfu']:.1%}", f"{figures['mfu']:.1%}", ""),
        (
            "matmul peak (GFLOP/s)",
            f"{figures['peak_fp32_gflops']:.0f}",
            f"{figures['peak_gflops']:.0f}",
            "",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    header = (
        f"{figures['method']} on {figures['model']}: {figures['examples']} examples, "
        f"{figures['steps']} steps of {figures['batch_size']}, "
        f"{figures['useful_tokens']} useful tokens per pipeline"
    )
    return "\n".join([header, *lines])
