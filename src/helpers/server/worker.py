"""The fine-tuning worker: validate a job's files, then train jobs one at a time with LoRA.

A job goes ``validating_files`` (a short thread per job runs the data layer's
validator) → ``queued`` → ``running`` (one training thread, through
:func:`helpers.train.finetune` on its own copy of the base model) → ``succeeded``,
``failed`` or ``cancelled``. Training reports through a Trainer callback: a metrics
event per step, a checkpoint (adapter, validation loss and token accuracy) per epoch,
and the rows of the results CSV.

Hyperparameters, as OpenAI names them:

- ``n_epochs``: ``"auto"`` follows OpenAI's cookbook rule (:func:`helpers.data.default_epochs`);
- ``batch_size``: ``"auto"`` is :data:`AUTO_BATCH_SIZE` (the course's CPU default);
- ``learning_rate_multiplier``: scales :data:`BASE_LEARNING_RATE`; ``"auto"`` is 1.

The server's ``max_steps`` caps every job's optimizer steps: a knob for tests and
short workshops, stated in the job's events when it applies.
"""

from __future__ import annotations

import csv
import io
import math
import queue
import re
import threading
import time
import traceback
from pathlib import Path

import torch
from transformers import TrainerCallback

from helpers import data
from helpers.chat import IGNORE_INDEX, make_collator, tokenize_dataset
from helpers.models import autocast, load_base_model
from helpers.server.store import Store, new_id, now
from helpers.train import finetune

BASE_LEARNING_RATE = 2e-4  # LoRA on SmolLM2; the job's learning_rate_multiplier scales it
AUTO_BATCH_SIZE = 4
AUTO_LEARNING_RATE_MULTIPLIER = 1.0
MIN_TRAINING_EXAMPLES = 10  # OpenAI's minimum
PROBLEMS_SHOWN = 5
RESULTS_COLUMNS = [
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
]


class JobFailed(Exception):
    """A job cannot go on; ``code``, ``message`` and ``param`` become the job's ``error``."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.error = {"code": code, "message": message, "param": param}


def resolve_hyperparameters(requested: dict, n_examples: int) -> dict:
    """Replace ``"auto"`` (or missing) hyperparameters by the numbers training will use."""
    values = dict(requested)
    if values.get("n_epochs") in (None, "auto"):
        values["n_epochs"] = data.default_epochs(n_examples)
    if values.get("batch_size") in (None, "auto"):
        values["batch_size"] = min(AUTO_BATCH_SIZE, n_examples)
    if values.get("learning_rate_multiplier") in (None, "auto"):
        values["learning_rate_multiplier"] = AUTO_LEARNING_RATE_MULTIPLIER
    return values


def fine_tuned_name(job: dict, organization: str) -> str:
    """Return the job's model name in OpenAI's form ``ft:{base}:{org}:{suffix}:{id}``."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", Path(job["model"]).name)  # a folder or hub id
    short_id = job["id"].removeprefix("ftjob-")[:8]
    return f"ft:{base}:{organization}:{job.get('suffix') or ''}:{short_id}"


@torch.no_grad()
def token_metrics(model, tokenizer, dataset, batch_size: int = 8) -> tuple[float, float]:
    """Return the mean loss and next-token accuracy on the assistant tokens of a dataset."""
    collate = make_collator(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {key: value.to(device) for key, value in collate(rows).items()}
        labels = batch.pop("labels")[:, 1:]
        with autocast(device.type):
            logits = model(**batch).logits[:, :-1].float()
        mask = labels != IGNORE_INDEX
        loss_sum += torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), labels.flatten(), reduction="sum", ignore_index=IGNORE_INDEX
        ).item()
        correct += int(((logits.argmax(-1) == labels) & mask).sum())
        count += int(mask.sum())
    model.train(was_training)
    return loss_sum / max(count, 1), correct / max(count, 1)


class JobCallback(TrainerCallback):
    """Reports one job's training: metrics events, per-epoch checkpoints, cancellation."""

    def __init__(self, worker: Worker, job: dict, model_name: str, tokenizer, validation):
        self.worker, self.store = worker, worker.store
        self.job_id, self.model_name = job["id"], model_name
        self.base = self.store.job_base(job["id"])
        self.tokenizer, self.validation = tokenizer, validation
        self.rows: list[dict] = []
        self.started = time.perf_counter()

    def _stopping(self) -> bool:
        return self.worker.should_stop(self.job_id)

    def on_step_end(self, args, state, control, **kwargs):
        if self._stopping():
            control.should_training_stop = True
            return
        seconds_per_step = (time.perf_counter() - self.started) / max(state.global_step, 1)
        remaining = seconds_per_step * (state.max_steps - state.global_step)
        finish = now() + math.ceil(remaining)
        self.store.update_job(self.job_id, only_if=("running",), estimated_finish=finish)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        step, loss = state.global_step, float(logs["loss"])
        self.rows.append({"step": step, "train_loss": loss})
        self.store.add_event(
            self.job_id,
            f"Step {step}/{state.max_steps}: training loss={loss:.4f}",
            data={"step": step, "train_loss": loss, "total_steps": state.max_steps},
        )

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self._stopping() or not self.rows:
            return
        step = state.global_step
        metrics = {"step": step, "train_loss": self.rows[-1]["train_loss"]}
        if self.validation is not None:
            valid_loss, valid_accuracy = token_metrics(model, self.tokenizer, self.validation)
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


class Worker:
    """Validates jobs' files and trains queued jobs one at a time in a background thread."""

    def __init__(self, store: Store, organization: str, max_steps: int | None = None):
        self.store, self.organization, self.max_steps = store, organization, max_steps
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fine-tuning", daemon=True)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Recover jobs a stopped server left behind, then start training queued jobs."""
        self.store.remove_partial_files()
        for job in self.store.jobs_with_status("running"):
            self._fail(
                job["id"],
                JobFailed(
                    "job_interrupted",
                    "The server stopped while this job was running, so training did not "
                    "finish. Create the job again to retrain.",
                ),
            )
        for job in self.store.jobs_with_status("validating_files"):
            self.submit(job["id"])
        for job in self.store.jobs_with_status("queued"):
            self._queue.put(job["id"])
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop training (a running job is marked failed) and wait for the thread."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def should_stop(self, job_id: str) -> bool:
        """Tell whether a running job must stop now (cancelled, or the server is stopping)."""
        return job_id in self._cancelled or self._stopping.is_set()

    # --- requests from the API ----------------------------------------------------------------

    def submit(self, job_id: str) -> None:
        """Validate a new job's files in a short thread; valid jobs are queued for training."""
        threading.Thread(target=self._validate, args=(job_id,), daemon=True).start()

    def cancel(self, job_id: str) -> dict | None:
        """Cancel a job that has not finished; return it, or None when it already had."""
        active = ("validating_files", "queued", "running")
        job = self.store.update_job(
            job_id, only_if=active, status="cancelled", finished_at=now(), estimated_finish=None
        )
        if job is not None:
            self._cancelled.add(job_id)  # a running job stops after its current step
            self.store.add_event(job_id, "Fine-tuning job cancelled")
        return job

    # --- validation ---------------------------------------------------------------------------

    def _examples(self, file_id: str | None, param: str) -> list[dict]:
        """Return the valid examples of a job's file, or raise JobFailed naming the problems."""
        code = f"invalid_{param}"
        record = self.store.get_file(file_id) if file_id else None
        if record is None:
            raise JobFailed(code, f"File {file_id} no longer exists.", param)
        try:
            report = data.validate(self.store.file_path(file_id))
        except data.DataFileError as error:
            raise JobFailed(code, f"File {file_id} cannot be read: {error}", param) from None
        errors = [problem for problem in report.problems if problem.severity == "error"]
        if errors:
            shown = "; ".join(
                f"line {problem.line}: {problem.message}" for problem in errors[:PROBLEMS_SHOWN]
            )
            more = len(errors) - PROBLEMS_SHOWN
            raise JobFailed(
                code,
                f"File {file_id} ({record['filename']}) is not valid chat-format JSONL: "
                f"{shown}" + (f"; and {more} more" if more > 0 else ""),
                param,
            )
        if param == "training_file" and len(report.examples) < MIN_TRAINING_EXAMPLES:
            raise JobFailed(
                "invalid_n_examples",
                f"Training file {file_id} has {len(report.examples)} example(s), but at least "
                f"{MIN_TRAINING_EXAMPLES} are required.",
                param,
            )
        if not report.examples:
            raise JobFailed(code, f"File {file_id} has no examples.", param)
        return report.examples

    def _validate(self, job_id: str) -> None:
        job = self.store.get_job(job_id)
        if job is None or job["status"] != "validating_files":
            return
        self.store.add_event(job_id, f"Validating training file: {job['training_file']}")
        try:
            self._examples(job["training_file"], "training_file")
            if job.get("validation_file"):
                self._examples(job["validation_file"], "validation_file")
        except JobFailed as failure:
            self._fail(job_id, failure, only_if=("validating_files",))
            return
        if self.store.update_job(job_id, only_if=("validating_files",), status="queued"):
            self.store.add_event(job_id, "Files validated, moving job to queued state")
            self._queue.put(job_id)

    # --- training -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while (job_id := self._queue.get()) is not None:
            if self._stopping.is_set():
                return
            try:
                self._train(job_id)
            except JobFailed as failure:
                self._fail(job_id, failure, only_if=("running",))
            except Exception as error:  # a bug or a broken model: fail the job, keep serving
                traceback.print_exc()
                failure = JobFailed("training_error", f"Training failed: {error!r}")
                self._fail(job_id, failure, only_if=("running",))

    def _fail(self, job_id: str, failure: JobFailed, only_if: tuple[str, ...] = ()) -> None:
        fields = {"status": "failed", "error": failure.error, "finished_at": now()}
        if self.store.update_job(job_id, only_if=only_if, estimated_finish=None, **fields):
            self.store.add_event(job_id, failure.error["message"], level="error")

    def _train(self, job_id: str) -> None:
        job = self.store.update_job(job_id, only_if=("queued",), status="running")
        if job is None:  # cancelled while it waited
            return
        train = self._examples(job["training_file"], "training_file")
        validation = job.get("validation_file")
        validation = self._examples(validation, "validation_file") if validation else None
        hyperparameters = resolve_hyperparameters(job["hyperparameters"], len(train))
        epochs, batch_size = hyperparameters["n_epochs"], hyperparameters["batch_size"]
        total_steps = epochs * math.ceil(len(train) / batch_size)
        capped = self.max_steps is not None and total_steps > self.max_steps
        method = {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
        self.store.update_job(job_id, hyperparameters=hyperparameters, method=method)
        learning_rate = BASE_LEARNING_RATE * hyperparameters["learning_rate_multiplier"]
        self.store.add_event(
            job_id,
            f"Fine-tuning job started: {len(train)} examples, {epochs} epoch(s), batch size "
            f"{batch_size}, learning rate {learning_rate:g}, {total_steps} steps"
            + (f", capped at {self.max_steps} by the server's max_steps" if capped else ""),
        )
        model_name = fine_tuned_name(job, self.organization)
        base = self.store.job_base(job_id)
        model, tokenizer = load_base_model(base)
        validation_set = tokenize_dataset(validation, tokenizer)[0] if validation else None
        callback = JobCallback(self, job, model_name, tokenizer, validation_set)
        folder = self.store.job_dir(job_id)
        result = finetune(
            model,
            tokenizer,
            train,
            method="lora",
            output_dir=folder,
            callbacks=[callback],
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            max_steps=self.max_steps if capped else -1,
            seed=job["seed"],
            logging_steps=1,
            disable_tqdm=True,
        )
        if job_id in self._cancelled:
            self.store.add_event(job_id, f"Training stopped at step {result.steps} (cancelled)")
            return
        if self._stopping.is_set():
            raise JobFailed("job_interrupted", "The server was stopped while this job was running.")
        results = self.store.write_file(
            callback.results_csv(), "step_metrics.csv", "fine-tune-results"
        )
        self.store.add_model(
            {
                "id": model_name,
                "object": "model",
                "created": now(),
                "owned_by": self.organization,
                "metadata": {"base_model": base, "fine_tuning_job": job_id},
            },
            job_id,
            base,
            folder / "final",
        )
        self.store.add_event(job_id, f"New fine-tuned model created: {model_name}")
        done = self.store.update_job(
            job_id,
            only_if=("running",),
            status="succeeded",
            fine_tuned_model=model_name,
            finished_at=now(),
            estimated_finish=None,
            trained_tokens=result.tokens_trained,
            result_files=[results["id"]],
        )
        if done:
            self.store.add_event(job_id, "The job has successfully completed")
