"""bench-train's two pipelines, each trained the way its code trains on the CPU.

- *seed*: the article's code as written, on library defaults: ``from_pretrained`` with its
  default attention (SDPA) in fp32, every example padded to 512 tokens, loss on every token
  (``DataCollatorForLanguageModeling``);
- *course*: the course's loader (eager attention on a CPU, or the attention asked for),
  dynamic padding of length-grouped batches (or packing), bf16 autocast where the CPU
  supports it (and, for LoRA, frozen weights stored in bf16), loss on the assistant's
  tokens only, with logits computed only where a trained token follows.
"""

from __future__ import annotations

import torch
from transformers import DataCollatorForLanguageModeling, PrinterCallback, Trainer

from helpers.chat import make_collator, tokenize_dataset
from helpers.measure import process_peak_rss_mb
from helpers.models import (
    count_parameters,
    ensure_chat_template,
    frozen_weights_dtype,
    load_base_model,
    quiet_progress_bars,
)
from helpers.train import apply_lora, run, training_arguments

SEED_MAX_LENGTH = 512  # the article pads every example to this length


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
