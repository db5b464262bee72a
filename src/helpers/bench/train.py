"""bench-train: the seed article's training pipeline against this project's, on this machine.

Both pipelines (:mod:`helpers.bench.pipelines`) train the same model on the same examples
(so the same useful tokens) through Transformers' ``Trainer`` on the CPU, each in its own
fresh process; the course's runs twice, with eager attention (its CPU default) and with
SDPA for comparison. Each run's throughput, time per step, peak memory and model FLOPs
utilisation (:mod:`helpers.bench.flops`) go into one dictionary of figures, and
:func:`format_table` prints them side by side.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import torch
from transformers import AutoConfig

from helpers.bench.flops import flops_per_token, mfu, model_linear_shapes, peaks
from helpers.bench.pipelines import SEED_MAX_LENGTH, train_pipeline
from helpers.chat import tokenize_dataset
from helpers.models import load_tokenizer, resolve_model_path, use_bf16

COURSE_ATTENTIONS = ("eager", "sdpa")  # eager is the course's CPU default; sdpa for comparison


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
    """Train the seed pipeline and the course pipeline (eager and SDPA) on the same examples.

    Each pipeline trains one pass over the same ``steps * batch_size`` examples (so the
    same useful tokens) in its own fresh process, so peak memory is its own. The model
    is prepared (converted) first, so that no pipeline pays for the conversion.
    """
    if examples is None:
        from helpers.data import load_examples
        from helpers.paths import sample_path

        examples = load_examples(sample_path("customer_service"))
    examples = examples[: steps * batch_size]
    bf16 = use_bf16("cpu", bf16)
    folder = resolve_model_path(model_name)  # converts the embedded model, before any pipeline
    tokenizer = load_tokenizer(folder)  # a model that cannot be loaded fails here, clearly
    shapes = model_linear_shapes(AutoConfig.from_pretrained(folder))  # and one we cannot time
    _, report = tokenize_dataset(examples, tokenizer, SEED_MAX_LENGTH)
    settings = (folder, examples, method, steps, batch_size, packing, bf16, output_dir)
    seed = _in_fresh_process(train_pipeline, "seed", None, *settings)
    runs = {a: _in_fresh_process(train_pipeline, "course", a, *settings) for a in COURSE_ATTENTIONS}
    course_dtype = torch.bfloat16 if bf16 else torch.float32
    seed_peak, seed_square = peaks(shapes, batch_size * SEED_MAX_LENGTH, torch.float32)
    peak, square = peaks(shapes, runs["eager"]["tokens_per_step"], course_dtype)
    params = seed["params"]
    return {
        "model": model_name,
        "method": method,
        "examples": len(examples),
        "steps": steps,
        "batch_size": batch_size,
        "useful_tokens": report.tokens,
        "trained_tokens_course": report.trained_tokens,
        "dtype": "bf16" if bf16 else "fp32",
        "packing": packing,
        "params": params,
        "flops_per_token": flops_per_token(params, method),
        "baseline_attention": seed["attention"],
        "baseline_tokens_per_s": seed["tokens_per_s"],
        "baseline_seconds_per_step": seed["seconds_per_step"],
        "baseline_peak_rss_mb": seed["peak_rss_mb"],
        "baseline_mfu": mfu(params, method, seed["tokens_per_s"], seed_peak),
        "baseline_mfu_square_peak": mfu(params, method, seed["tokens_per_s"], seed_square),
        "baseline_peak_gflops": seed_peak / 1e9,
        "baseline_square_peak_gflops": seed_square / 1e9,
        **_course_figures("", runs["eager"], seed, params, method, peak, square),
        **_course_figures("sdpa_", runs["sdpa"], seed, params, method, peak, square),
        "peak_gflops": peak / 1e9,
        "square_peak_gflops": square / 1e9,
    }


def _course_figures(prefix, ours, seed, params, method, peak, square) -> dict:
    """Return one course run's figures, keys prefixed, with its speed-up over the seed."""
    figures = {
        "attention": ours["attention"],
        "tokens_per_s": ours["tokens_per_s"],
        "seconds_per_step": ours["seconds_per_step"],
        "peak_rss_mb": ours["peak_rss_mb"],
        "speedup": ours["tokens_per_s"] / seed["tokens_per_s"],
        "mfu": mfu(params, method, ours["tokens_per_s"], peak),
        "mfu_square_peak": mfu(params, method, ours["tokens_per_s"], square),
    }
    return {prefix + key: value for key, value in figures.items()}


# --- the report ---------------------------------------------------------------------------


def _times(better: float, worse: float) -> str:
    """Return how many times ``better`` beats ``worse``, as text: 2.00x."""
    return f"{better / worse:.2f}x"


def _rate(value: float) -> str:
    """Return a rate as text: whole numbers from 10 up, two decimals below (a slow CPU)."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"


def _row(figures: dict, label: str, key: str, show, better=None) -> tuple[str, ...]:
    """Return a measured row: the seed's ``baseline_<key>``, the course's ``<key>``, ``sdpa_<key>``.

    ``show`` turns a value into its cell; ``better(seed, course)`` fills each x-better cell.
    """
    seed = figures[f"baseline_{key}"]
    cells = [show(seed)]
    for prefix in ("", "sdpa_"):
        ours = figures.get(prefix + key, figures[key])  # one measured peak serves both runs
        cells += [show(ours), better(seed, ours) if better else ""]
    return (label, *cells)


def _rows(f: dict) -> list[tuple[str, ...]]:
    """Return the table's rows: label, seed, course (eager), x better, course (sdpa), x better."""
    padding = "packed" if f["packing"] else "per batch"
    return [
        ("", "seed (article)", "course", "x better", "course", "x better"),
        _row(f, "attention", "attention", str),
        ("precision", "fp32", f["dtype"], "", f["dtype"], ""),
        ("padding", f"to {SEED_MAX_LENGTH}", padding, "", "same", ""),
        _row(f, "useful tokens/s", "tokens_per_s", _rate, lambda seed, ours: _times(ours, seed)),
        _row(f, "s per optimizer step", "seconds_per_step", "{:.2f}".format, _times),
        _row(f, "peak RSS (MB)", "peak_rss_mb", "{:.0f}".format, _times),
        _row(f, "MFU vs model-shape peak", "mfu", "{:.1%}".format),
        _row(f, "MFU vs square peak", "mfu_square_peak", "{:.1%}".format),
        _row(f, "model-shape GFLOP/s", "peak_gflops", "{:.0f}".format),
        _row(f, "square GFLOP/s", "square_peak_gflops", "{:.0f}".format),
    ]


def format_table(figures: dict) -> str:
    """Return the benchmark as a small text table (at most 100 columns wide)."""
    f, rows = figures, _rows(figures)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(
        [
            f"{f['method']} on {f['model']}",
            f"{f['examples']} examples, {f['steps']} steps of {f['batch_size']}, "
            f"{f['useful_tokens']} useful tokens per pipeline",
            *lines,
            f"MFU = {f['flops_per_token'] / 1e6:.0f} MFLOP per useful (non-padding) token "
            "x useful tokens/s / peak",
            "model-shape peak: matmuls at the model's own layer shapes, in the pipeline's dtype",
            "square peak: one 2048 x 2048 matmul; x better: how many times faster or smaller",
        ]
    )
