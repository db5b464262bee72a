"""Measuring training: what a run did and cost, and what memory it should need.

:class:`MeasureCallback` is the one meter: notebooks pass it to their own ``Trainer``
and read a :class:`TrainResult` after ``trainer.train()``; :func:`helpers.train.run`
and :func:`helpers.train.finetune` use it the same way. :func:`training_memory_gb` is
the analytic memory model the notebooks compare the measurements with.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
from transformers import DataCollatorWithFlattening, TrainerCallback

from helpers.models import autocast, count_parameters, release_memory


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


def backward_peak_mb(model, batch: dict, device: str, bf16: bool | None = None) -> float:
    """Return the memory growth of one forward and backward pass (no optimizer step), in MB."""
    batch = {key: value.to(model.device) for key, value in batch.items()}
    model.train()
    meter = MemoryMeter(device)
    meter.start()
    with autocast(device, bf16):
        loss = model(**batch).loss
    loss.backward()
    meter.stop()
    model.zero_grad(set_to_none=True)
    model.eval()
    release_memory()
    return meter.peak_mb - meter.start_mb


class MeasureCallback(TrainerCallback):
    """Measures a Trainer run: seconds per step, tokens per second, peak memory, sizes.

    Give it to the Trainer and read the result after training::

        meter = MeasureCallback()
        trainer = Trainer(model=..., args=..., callbacks=[meter])
        trainer.train()
        result = meter.result(trainer)          # a TrainResult

    A step counts from the end of the previous step (or of the logging, evaluation or
    saving after it) to its own end, so it includes fetching and collating its batch,
    which Trainer does before ``on_step_begin``; evaluation and saving are left out. On
    CUDA the clock waits for the GPU to finish, so tokens per second is what a user gets.
    Tokens are counted by Trainer itself (non-padding tokens, or all of a packed batch,
    found under the collators that wrap it: :func:`innermost_collator`).
    """

    def __init__(self):
        self.memory: MemoryMeter | None = None
        self.step_seconds = self.wall_seconds = 0.0
        self._cuda = False
        self._since = self._started = 0.0

    def _now(self) -> float:
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _restart_clock(self, *args, **kwargs):
        self._since = self._now()

    on_epoch_begin = on_log = on_evaluate = on_save = _restart_clock

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if args.include_num_input_tokens_seen in ("no", False):
            collate = innermost_collator(getattr(train_dataloader, "collate_fn", None))
            packed = isinstance(collate, DataCollatorWithFlattening)
            args.include_num_input_tokens_seen = "all" if packed else "non_padding"
        if model is not None:
            _declare_tied_weights(model)
        release_memory()  # what an earlier run left behind must not count against this one
        self._cuda = str(args.device).startswith("cuda")
        self.memory = MemoryMeter(str(args.device))
        self.memory.start()
        self.step_seconds = 0.0
        self._started = self._now()
        self._restart_clock()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_seconds += self._now() - self._since
        self.memory.sample()
        self._restart_clock()

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.memory.stop()
        self.wall_seconds = self._now() - self._started
        if model is not None:
            _restore_forward(model)

    def result(self, trainer, saved_dir=None, method: str | None = None, **details) -> TrainResult:
        """Return what the run did and cost; ``saved_dir`` is where the model was saved, if it was.

        ``details`` are further :class:`TrainResult` fields (``truncated_examples``...).
        """
        if self.memory is None:
            raise RuntimeError("MeasureCallback.result() needs a finished trainer.train()")
        state, model = trainer.state, trainer.model
        trainable, total = count_parameters(model)
        train_loss, eval_loss = loss_history(state.log_history)
        tokens = int(state.num_input_tokens_seen)
        result = TrainResult(
            method=method or ("lora" if hasattr(model, "peft_config") else "full"),
            train_loss=train_loss,
            eval_loss=eval_loss,
            steps=state.global_step,
            epochs=round(state.epoch or 0.0, 3),
            stopped_early=state.global_step < state.max_steps,
            tokens_trained=tokens,
            train_seconds=self.step_seconds,
            wall_seconds=self.wall_seconds,
            seconds_per_step=self.step_seconds / max(state.global_step, 1),
            tokens_per_second=tokens / max(self.step_seconds, 1e-9),
            peak_memory_mb=self.memory.peak_mb,
            memory_increase_mb=self.memory.peak_mb - self.memory.start_mb,
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
        if saved_dir is not None and trainer.is_world_process_zero():
            result.saved_dir = str(saved_dir)
            result.saved_size_mb = weights_size(saved_dir) / 2**20
            text = json.dumps(result.to_dict(), indent=2)
            (Path(saved_dir) / "train_result.json").write_text(text)
        return result


# Attributes under which a wrapping collator keeps the one it wraps: Trainer's column
# remover (``data_collator``) and helpers.chat.TrainedLogitsCollator (``collator``).
WRAPPED_COLLATOR_ATTRIBUTES = ("data_collator", "collator")


def innermost_collator(collate):
    """Return the collator that builds the batch, under any collators wrapping it.

    Packing (``DataCollatorWithFlattening``) is recognised there: a packed batch has no
    padding, so every token counts, the end-of-turn token too, although it is the pad token.
    """
    for _ in range(10):  # wrappers of wrappers, but never round a cycle
        wrapped = [getattr(collate, name, None) for name in WRAPPED_COLLATOR_ATTRIBUTES]
        inner = next((found for found in wrapped if callable(found)), None)
        if inner is None:
            return collate
        collate = inner
    return collate


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
