"""How a training job reports: :class:`JobCallback`, a Trainer callback.

A metrics event per step (training loss and token accuracy), a checkpoint (adapter,
validation loss and token accuracy) per epoch, the rows of the results CSV, the estimated
finish, and a stop when the job is cancelled or the server is stopping.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable

import torch
from transformers import TrainerCallback

from helpers.chat import IGNORE_INDEX, next_token_targets
from helpers.losses import mean_loss
from helpers.models import count_parameters
from helpers.server.cores import CoreShare
from helpers.server.store import Store, new_id, now

RESULTS_COLUMNS = [
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
]


class JobCallback(TrainerCallback):
    """Reports one job's training: metrics events, per-epoch checkpoints, cancellation."""

    def __init__(
        self,
        store: Store,
        job_id: str,
        model_name: str,
        tokenizer,
        validation,
        cores: CoreShare,
        should_stop: Callable[[], bool],
    ):
        self.store, self.cores, self.should_stop = store, cores, should_stop
        self.job_id, self.model_name = job_id, model_name
        self.base = store.job_base(job_id)
        self.tokenizer, self.validation = tokenizer, validation
        self.rows: list[dict] = []
        self.started = time.perf_counter()
        self.first_step: tuple[int, float] | None = None  # (step, when it ended)
        self.correct = self.counted = 0
        self._hook = None

    def _count_correct(self, module, args, kwargs, output) -> None:
        """Count the assistant tokens a training forward pass predicted right (its argmax)."""
        labels = kwargs.get("labels")
        if not module.training or labels is None:
            return
        with torch.no_grad():
            logits = output.logits
            if "shift_labels" in kwargs:  # the collator asked for trained positions only
                targets = kwargs["shift_labels"]
            else:
                keep, targets = next_token_targets(labels)
                logits = logits[keep]
            trained = targets != IGNORE_INDEX  # positions kept only to round a matrix shape
            self.correct += int(((logits.argmax(-1) == targets) & trained).sum())
            self.counted += int(trained.sum())

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """Start counting right tokens; state the adapter's size."""
        self._hook = model.register_forward_hook(self._count_correct, with_kwargs=True)
        trainable, total = count_parameters(model)
        self.store.add_event(
            self.job_id,
            f"LoRA adapter: {trainable:,} trainable parameters of {total:,} "
            f"({100 * trainable / total:.2f}%)",
        )

    def on_train_end(self, args, state, control, **kwargs):
        """Stop counting right tokens."""
        if self._hook is not None:
            self._hook.remove()

    def on_step_begin(self, args, state, control, **kwargs):
        """Size the step's thread team by whether chats run."""
        self.cores.training_step()

    def on_step_end(self, args, state, control, **kwargs):
        """Stop if the job must; else update its estimated finish."""
        if self.should_stop():
            control.should_training_stop = True
            return
        remaining = self.seconds_per_step(state.global_step) * (state.max_steps - state.global_step)
        finish = now() + math.ceil(remaining)
        self.store.update_job(self.job_id, only_if=("running",), estimated_finish=finish)

    def seconds_per_step(self, step: int) -> float:
        """Seconds per step from the steps after the first, once there are some.

        The first step also pays the kernels' warm-up and, with length grouping, the longest
        batch (Trainer puts it first): counted in the mean, it inflated the early estimates.
        """
        ended = time.perf_counter()
        if self.first_step is None:
            self.first_step = (step, ended)
        first, first_ended = self.first_step
        if step > first:
            return (ended - first_ended) / (step - first)
        return (ended - self.started) / max(step, 1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Record a step's training loss and token accuracy as a metrics event."""
        if not logs or "loss" not in logs:
            return
        step, loss = state.global_step, float(logs["loss"])
        accuracy = self.correct / self.counted if self.counted else None
        self.correct = self.counted = 0
        self.rows.append({"step": step, "train_loss": loss, "train_accuracy": accuracy})
        metrics = {"step": step, "train_loss": loss, "total_steps": state.max_steps}
        shown = ""
        if accuracy is not None:
            metrics["train_mean_token_accuracy"] = accuracy
            shown = f", token accuracy={accuracy:.3f}"
        self.store.add_event(
            self.job_id,
            f"Step {step}/{state.max_steps}: training loss={loss:.4f}{shown}",
            data=metrics,
        )

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        """Measure validation (if any) and save a checkpoint of the adapter."""
        if self.should_stop() or not self.rows:
            return
        step = state.global_step
        metrics = {"step": step, "train_loss": self.rows[-1]["train_loss"]}
        if self.validation is not None:
            measured = mean_loss(model, self.tokenizer, self.validation, batch_size=4)
            valid_loss, valid_accuracy = measured["loss"], measured["accuracy"]
            metrics.update(valid_loss=valid_loss, valid_mean_token_accuracy=valid_accuracy)
            self.rows[-1].update(metrics)
            self.store.add_event(
                self.job_id,
                f"Step {step}/{state.max_steps}: validation loss={valid_loss:.4f}, "
                f"token accuracy={valid_accuracy:.3f}",
                data={**metrics, "total_steps": state.max_steps},
            )
        folder = self.store.job_dir(self.job_id) / "checkpoints" / f"step-{step}"
        model.save_pretrained(folder)
        checkpoint = {
            "id": new_id("ftckpt_"),
            "object": "fine_tuning.job.checkpoint",
            "created_at": now(),
            "fine_tuned_model_checkpoint": f"{self.model_name}:ckpt-step-{step}",
            "fine_tuning_job_id": self.job_id,
            "metrics": metrics,
            "step_number": step,
        }
        self.store.add_checkpoint(checkpoint, self.base, folder)
        self.store.add_event(self.job_id, f"Checkpoint created at step {step}: {checkpoint['id']}")

    def results_csv(self) -> bytes:
        """Return the per-step results as OpenAI's CSV (empty cells where not measured)."""
        text = io.StringIO()
        writer = csv.DictWriter(text, RESULTS_COLUMNS, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return text.getvalue().encode()
