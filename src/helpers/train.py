"""Fine-tuning on Transformers' ``Trainer``: full or LoRA, measured.

Notebooks build ``TrainingArguments``, ``Trainer`` and ``LoraConfig`` themselves (that
is the API they teach) and hand the trainer to :func:`run`, which adds the
measurements: time per step, tokens per second, peak memory, sizes on disk.
:func:`finetune` does all of it in one call, for the server, the command line and
sweeps.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
from transformers import (
    DataCollatorWithFlattening,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from helpers.chat import make_collator, tokenize_dataset
from helpers.models import (
    count_parameters,
    pick_device,
    quiet_progress_bars,
    release_memory,
    set_seed,
    use_bf16,
)

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


@dataclass
class TrainResult:
    """What one training run did and what it cost."""

    method: str
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    eval_loss: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    best_eval_loss: float | None = None
    steps: int = 0
    epochs: float = 0.0
    stopped_early: bool = False
    tokens_trained: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0
    seconds_per_step: float = 0.0
    tokens_per_second: float = 0.0
    peak_memory_mb: float = 0.0
    memory_increase_mb: float = 0.0
    optimizer_state_mb: float = 0.0
    trainable_params: int = 0
    total_params: int = 0
    world_size: int = 1
    truncated_examples: list[int] = field(default_factory=list)  # 1-based, in the train set
    dropped_examples: list[int] = field(default_factory=list)  # nothing left to train on
    saved_dir: str | None = None
    saved_size_mb: float | None = None
    model: object = field(default=None, repr=False, compare=False)  # set by finetune()

    @property
    def trainable_percent(self) -> float:
        """Trainable parameters as a percentage of all parameters."""
        return 100.0 * self.trainable_params / max(self.total_params, 1)

    def to_dict(self) -> dict:
        """Return the result as plain JSON-ready values (without the model, never copied)."""
        values = {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "model"
        }
        values["trainable_percent"] = self.trainable_percent
        return values

    def summary(self) -> dict:
        """Return the headline figures as one flat dict (a table row)."""
        values = self.to_dict()
        lists = ("train_loss", "eval_loss", "truncated_examples", "dropped_examples")
        for key in (*lists, "saved_dir"):
            values.pop(key, None)
        return values


_peak_before_resets_mb = 0.0  # the process peak as it was before MemoryMeter reset it


def _kernel_peak_mb() -> float | None:
    """Return Linux's record of this process's peak RSS (VmHWM) in MB, or None elsewhere."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**10
    return None


def _reset_kernel_peak() -> bool:
    """Reset Linux's peak-RSS record to the current RSS; return whether that worked."""
    global _peak_before_resets_mb
    before = _kernel_peak_mb()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    _peak_before_resets_mb = max(_peak_before_resets_mb, before or 0.0)
    return True


class MemoryMeter:
    """Peak memory of a block of work: CUDA allocations, or the process's peak RSS on a CPU.

    On Linux the kernel's own peak-RSS record is reset at the start and read at the end,
    which is exact and costs nothing. A sampling thread would be neither: on a 2-core
    machine its wake-ups stall torch's worker threads (training steps took 1.5x longer).
    Elsewhere the RSS is sampled at step boundaries, which can miss short peaks.
    """

    def __init__(self, device: str):
        self.device = device
        self.start_mb = self.peak_mb = 0.0
        self._kernel_peak = False

    def _current_mb(self) -> float:
        if self.device.startswith("cuda"):
            return torch.cuda.memory_allocated() / 2**20
        return psutil.Process().memory_info().rss / 2**20

    def start(self) -> None:
        """Start measuring from now."""
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        else:
            self._kernel_peak = _reset_kernel_peak()
        self.start_mb = self.peak_mb = self._current_mb()

    def sample(self) -> None:
        """Record the memory in use now (a fallback where no peak record exists)."""
        self.peak_mb = max(self.peak_mb, self._current_mb())

    def stop(self) -> None:
        """Stop measuring; ``peak_mb`` then holds the peak."""
        self.sample()
        if self.device.startswith("cuda"):
            self.peak_mb = max(self.peak_mb, torch.cuda.max_memory_allocated() / 2**20)
        elif self._kernel_peak:
            self.peak_mb = max(self.peak_mb, _kernel_peak_mb() or 0.0)


class MeterCallback(TrainerCallback):
    """Times the training steps and samples memory.

    A step counts from the end of the previous step (or of the logging, evaluation or
    saving after it) to its own end, so it includes fetching and collating its batch,
    which Trainer does before ``on_step_begin``; evaluation and saving are left out. On
    CUDA the clock waits for the GPU to finish, so tokens per second is what a user gets.
    """

    def __init__(self, device: str):
        self.memory = MemoryMeter(device)
        self.step_seconds = 0.0
        self._cuda = device.startswith("cuda")
        self._since = 0.0

    def _now(self) -> float:
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _restart_clock(self, *args, **kwargs):
        self._since = self._now()

    on_epoch_begin = on_log = on_evaluate = on_save = _restart_clock

    def on_train_begin(self, args, state, control, **kwargs):
        self.memory.start()
        self._restart_clock()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_seconds += self._now() - self._since
        self.memory.sample()
        self._restart_clock()

    def on_train_end(self, args, state, control, **kwargs):
        self.memory.stop()


def optimizer_state_bytes(optimizer) -> int:
    """Return the bytes held by an optimizer's state (Adam: two moments per trainable weight)."""
    if optimizer is None:
        return 0
    return sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if torch.is_tensor(value)
    )


def weights_size(folder: str | Path) -> int:
    """Return the bytes of the weight files in a saved folder (full model or adapter only)."""
    prefixes = ("model", "adapter_model", "pytorch_model")
    return sum(
        f.stat().st_size
        for f in Path(folder).iterdir()
        if f.name.startswith(prefixes) and f.suffix in (".safetensors", ".bin")
    )


def loss_history(log_history: list[dict]) -> tuple[list, list]:
    """Split a Trainer log history into ``(train_loss, eval_loss)`` lists of ``(step, loss)``."""
    train = [(row["step"], row["loss"]) for row in log_history if "loss" in row]
    evaluation = [(row["step"], row["eval_loss"]) for row in log_history if "eval_loss" in row]
    return train, evaluation


def _restore_forward(model) -> None:
    """Return a model to its state before Accelerate prepared it for mixed precision.

    Accelerate wraps ``forward`` in bf16 autocast and marks the model as prepared. Left
    wrapped, evaluation after training silently runs in bf16; unwrapped but still marked,
    the next Trainer skips preparing it and trains in fp32 (twice as slow here). Dropping
    all three instance attributes restores the class's own ``forward``.
    """
    for name in ("_original_forward", "forward", "_is_accelerate_prepared"):
        model.__dict__.pop(name, None)


def _declare_tied_weights(model) -> None:
    """Tell Trainer that tied weights (lm_head = embeddings) are absent from checkpoints on purpose.

    Without this, restoring the best checkpoint warns that ``lm_head.weight`` is missing
    although it is tied to the embeddings; with it, Trainer re-ties them instead.
    """
    tied = getattr(model, "_tied_weights_keys", None)
    if (
        tied
        and getattr(model.config, "tie_word_embeddings", False)
        and not hasattr(model, "peft_config")
    ):
        model._keys_to_ignore_on_save = set(model._keys_to_ignore_on_save or ()) | set(tied)


def run(trainer: Trainer, save_dir: str | Path | None = None, method: str | None = None, **details):
    """Train with measurements; save the model (or adapter) to ``save_dir``; return a result.

    ``details`` are further :class:`TrainResult` fields to record (``truncated_examples``...).
    """
    if trainer.args.include_num_input_tokens_seen == "no":
        packed = isinstance(trainer.data_collator, DataCollatorWithFlattening)
        trainer.args.include_num_input_tokens_seen = "all" if packed else "non_padding"
    _declare_tied_weights(trainer.model)
    release_memory()  # what an earlier run left behind must not count against this one
    meter = MeterCallback(str(trainer.args.device))
    trainer.add_callback(meter)
    start = time.perf_counter()
    with quiet_progress_bars():  # keep the training bar, drop the checkpoint-writing bars
        trainer.train()
    wall = time.perf_counter() - start
    trainer.remove_callback(meter)

    state = trainer.state
    model = trainer.model
    _restore_forward(model)
    trainable, total = count_parameters(model)
    train_loss, eval_loss = loss_history(state.log_history)
    result = TrainResult(
        method=method or ("lora" if hasattr(model, "peft_config") else "full"),
        train_loss=train_loss,
        eval_loss=eval_loss,
        steps=state.global_step,
        epochs=round(state.epoch or 0.0, 3),
        stopped_early=state.global_step < state.max_steps,
        tokens_trained=int(state.num_input_tokens_seen),
        train_seconds=meter.step_seconds,
        wall_seconds=wall,
        seconds_per_step=meter.step_seconds / max(state.global_step, 1),
        tokens_per_second=state.num_input_tokens_seen / max(meter.step_seconds, 1e-9),
        peak_memory_mb=meter.memory.peak_mb,
        memory_increase_mb=meter.memory.peak_mb - meter.memory.start_mb,
        optimizer_state_mb=optimizer_state_bytes(trainer.optimizer) / 2**20,
        trainable_params=trainable,
        total_params=total,
        world_size=trainer.args.world_size,
        **details,
    )
    if state.best_global_step:  # the checkpoint Trainer judged best (and restored)
        result.best_step = state.best_global_step
        result.best_eval_loss = dict(eval_loss).get(state.best_global_step)
    elif eval_loss:
        result.best_step, result.best_eval_loss = min(eval_loss, key=lambda row: row[1])
    if save_dir is not None:
        with quiet_progress_bars():
            trainer.save_model(str(save_dir))  # writes on the main process only
    if save_dir is not None and trainer.is_world_process_zero():
        result.saved_dir = str(save_dir)
        result.saved_size_mb = weights_size(save_dir) / 2**20
        (Path(save_dir) / "train_result.json").write_text(json.dumps(result.to_dict(), indent=2))
    return result


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
        "bf16": use_bf16(),
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
    if values.get("bf16") is None:
        values["bf16"] = use_bf16()
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
    run before early stopping, so they see each evaluation's metrics first.
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
        data_collator=make_collator(tokenizer, packing=packing),
        processing_class=tokenizer,
        callbacks=list(callbacks or []) + stopping,
    )
    details = {}
    if report is not None:
        details["truncated_examples"] = list(report.truncated_lines)
        details["dropped_examples"] = list(getattr(report, "dropped_lines", []))
    result = run(trainer, output_dir / "final" if save else None, method=method, **details)
    result.model = model
    return result


class ConfigError(ValueError):
    """A training config is wrong; the message names the file, the line and the field."""


# Keys of a headless training config (``python -m helpers train CONFIG``) and their defaults.
CONFIG_DEFAULTS = {
    "model": "smollm2-135m-instruct",
    "train_file": None,
    "validation_file": None,
    "method": "lora",
    "output_dir": "runs/train",
    "max_seq_length": 512,
    "packing": False,
    "early_stopping_patience": 3,
    "lora": {},
    "training": {},
}
CONFIG_TYPES = {
    "model": str,
    "train_file": str,
    "validation_file": str,
    "method": str,
    "output_dir": str,
    "max_seq_length": int,
    "packing": bool,
    "early_stopping_patience": int,
    "lora": dict,
    "training": dict,
}
MAY_BE_EMPTY = ("validation_file", "lora", "training")  # ``key:`` with nothing after it
TYPE_NAMES = {str: "a string", int: "a whole number", bool: "true or false", dict: "a mapping"}
SET_ELSEWHERE = {  # fields the config sets in another place
    ("training", "output_dir"): "set output_dir at the top level of the config",
    ("lora", "task_type"): "the course always trains a causal LM (CAUSAL_LM)",
}


def _parse_yaml(path: Path, text: str):
    """Parse YAML (or JSON); a syntax error names the file, line and column."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        start = getattr(error, "context_mark", None)
        if start is not None and getattr(error, "context", None):
            problem += f" ({error.context} at line {start.line + 1}, column {start.column + 1})"
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None


def _key_lines(text: str) -> dict[tuple, int]:
    """Return the 1-based line of every key of a YAML document's mappings, by key path."""
    import yaml

    lines = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[(*prefix, str(key.value))] = key.start_mark.line + 1
                walk(value, (*prefix, str(key.value)))

    walk(yaml.compose(text), ())
    return lines


def _is_type(value, expected: type) -> bool:
    """Tell whether a YAML value has the expected type (true/false is not a number)."""
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _is_number(value) -> bool:
    """Tell whether a value is an int or a float (not true/false)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _top_level_mistake(config: dict) -> tuple[str, str] | None:
    """Return ``(key, problem)`` for the first mistake in a config's top-level keys, or None."""
    from helpers.paths import display_path, from_root

    unknown = sorted(set(config) - set(CONFIG_DEFAULTS))
    if unknown:
        arguments = [f.name for f in dataclasses.fields(TrainingArguments)]
        hints = [
            f"'{name}' looks like training argument '{close[0]}': put it under 'training:'"
            for name in unknown
            if (close := difflib.get_close_matches(name, arguments, n=1))
        ]
        known = f"unknown keys {unknown}; known keys: {sorted(CONFIG_DEFAULTS)}"
        return unknown[0], "; ".join([known, *hints])
    if not config.get("train_file"):
        return "train_file", "'train_file' is required"
    for key, value in config.items():
        expected = CONFIG_TYPES[key]
        if not _is_type(value, expected) and not (value is None and key in MAY_BE_EMPTY):
            kind = type(value).__name__
            return key, f"{key} must be {TYPE_NAMES[expected]}, not {kind} {value!r}"
    if config.get("method", CONFIG_DEFAULTS["method"]) not in ("full", "lora"):
        return "method", f"method must be 'full' or 'lora', not {config['method']!r}"
    for key in ("train_file", "validation_file"):
        if config.get(key) and not from_root(config[key]).is_file():
            looked = display_path(from_root(config[key]))
            return key, (
                f"{key} {config[key]!r} does not exist (looked for {looked}; "
                f"relative paths start at the repository root)"
            )
    return None


def _section_mistake(section: str, values: dict, cls: type, library: str):
    """Return ``(field, problem)`` for the first field in a section that ``cls`` lacks, or None."""
    fields = {f.name: f.default for f in dataclasses.fields(cls) if f.init}
    for name, value in values.items():
        if (section, name) in SET_ELSEWHERE:
            return name, f"{section}.{name}: {SET_ELSEWHERE[section, name]}"
        if name not in fields:
            close = difflib.get_close_matches(name, sorted(fields), n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            return name, (
                f"{section}.{name} is not a {library} field (valid fields are those of the "
                f"{library} dataclass){hint}"
            )
        if isinstance(value, str) and _is_number(fields[name]):
            mantissa, _, exponent = value.lower().partition("e")
            hint = (
                f" (YAML reads {value} as text: write {mantissa}.0e{exponent})"
                if exponent and mantissa.lstrip("+-").isdigit()
                else ""
            )
            return name, f"{section}.{name} must be a number, not the text {value!r}{hint}"
    return None


def _config_mistake(config: dict) -> tuple[tuple, str] | None:
    """Return ``(key path, problem)`` for the first mistake in a parsed config, or None."""
    from peft import LoraConfig

    if mistake := _top_level_mistake(config):
        return (mistake[0],), mistake[1]
    sections = (
        ("training", TrainingArguments, "transformers.TrainingArguments"),
        ("lora", LoraConfig, "peft.LoraConfig"),
    )
    for section, cls, library in sections:
        if mistake := _section_mistake(section, config.get(section) or {}, cls, library):
            return (section, mistake[0]), mistake[1]
    return None


def load_config(path: str | Path) -> dict:
    """Read and check a YAML or JSON training config; return it with the defaults filled in.

    Any mistake raises :class:`ConfigError` with one message naming the file, the line
    and the field: YAML syntax, unknown keys, wrong types, missing data files, a method
    other than full/lora, ``training:`` fields that ``TrainingArguments`` does not have,
    ``lora:`` fields that ``LoraConfig`` does not have.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the training config ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: the training config is not UTF-8 text (byte {error.start}: {error.reason})"
        ) from None
    config = _parse_yaml(path, text)
    if config is None:
        config = {}
    if not isinstance(config, dict):
        kind = type(config).__name__
        raise ConfigError(
            f"{path}: a training config must be a mapping of keys to values, not {kind}"
        )
    mistake = _config_mistake(config)
    if mistake:
        keys, problem = mistake
        line = _key_lines(text).get(keys)
        raise ConfigError(f"{path}{f', line {line}' if line else ''}: {problem}")
    config = {**CONFIG_DEFAULTS, **config}
    return {**config, "lora": config["lora"] or {}, "training": config["training"] or {}}


def train_from_config(config: dict) -> TrainResult:
    """Load the model and data a config names and fine-tune; works under torchrun/accelerate.

    The model loads on this process's device (its GPU under torchrun) with the attention
    kernel that suits it (:func:`helpers.models.load_base_model`).
    """
    from helpers.data import load_examples
    from helpers.models import load_base_model
    from helpers.paths import from_root, output_dir

    model, tokenizer = load_base_model(config["model"])
    train = load_examples(from_root(config["train_file"]))
    val = load_examples(from_root(config["validation_file"])) if config["validation_file"] else None
    return finetune(
        model,
        tokenizer,
        train,
        val,
        method=config["method"],
        output_dir=output_dir(config["output_dir"]),
        max_seq_length=config["max_seq_length"],
        packing=config["packing"],
        early_stopping_patience=config["early_stopping_patience"],
        lora=config["lora"],
        **config["training"],
    )


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


def process_peak_rss_mb() -> float:
    """Return this process's peak resident memory so far, in MB (Linux and macOS)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    return max(peak, _peak_before_resets_mb)


def training_memory_gb(
    total_params: int,
    trainable_params: int,
    weight_bytes: int = 4,
    tokens: int = 0,
    layers: int = 0,
    hidden: int = 0,
    heads: int = 0,
    seq_len: int = 1,
    recompute: bool = False,
) -> dict:
    """Estimate training memory in GB: weights, gradients, Adam states and activations.

    Trainable weights keep fp32 gradients (4 bytes) and two fp32 Adam moments (8 bytes);
    frozen weights only their own bytes. Activations use the estimate of Korthikanti et
    al. (2022) for 16-bit activations: per layer and token ``34 * hidden + 5 * heads *
    seq_len`` bytes, or with ``recompute`` (activation checkpointing) ``2 * hidden`` bytes
    per layer for the saved layer inputs plus one layer's full activations.
    """
    gb = 1e9
    per_layer = 34 * hidden + 5 * heads * seq_len
    kept_layers = layers * per_layer if not recompute else layers * 2 * hidden + per_layer
    activations = tokens * kept_layers
    figures = {
        "weights": total_params * weight_bytes / gb,
        "gradients": trainable_params * 4 / gb,
        "adam_states": trainable_params * 8 / gb,
        "activations": activations / gb,
    }
    figures["total"] = sum(figures.values())
    return figures
