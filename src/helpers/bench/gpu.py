"""gpu-check: train and generate on this machine's accelerator; report speed, memory and MFU.

Nothing is downloaded. The models are random weights in real shapes: SmolLM2-135M's, read
from the embedded model's own config, and SmolLM2-1.7B's (:data:`SMOLLM2_1_7B`); on a
machine without a CUDA GPU a tiny Llama of the same family instead, so that the check runs
in seconds (the tests run it). Each model trains with LoRA and with full fine-tuning
through :func:`helpers.train.finetune`, a few steps each on the customer-service sample's
short chats, then generates with :func:`helpers.evaluate.generate` at batch 1 and 8 in
fp32 and in bf16 autocast.

Every figure comes from this run: tokens/s counted after a few warm-up steps, peak memory
(GPU allocations on a GPU, the process's peak RSS on a CPU), the time of each part of a
step, and MFU = FLOPs per token x tokens/s / peak, where the peak is a large bf16 matrix
multiply timed on the same device a moment before (on a CPU, in the training's dtype).
"""

from __future__ import annotations

import sys
import tempfile
import time
from contextlib import redirect_stdout
from importlib import metadata

import torch
from transformers import TrainerCallback

from helpers.bench.flops import flops_per_token
from helpers.bench.generate import read_bandwidth, sample_prompts, synchronize
from helpers.bench.gpu_models import device_name, matmul_peak, random_model
from helpers.models import (
    EMBEDDED_MODEL,
    count_parameters,
    device_type,
    frozen_weights_dtype,
    hub_kernels,
    load_tokenizer,
    pick_device,
    release_memory,
    use_bf16,
)

# --- training -----------------------------------------------------------------------------


class StepTimer(TrainerCallback):
    """Time each part of every optimizer step and count the tokens, waiting for the device.

    A step's parts: ``data`` (the end of the previous step to this one's start: the batch,
    the Trainer's bookkeeping), ``forward_backward`` (with gradient clipping), ``optimizer``
    (its step) and ``other`` (the scheduler, zeroing gradients).
    """

    def __init__(self, device: str):
        self.device = device
        self.marks: list[dict] = []
        self._last = 0.0

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = self._now()

    def on_step_begin(self, args, state, control, **kwargs):
        self.marks.append({"data": self._now() - self._last})
        self._last = time.perf_counter()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        now = self._now()
        self.marks[-1]["forward_backward"], self._last = now - self._last, now

    def on_optimizer_step(self, args, state, control, **kwargs):
        now = self._now()
        self.marks[-1]["optimizer"], self._last = now - self._last, now

    def on_step_end(self, args, state, control, **kwargs):
        now = self._now()
        self.marks[-1]["other"], self._last = now - self._last, now
        self.marks[-1]["tokens_seen"] = int(state.num_input_tokens_seen)

    def steady(self, warmup: int) -> dict:
        """Return seconds per step of each part, tokens per step and tokens/s after ``warmup``."""
        timed = self.marks[warmup:]
        if not timed:
            raise ValueError(f"no step after the {warmup} warm-up steps")
        parts = ("data", "forward_backward", "optimizer", "other")
        seconds = {part: sum(m.get(part, 0.0) for m in timed) / len(timed) for part in parts}
        before = self.marks[warmup - 1]["tokens_seen"] if warmup else 0
        tokens = (timed[-1]["tokens_seen"] - before) / len(timed)
        step = sum(seconds.values())
        return {
            "tokens_per_step": tokens,
            "seconds_per_step": step,
            "tokens_per_s": tokens / step,
            **{f"{part}_ms": 1e3 * value for part, value in seconds.items()},
        }


def train_run(
    shape: str,
    method: str,
    device: str,
    tokenizer,
    dataset,
    peak: float,
    batch_size: int = 8,
    packing: bool = False,
    steps: int = 10,
    warmup: int = 3,
) -> dict:
    """Fine-tune a random model of ``shape`` for ``warmup + steps`` steps; return its figures."""
    from helpers.train import finetune

    model = random_model(shape, device, frozen_weights_dtype(method, device))
    params = count_parameters(model)[1]
    timer = StepTimer(device)
    # Trainer prints its final metrics: to stderr, so that stdout keeps the table and JSON.
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder, redirect_stdout(sys.stderr):
        result = finetune(
            model,
            tokenizer,
            dataset,
            method=method,
            output_dir=folder,
            packing=packing,
            save=False,
            callbacks=[timer],
            max_steps=warmup + steps,
            per_device_train_batch_size=batch_size,
            logging_steps=warmup + steps + 1,
            disable_tqdm=True,
        )
    figures = {
        "shape": shape,
        "run": method,
        "batch_size": batch_size,
        "packing": packing,
        "params": params,
        "steps": steps,
        **timer.steady(warmup),
        "peak_memory_mb": result.peak_memory_mb,
    }
    figures["mfu"] = flops_per_token(params, method) * figures["tokens_per_s"] / peak
    del model, result
    release_memory()
    return figures


# --- generation ---------------------------------------------------------------------------


def generate_run(
    model, tokenizer, prompts, batch_size: int, bf16: bool, max_new_tokens: int, peak: float
) -> dict:
    """Time :func:`helpers.evaluate.generate` on ``prompts``; count the tokens it computed.

    Random weights rarely stop early, and a batch runs until its longest reply ends, so
    the tokens are counted from ``model.generate``'s outputs: every row, every new position.
    """
    from helpers.evaluate import generate

    produced = []
    original = model.generate

    def counting_generate(*args, **kwargs):
        output = original(*args, **kwargs)
        produced.append(output[:, kwargs["input_ids"].shape[1] :].numel())
        return output

    model.generate = counting_generate
    try:
        generate(model, tokenizer, prompts[:batch_size], 2, batch_size, bf16=bf16, progress=False)
        produced.clear()  # the warm-up above: kernels, the allocator, autocast's caches
        synchronize(model.device)
        start = time.perf_counter()
        generate(model, tokenizer, prompts, max_new_tokens, batch_size, bf16=bf16, progress=False)
        synchronize(model.device)
        seconds = time.perf_counter() - start
    finally:
        del model.generate
    params = count_parameters(model)[1]
    tokens_per_s = sum(produced) / seconds
    return {
        "run": "generate",
        "batch_size": batch_size,
        "precision": "bf16" if bf16 else "fp32",
        "prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "tokens_per_s": tokens_per_s,
        "mfu": 2 * params * tokens_per_s / peak,
    }


def generate_runs(
    shape: str,
    device: str,
    tokenizer,
    peak: float,
    bandwidth: float,
    batch_sizes=(1, 8),
    prompts_per_batch: int = 2,
    max_new_tokens: int = 64,
) -> list[dict]:
    """Generate with a random fp32 model of ``shape`` at each batch size, fp32 and bf16.

    bf16 runs only where the device computes it (:func:`helpers.models.use_bf16`); the
    run :func:`helpers.evaluate.generation_bf16` would pick is marked ``default``. Batch-1
    runs also get the bandwidth limit: every fp32 weight read once per token.
    """
    from helpers.evaluate import generation_bf16

    model = random_model(shape, device, torch.float32)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    questions = sample_prompts(max(batch_sizes) * prompts_per_batch)
    precisions = (False, True) if use_bf16(device) else (False,)
    runs = []
    for batch_size in batch_sizes:
        for bf16 in precisions:
            prompts = questions[: batch_size * prompts_per_batch]
            run = generate_run(model, tokenizer, prompts, batch_size, bf16, max_new_tokens, peak)
            run.update(shape=shape, default=bf16 == generation_bf16(device))
            if batch_size == 1:
                run["batch1_limit_tokens_per_s"] = bandwidth / weight_bytes
            runs.append(run)
    del model
    release_memory()
    return runs


# --- the whole check ----------------------------------------------------------------------


def check_settings(device: str) -> dict:
    """Return the default shapes, batch sizes, steps and generation lengths for ``device``."""
    if device_type(device) == "cuda":
        return {
            "shapes": ["135m", "1.7b"],
            "batch_sizes": [8],
            "steps": 10,
            "warmup": 3,
            "generate_batch_sizes": (1, 8),
            "max_new_tokens": 64,
        }
    return {
        "shapes": ["tiny"],
        "batch_sizes": [2],
        "steps": 2,
        "warmup": 1,
        "generate_batch_sizes": (1, 2),
        "max_new_tokens": 4,
    }


def device_figures(device: str, peak_dtype: torch.dtype, peak: float, bandwidth: float) -> dict:
    """Return the check's header figures: the device, the versions and its measured limits."""
    return {
        "device": device_name(device),
        "device_type": device_type(device),
        "torch": torch.__version__,
        "transformers": metadata.version("transformers"),
        "hub_kernels": hub_kernels()[0],
        "peak_dtype": str(peak_dtype).removeprefix("torch."),
        "peak_tflops": peak / 1e12,
        "read_gb_per_s": bandwidth / 1e9,
        "runs": [],
    }


def gpu_check(
    shapes: list[str] | None = None,
    methods: tuple[str, ...] = ("lora", "full"),
    batch_sizes: list[int] | None = None,
    packings: tuple[bool, ...] = (False,),
    steps: int | None = None,
    generation: bool = True,
    max_new_tokens: int | None = None,
    device: str | None = None,
    progress=None,
) -> dict:
    """Train (each shape x method x batch size x packing) and generate; return the figures.

    ``progress``, if given, is called with each line of the table as soon as it is known
    (the header, then one row per run), so a long check shows its figures as it goes.
    """
    from helpers.chat import tokenize_dataset
    from helpers.data import load_examples
    from helpers.paths import sample_path

    device = device or pick_device()
    settings = check_settings(device)
    shapes = shapes or settings["shapes"]
    batch_sizes = batch_sizes or settings["batch_sizes"]
    steps = steps or settings["steps"]
    max_new_tokens = max_new_tokens or settings["max_new_tokens"]
    cuda = device_type(device) == "cuda"
    peak_dtype = torch.bfloat16 if cuda or use_bf16(device) else torch.float32
    peak = matmul_peak(device, peak_dtype, 8192 if cuda else 512)
    bandwidth = read_bandwidth(device, megabytes=2048 if cuda else 64)
    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    examples = load_examples(sample_path("customer_service"))
    if not cuda:
        examples = examples[: 4 * max(batch_sizes)]
    dataset, _ = tokenize_dataset(examples, tokenizer, 512)
    figures = device_figures(device, peak_dtype, peak, bandwidth)
    show = progress or (lambda line: None)
    for line in table_header(figures):
        show(line)

    def add(run: dict) -> None:
        figures["runs"].append(run)
        show(_row(run))

    for shape in shapes:
        for method in methods:
            for batch_size in batch_sizes:
                for packing in packings:
                    add(
                        train_run(
                            shape,
                            method,
                            device,
                            tokenizer,
                            dataset,
                            peak,
                            batch_size,
                            packing,
                            steps,
                            settings["warmup"],
                        )
                    )
        if generation:
            for run in generate_runs(
                shape,
                device,
                tokenizer,
                peak,
                bandwidth,
                settings["generate_batch_sizes"],
                max_new_tokens=max_new_tokens,
            ):
                add(run)
    return figures


# --- the report ---------------------------------------------------------------------------


def _row(run: dict) -> str:
    """Return one run's line of the table."""
    if run["run"] == "generate":
        setting = run["precision"] + (" (default)" if run["default"] else "")
        limit = run.get("batch1_limit_tokens_per_s")
        detail = f"{run['max_new_tokens']} new tokens" + (
            f", {100 * run['tokens_per_s'] / limit:.0f}% of batch-1 limit" if limit else ""
        )
        memory = ""
    else:
        setting = "packed" if run["packing"] else "padded"
        parts = ("data", "forward_backward", "optimizer", "other")
        detail = "/".join(f"{run[f'{part}_ms']:.0f}" for part in parts) + " ms"
        detail += f" ({run['tokens_per_step']:.0f} tok/step)"
        memory = f"{run['peak_memory_mb'] / 1024:.1f}"
    return (
        f"{run['shape']:<5} {run['run']:<8} {run['batch_size']:>5} {setting:<15}"
        f" {run['tokens_per_s']:>9.0f} {memory:>7} {100 * run['mfu']:>6.1f}%  {detail}"
    )


def table_header(figures: dict) -> list[str]:
    """Return the table's first lines: the device, the versions, its limits, the column names."""
    kernels = "on" if figures["hub_kernels"] else "off"
    return [
        f"gpu-check on {figures['device']} ({figures['device_type']})",
        f"torch {figures['torch']}, transformers {figures['transformers']}, hub kernels {kernels}",
        f"peak {figures['peak_dtype']} matmul, timed now: {figures['peak_tflops']:.1f} TFLOP/s;"
        f" memory read: {figures['read_gb_per_s']:.0f} GB/s",
        f"{'shape':<5} {'run':<8} {'batch':>5} {'setting':<15} {'tokens/s':>9} {'peak GB':>7}"
        f" {'MFU':>7}  step: data/fwd+bwd/opt/other",
    ]


TABLE_FOOTER = [
    "tokens/s: trained (non-padding) tokens after the warm-up steps, or generated tokens;",
    "MFU: 6 (full) or 4 (LoRA) or 2 (generation) x parameters x tokens/s / the peak above",
]


def format_gpu_table(figures: dict) -> str:
    """Return the check as a small table (at most 100 columns wide)."""
    rows = [_row(run) for run in figures["runs"]]
    return "\n".join([*table_header(figures), *rows, *TABLE_FOOTER])
