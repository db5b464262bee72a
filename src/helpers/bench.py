"""Training throughput benchmark: the seed article's pipeline against this project's.

Both pipelines train the same model on the same examples (so the same useful
tokens) through Transformers' ``Trainer`` on the CPU, each in its own fresh process:

- *seed*: the article's code as written, on library defaults: ``from_pretrained``
  with its default attention (SDPA) in fp32, every example padded to 512 tokens,
  loss on every token (``DataCollatorForLanguageModeling``);
- *course*: the course's loader (eager attention on a CPU, and SDPA for comparison),
  dynamic padding of length-grouped batches (or packing), bf16 autocast where the
  CPU supports it (and, for LoRA, frozen weights stored in bf16), loss on the
  assistant's tokens only, with logits computed only where a trained token follows.

Model FLOPs utilisation (MFU) = FLOPs per token x useful (non-padding) tokens per
second / peak, with 6 x parameters FLOPs per token for full fine-tuning and 4 x for
LoRA (frozen weights need no weight gradients). The peak is measured on the spot:
matrix multiplies at the model's own layer shapes in the pipeline's dtype (the
limit this machine can reach for this model), and, for reference, a square
2048 x 2048 matmul (``mfu_square_peak``).
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from transformers import (
    AutoConfig,
    DataCollatorForLanguageModeling,
    PrinterCallback,
    Trainer,
)

from helpers.chat import ensure_chat_template, make_collator, tokenize_dataset
from helpers.models import (
    count_parameters,
    frozen_weights_dtype,
    load_base_model,
    load_tokenizer,
    quiet_progress_bars,
    resolve_model_path,
    use_bf16,
)
from helpers.train import apply_lora, process_peak_rss_mb, run, training_arguments

SEED_MAX_LENGTH = 512  # the article pads every example to this length
COURSE_ATTENTIONS = ("eager", "sdpa")  # eager is the course's CPU default; sdpa for comparison


# --- FLOPs and peaks ---------------------------------------------------------------------


def flops_per_token(params: int, method: str) -> int:
    """Return training FLOPs per token: 6 x params for full fine-tuning, 4 x for LoRA."""
    if method not in ("full", "lora"):
        raise ValueError(f"method must be 'full' or 'lora', not {method!r}")
    return (4 if method == "lora" else 6) * params


def mfu(params: int, method: str, tokens_per_s: float, peak_flops: float) -> float:
    """Return model FLOPs utilisation: FLOPs per token x tokens per second / peak FLOP/s."""
    return flops_per_token(params, method) * tokens_per_s / peak_flops


def linear_flops(tokens: int, d_in: int, d_out: int) -> int:
    """Return the FLOPs of one ``tokens x d_in -> d_out`` linear layer (a multiply-add is 2)."""
    return 2 * tokens * d_in * d_out


def model_linear_shapes(config) -> dict[tuple[int, int], int]:
    """Return ``{(d_in, d_out): count}`` for every linear layer of a Llama-style model's forward."""
    needed = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers")
    missing = [name for name in (*needed, "vocab_size") if getattr(config, name, None) is None]
    if missing:
        raise ValueError(
            f"bench-train times Llama-style layer shapes; the {config.model_type!r} model's "
            f"config has no {', '.join(missing)}"
        )
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    hidden, inner = config.hidden_size, config.intermediate_size
    per_layer = [
        (hidden, config.num_attention_heads * head_dim),  # q_proj
        (hidden, kv_heads * head_dim),  # k_proj
        (hidden, kv_heads * head_dim),  # v_proj
        (config.num_attention_heads * head_dim, hidden),  # o_proj
        (hidden, inner),  # gate_proj
        (hidden, inner),  # up_proj
        (inner, hidden),  # down_proj
    ]
    shapes: dict[tuple[int, int], int] = {}
    for shape in per_layer:
        shapes[shape] = shapes.get(shape, 0) + config.num_hidden_layers
    lm_head = (hidden, config.vocab_size)
    shapes[lm_head] = shapes.get(lm_head, 0) + 1
    return shapes


def _time_calls(x: torch.Tensor, weight: torch.Tensor, calls: int) -> float:
    """Return the seconds that ``calls`` back-to-back linear layers take."""
    start = time.perf_counter()
    for _ in range(calls):
        torch.nn.functional.linear(x, weight)
    return time.perf_counter() - start


def time_linear(
    tokens: int,
    d_in: int,
    d_out: int,
    dtype: torch.dtype,
    repeats: int = 3,
    min_seconds: float = 0.05,
) -> float:
    """Return the best time in seconds of one ``tokens x d_in -> d_out`` linear layer.

    Calls are timed in runs of at least ``min_seconds`` (a single small matmul takes
    microseconds, less than one scheduler hiccup), and the best run of ``repeats`` counts.
    """
    x = torch.randn(tokens, d_in).to(dtype)
    weight = torch.randn(d_out, d_in).to(dtype)
    calls = 1
    while _time_calls(x, weight, calls) < min_seconds:  # also warms up kernels and threads
        calls *= 2
    return min(_time_calls(x, weight, calls) for _ in range(repeats)) / calls


def model_shape_peak_flops(
    shapes: dict[tuple[int, int], int], tokens: int, dtype: torch.dtype, timer=time_linear
) -> float:
    """Return the FLOP/s this machine reaches on a model's linear layers for ``tokens`` tokens.

    Each shape is timed once and weighted by how often the model uses it, so the figure
    is the whole forward's matmul FLOPs over its matmul time.
    """
    flops = seconds = 0.0
    for (d_in, d_out), count in shapes.items():
        flops += count * linear_flops(tokens, d_in, d_out)
        seconds += count * timer(tokens, d_in, d_out, dtype)
    return flops / seconds


def matmul_peak_flops(dtype: torch.dtype, size: int = 2048) -> float:
    """Return the best measured square matrix-multiply FLOP/s for ``dtype`` on the CPU."""
    return linear_flops(size, size, size) / time_linear(size, size, size, dtype)


# --- the two pipelines --------------------------------------------------------------------


def seed_dataset(examples: list[dict], tokenizer, max_length: int = SEED_MAX_LENGTH):
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


def seed_collator(tokenizer):
    """Return the seed's collator: labels are the inputs, with every pad-token id masked.

    SmolLM2's pad token is its end-of-turn token, so this masks every ``<|im_end|>``
    label too: the seed's model is never taught to stop.
    """
    return DataCollatorForLanguageModeling(tokenizer, mlm=False)


def load_pipeline_model(
    pipeline: str, folder: str, attention: str | None = None, dtype: torch.dtype = torch.float32
):
    """Load ``(model, tokenizer)`` from a model folder the way ``pipeline`` does.

    The seed calls ``from_pretrained`` with the library's defaults (SDPA attention), in
    fp32 as the article's Transformers loaded it; the course uses its own loader, whose
    CPU default is eager attention, or ``attention`` when given, in ``dtype``.
    """
    if pipeline == "course":
        return load_base_model(folder, device="cpu", dtype=dtype, attn_implementation=attention)
    if pipeline != "seed":
        raise ValueError(f"pipeline must be 'seed' or 'course', not {pipeline!r}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_progress_bars():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _train(model, tokenizer, dataset, collator, output_dir, bf16, steps, batch_size, sampling):
    """Train ``steps`` optimizer steps on the CPU without evaluation or saving; return results."""
    args = training_arguments(
        output_dir,
        has_eval=False,
        max_steps=steps,
        bf16=bf16,
        use_cpu=True,
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
    trainer.remove_callback(PrinterCallback)  # keep stdout for the report (and --json)
    return run(trainer)


def train_pipeline(
    pipeline: str,
    attention: str | None,
    folder: str,
    examples: list[dict],
    method: str,
    steps: int,
    batch_size: int,
    packing: bool,
    bf16: bool,
    output_dir: str,
) -> dict:
    """Train one pipeline ("seed" or "course") for ``steps`` steps; return its figures."""
    dtype = frozen_weights_dtype(method, "cpu", bf16) if pipeline == "course" else torch.float32
    model, tokenizer = load_pipeline_model(pipeline, folder, attention, dtype)
    attention = model.config._attn_implementation
    params = count_parameters(model)[1]
    ensure_chat_template(tokenizer)
    if method == "lora":
        model = apply_lora(model)
    if pipeline == "seed":
        dataset = seed_dataset(examples, tokenizer)
        collator = seed_collator(tokenizer)
        precision, sampling = False, "sequential"
    else:
        dataset, _ = tokenize_dataset(examples, tokenizer, max_seq_length=SEED_MAX_LENGTH)
        collator = make_collator(tokenizer, packing=packing)
        precision, sampling = bf16, "group_by_length"
    # One untimed step first warms up the kernels, the allocator and the thread pool.
    _train(model, tokenizer, dataset, collator, output_dir, precision, 1, batch_size, sampling)
    result = _train(
        model, tokenizer, dataset, collator, output_dir, precision, steps, batch_size, sampling
    )
    return {
        "attention": attention,
        "params": params,
        "tokens_per_s": result.tokens_per_second,
        "tokens_per_step": result.tokens_trained / max(result.steps, 1),
        "seconds_per_step": result.seconds_per_step,
        "peak_rss_mb": process_peak_rss_mb(),
    }


def _in_fresh_process(function, *args):
    """Run ``function(*args)`` in a new Python process, so that runs cannot disturb each other."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def _peaks(shapes: dict, tokens_per_step: float, dtype: torch.dtype) -> tuple[float, float]:
    """Return ``(model-shape peak, square peak)`` FLOP/s for ``dtype`` at a pipeline's batch."""
    tokens = max(round(tokens_per_step), 1)
    return model_shape_peak_flops(shapes, tokens, dtype), matmul_peak_flops(dtype)


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
    seed_peak, seed_square = _peaks(shapes, batch_size * SEED_MAX_LENGTH, torch.float32)
    peak, square = _peaks(shapes, runs["eager"]["tokens_per_step"], course_dtype)
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


def format_table(figures: dict) -> str:
    """Return the benchmark as a small text table (at most 100 columns wide)."""
    f = figures
    seed_tps, seed_sps, seed_rss = (
        f["baseline_tokens_per_s"],
        f["baseline_seconds_per_step"],
        f["baseline_peak_rss_mb"],
    )
    rows = [
        ("", "seed (article)", "course", "x better", "course", "x better"),
        ("attention", f["baseline_attention"], f["attention"], "", f["sdpa_attention"], ""),
        ("precision", "fp32", f["dtype"], "", f["dtype"], ""),
        (
            "padding",
            f"to {SEED_MAX_LENGTH}",
            "packed" if f["packing"] else "per batch",
            "",
            "same",
            "",
        ),
        (
            "useful tokens/s",
            _rate(seed_tps),
            _rate(f["tokens_per_s"]),
            f"{f['speedup']:.2f}x",
            _rate(f["sdpa_tokens_per_s"]),
            f"{f['sdpa_speedup']:.2f}x",
        ),
        (
            "s per optimizer step",
            f"{seed_sps:.2f}",
            f"{f['seconds_per_step']:.2f}",
            _times(seed_sps, f["seconds_per_step"]),
            f"{f['sdpa_seconds_per_step']:.2f}",
            _times(seed_sps, f["sdpa_seconds_per_step"]),
        ),
        (
            "peak RSS (MB)",
            f"{seed_rss:.0f}",
            f"{f['peak_rss_mb']:.0f}",
            _times(seed_rss, f["peak_rss_mb"]),
            f"{f['sdpa_peak_rss_mb']:.0f}",
            _times(seed_rss, f["sdpa_peak_rss_mb"]),
        ),
        (
            "MFU vs model-shape peak",
            f"{f['baseline_mfu']:.1%}",
            f"{f['mfu']:.1%}",
            "",
            f"{f['sdpa_mfu']:.1%}",
            "",
        ),
        (
            "MFU vs square peak",
            f"{f['baseline_mfu_square_peak']:.1%}",
            f"{f['mfu_square_peak']:.1%}",
            "",
            f"{f['sdpa_mfu_square_peak']:.1%}",
            "",
        ),
        (
            "model-shape GFLOP/s",
            f"{f['baseline_peak_gflops']:.0f}",
            f"{f['peak_gflops']:.0f}",
            "",
            f"{f['peak_gflops']:.0f}",
            "",
        ),
        (
            "square GFLOP/s",
            f"{f['baseline_square_peak_gflops']:.0f}",
            f"{f['square_peak_gflops']:.0f}",
            "",
            f"{f['square_peak_gflops']:.0f}",
            "",
        ),
    ]
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
