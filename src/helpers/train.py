"""Fine-tuning on Transformers' ``Trainer``: full or LoRA, measured.

Notebooks build ``TrainingArguments``, ``Trainer`` and ``LoraConfig`` themselves (that
is the API they teach) and pass a :class:`helpers.measure.MeasureCallback` to the
Trainer for the measurements. :func:`finetune` does all of it in one call, for the
server, the command line (:mod:`helpers.cli.train_config`) and sweeps.
"""

from __future__ import annotations

from pathlib import Path

from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

from helpers.chat import make_collator, tokenize_dataset
from helpers.measure import MeasureCallback, TrainResult
from helpers.models import mixed_precision, pick_device, quiet_progress_bars, set_seed

# The learning rate each method gets when none is given: the values notebook 03 uses, which
# measured well on SmolLM2-135M (LoRA needs a much larger rate: few weights, starting at zero).
DEFAULT_LEARNING_RATES = {"full": 5e-5, "lora": 1e-3}

# The seed article's LoRA settings.
LORA_DEFAULTS = {
    "r": 8,
    "lora_alpha": 32,
    "lora_dropout": 0.1,
    "target_modules": ["q_proj", "v_proj"],
}
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def run(trainer: Trainer, save_dir: str | Path | None = None, method: str | None = None, **details):
    """Train with a :class:`MeasureCallback`; save the model (or adapter) to ``save_dir``.

    Returns the :class:`TrainResult`; ``details`` are further fields to record
    (``truncated_examples``...).
    """
    meter = MeasureCallback()
    trainer.add_callback(meter)
    with quiet_progress_bars():  # keep the training bar, drop the checkpoint-writing bars
        trainer.train()
    trainer.remove_callback(meter)
    if save_dir is not None:
        with quiet_progress_bars():
            trainer.save_model(str(save_dir))  # writes on the main process only
    return meter.result(trainer, saved_dir=save_dir, method=method, **details)


def training_arguments(
    output_dir: str | Path, has_eval: bool = True, **overrides
) -> TrainingArguments:
    """Return ``TrainingArguments`` with the course's defaults (the seed's names), overridable."""
    eval_steps = overrides.pop("eval_steps", None) or overrides.get("logging_steps", 10)
    values = {
        "num_train_epochs": 3,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "learning_rate": DEFAULT_LEARNING_RATES["full"],
        "warmup_steps": 0,
        "weight_decay": 0.01,
        "logging_steps": 10,
        "save_total_limit": 2,
        "seed": 0,
        "bf16": None,  # mixed_precision's choice: bf16, fp16 (a T4) or fp32
        "report_to": "none",
        "save_only_model": True,
        "remove_unused_columns": False,
        "dataloader_pin_memory": False,
        "ddp_find_unused_parameters": False,  # every weight takes part in a causal LM's forward
        # Batches of similar lengths waste little on padding (shuffled, seeded groups).
        "train_sampling_strategy": "group_by_length",
    }
    if has_eval:
        values.update(
            eval_strategy="steps",
            eval_steps=eval_steps,
            prediction_loss_only=True,  # collecting every logit would cost ~1 GB here
            save_strategy="steps",
            save_steps=eval_steps,
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
        )
    else:
        values.update(eval_strategy="no", save_strategy="no")
    values.update(overrides)
    precision = mixed_precision(pick_device(), values["bf16"])
    values["bf16"] = precision == "bf16" and not values.get("fp16")  # fp16=True: asked for
    values.setdefault("fp16", precision == "fp16")  # a GPU without bf16 in hardware (a T4)
    # Transformers only allows bf16 on a CPU when it is told the CPU is the device.
    values.setdefault("use_cpu", pick_device() == "cpu")
    return TrainingArguments(output_dir=str(output_dir), **values)


def apply_lora(
    model,
    r: int = 8,
    lora_alpha: int = 32,
    lora_dropout: float = 0.1,
    target_modules: list[str] | None = None,
    seed: int = 0,
    **options,
):
    """Wrap a model with fresh LoRA adapters (seeded) through PEFT; return the PEFT model.

    ``options`` are further ``peft.LoraConfig`` fields (``bias``, ``use_rslora``, ...).
    """
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=list(target_modules or LORA_DEFAULTS["target_modules"]),
        **options,
    )
    set_seed(seed)
    return get_peft_model(model, config)


def finetune(
    model,
    tokenizer,
    train,
    val=None,
    method: str = "full",
    output_dir="runs/train",
    max_seq_length: int = 512,
    packing: bool = False,
    pad_to_multiple_of: int | None = 32,
    early_stopping_patience: int = 3,
    lora: dict | None = None,
    callbacks: list | None = None,
    save: bool = True,
    **training_args,
) -> TrainResult:
    """Fine-tune ``model`` on chat examples (lists of dicts or tokenised Datasets); return results.

    ``method`` is ``"full"`` or ``"lora"`` (``lora`` overrides :data:`LORA_DEFAULTS`);
    ``training_args`` are TrainingArguments fields (num_train_epochs, learning_rate, ...);
    ``learning_rate`` defaults to the method's :data:`DEFAULT_LEARNING_RATES`. ``callbacks``
    run before early stopping, so they see each evaluation's metrics first. Batches are
    padded to a multiple of ``pad_to_multiple_of`` tokens: a few tensor shapes instead of
    one per batch (on a CPU with bf16, each new shape keeps memory: notebook 03 measured it).
    """
    if method not in ("full", "lora"):
        raise ValueError(f"method must be 'full' or 'lora', not {method!r}")
    output_dir = Path(output_dir)
    seed = training_args.setdefault("seed", 0)
    if training_args.get("learning_rate") is None:
        training_args["learning_rate"] = DEFAULT_LEARNING_RATES[method]
    report = None
    if isinstance(train, list):
        train, report = tokenize_dataset(train, tokenizer, max_seq_length)
    if isinstance(val, list):
        val, _ = tokenize_dataset(val, tokenizer, max_seq_length) if val else (None, None)
    if method == "lora" and not hasattr(model, "peft_config"):  # a PEFT model trains its own
        model = apply_lora(model, seed=seed, **{**LORA_DEFAULTS, **(lora or {})})
    else:
        set_seed(seed)
    args = training_arguments(output_dir / "checkpoints", has_eval=val is not None, **training_args)
    stopping = [EarlyStoppingCallback(early_stopping_patience)] if val is not None else []
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        data_collator=make_collator(tokenizer, packing, pad_to_multiple_of),
        processing_class=tokenizer,
        callbacks=list(callbacks or []) + stopping,
    )
    details = {}
    if report is not None:
        details["truncated_examples"] = list(report.truncated_lines)
        details["dropped_examples"] = list(report.dropped_lines)
    result = run(trainer, output_dir / "final" if save else None, method=method, **details)
    result.model = model
    return result


def lora_parameter_count(config, r: int, target_modules: list[str]) -> int:
    """Count LoRA parameters by hand from a Llama-style config: r x (d_in + d_out) per matrix."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    hidden, inner = config.hidden_size, config.intermediate_size
    shapes = {  # (d_in, d_out) of each linear layer in one decoder layer
        "q_proj": (hidden, config.num_attention_heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (config.num_attention_heads * head_dim, hidden),
        "gate_proj": (hidden, inner),
        "up_proj": (hidden, inner),
        "down_proj": (inner, hidden),
    }
    per_layer = sum(r * sum(shapes[name]) for name in target_modules)
    return per_layer * config.num_hidden_layers
