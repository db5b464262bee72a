"""The fine-tuning worker: validate a job's files, then train jobs one at a time with LoRA.

A job goes ``validating_files`` (a short thread per job runs the data layer's
validator) → ``queued`` → ``running`` (one training thread, through
:func:`helpers.train.finetune` on its own copy of the base model) → ``succeeded``,
``failed`` or ``cancelled``. Training reports through a Trainer callback
(:class:`helpers.server.callback.JobCallback`): metrics events, per-epoch checkpoints,
the results CSV. A job whose model is a fine-tuned one (``ft:...``) continues training
that model's adapter as a new one.

Hyperparameters, as OpenAI names them:

- ``n_epochs``: ``"auto"`` follows OpenAI's cookbook rule (:func:`helpers.data.default_epochs`);
- ``batch_size``: ``"auto"`` is :data:`AUTO_BATCH_SIZE` (the course's CPU default);
- ``learning_rate_multiplier``: scales LoRA's default learning rate
  (``helpers.train.DEFAULT_LEARNING_RATES["lora"]``); ``"auto"`` is 1.

The server's ``max_steps`` caps every job's optimizer steps: a knob for tests and
short workshops, stated in the job's events when it applies.
"""

from __future__ import annotations

import functools
import math
import queue
import re
import threading
import traceback
import warnings
from pathlib import Path

from helpers import data
from helpers.chat import tokenize_dataset
from helpers.models import frozen_weights_dtype, load_base_model, release_memory
from helpers.server.callback import JobCallback
from helpers.server.cores import CoreShare
from helpers.server.store import Store, now
from helpers.train import DEFAULT_LEARNING_RATES, finetune

AUTO_BATCH_SIZE = 4
AUTO_LEARNING_RATE_MULTIPLIER = 1.0
MIN_TRAINING_EXAMPLES = 10  # OpenAI's minimum
PROBLEMS_SHOWN = 5
MAX_SEQ_LENGTH = 512  # tokens per training example; longer ones are truncated (and reported)


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
    """Return the job's model name in OpenAI's form ``ft:{base}:{org}:{suffix}:{id}``.

    A job that continues a fine-tuned model is named after that model's base model.
    """
    base = job["model"].split(":")[1] if job["model"].startswith("ft:") else job["model"]
    base = re.sub(r"[^A-Za-z0-9._-]", "-", Path(base).name)  # a folder or hub id
    short_id = job["id"].removeprefix("ftjob-")[:8]
    return f"ft:{base}:{organization}:{job.get('suffix') or ''}:{short_id}"


def example_list(numbers: list[int], lines: list[int]) -> str:
    """Return example numbers (1-based) with their file lines, as "3 (line 4), 7 (line 9)"."""
    return ", ".join(f"{n} (line {lines[n - 1]})" for n in numbers)


class Worker:
    """Validates jobs' files and trains queued jobs one at a time in a background thread."""

    def __init__(
        self,
        store: Store,
        organization: str,
        max_steps: int | None = None,
        cores: CoreShare | None = None,
    ):
        self.store, self.organization, self.max_steps = store, organization, max_steps
        self.cores = cores or CoreShare()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fine-tuning", daemon=True)
        self._validators: list[threading.Thread] = []

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Recover jobs a stopped server left behind, then start training queued jobs."""
        for job in self.store.jobs_with_status("running"):
            self._fail(
                job["id"],
                JobFailed(
                    "job_interrupted",
                    "The server stopped while this job was running, so training did not "
                    "finish. Create the job again to retrain.",
                ),
            )
        self.store.reconcile()
        for job in self.store.jobs_with_status("validating_files"):
            self.submit(job["id"])
        for job in self.store.jobs_with_status("queued"):
            self._queue.put(job["id"])
        self._thread.start()

    def stop(self) -> None:
        """Stop training (a running job stops after its step and is marked failed); wait for it.

        Returns only when no thread of the worker can write to the store any more.
        """
        self._stopping.set()
        self._queue.put(None)
        for thread in [self._thread, *self._validators]:
            if thread.is_alive():
                thread.join()

    def should_stop(self, job_id: str) -> bool:
        """Tell whether a running job must stop now (cancelled, or the server is stopping)."""
        return job_id in self._cancelled or self._stopping.is_set()

    # --- requests from the API ----------------------------------------------------------------

    def submit(self, job_id: str) -> None:
        """Validate a new job's files in a short thread; valid jobs are queued for training."""
        thread = threading.Thread(target=self._validate, args=(job_id,), daemon=True)
        self._validators = [t for t in self._validators if t.is_alive()] + [thread]
        thread.start()

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

    def _examples(self, file_id: str | None, param: str) -> data.ValidationReport:
        """Return the report of a job's file (its examples are valid), or raise JobFailed."""
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
        return report

    def _validate(self, job_id: str) -> None:
        """Validate a job's files: queue the job if they pass, else fail it."""
        job = self.store.get_job(job_id)
        if job is None or job["status"] != "validating_files" or self._stopping.is_set():
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
        """Train queued jobs one at a time until stopped; a failure fails only its job."""
        while (job_id := self._queue.get()) is not None:
            if self._stopping.is_set():
                return
            try:
                with self.cores.train():
                    self._train(job_id)
            except JobFailed as failure:
                self._fail(job_id, failure, only_if=("running",))
            except Exception as error:  # a bug or a broken model: fail the job, keep serving
                traceback.print_exc()
                message = f"Training failed: {type(error).__name__}: {error}"
                self._fail(job_id, JobFailed("training_error", message), only_if=("running",))
            finally:
                release_memory()  # the job's model and buffers go back to the system

    def _fail(self, job_id: str, failure: JobFailed, only_if: tuple[str, ...] = ()) -> None:
        """Mark a job failed with its error (only from a status in ``only_if``, if given)."""
        fields = {"status": "failed", "error": failure.error, "finished_at": now()}
        if self.store.update_job(job_id, only_if=only_if, estimated_finish=None, **fields):
            self.store.add_event(job_id, failure.error["message"], level="error")

    def _tokenize(self, job_id: str, report: data.ValidationReport, tokenizer, what: str):
        """Tokenise a file's examples; report truncated and dropped examples as job events."""
        name = what.replace("_", " ")
        try:
            with warnings.catch_warnings():  # the job's events say it
                warnings.simplefilter("ignore", UserWarning)
                dataset, tokens = tokenize_dataset(report.examples, tokenizer, MAX_SEQ_LENGTH)
        except ValueError as error:  # nothing at all left to train on
            raise JobFailed(f"invalid_{what}", f"The {name}: {error}", what) from None
        truncated = [n for n in tokens.truncated_lines if n not in tokens.dropped_lines]
        if truncated:
            self.store.add_event(
                job_id,
                f"{len(truncated)} {name} example(s) are longer than {MAX_SEQ_LENGTH} tokens "
                f"and were truncated (their end is not trained on): "
                f"examples {example_list(truncated, report.lines)}",
                level="warn",
            )
        if tokens.dropped_lines:
            self.store.add_event(
                job_id,
                f"{len(tokens.dropped_lines)} {name} example(s) have no assistant tokens left "
                f"within {MAX_SEQ_LENGTH} tokens and were dropped: "
                f"examples {example_list(tokens.dropped_lines, report.lines)}",
                level="warn",
            )
        return dataset

    def _load(self, job: dict):
        """Load the job's model: its base, plus the adapter of the fine-tuned model it continues."""
        base = self.store.job_base(job["id"])
        parent = self.store.adapter_for(job["model"]) if job["model"].startswith("ft:") else None
        if job["model"].startswith("ft:") and parent is None:
            message = f"The model {job['model']} was deleted before this job started."
            raise JobFailed("model_not_found", message, "model")
        model, tokenizer = load_base_model(base, dtype=frozen_weights_dtype("lora"))
        if parent is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, parent[1], is_trainable=True)
        return model, tokenizer

    def _plan(self, job: dict, n_examples: int) -> dict:
        """Fix a job's hyperparameters, record and announce them; return finetune's settings."""
        hyperparameters = resolve_hyperparameters(job["hyperparameters"], n_examples)
        epochs, batch_size = hyperparameters["n_epochs"], hyperparameters["batch_size"]
        total_steps = epochs * math.ceil(n_examples / batch_size)
        capped = self.max_steps is not None and total_steps > self.max_steps
        method = {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
        self.store.update_job(job["id"], hyperparameters=hyperparameters, method=method)
        learning_rate = DEFAULT_LEARNING_RATES["lora"] * hyperparameters["learning_rate_multiplier"]
        self.store.add_event(
            job["id"],
            f"Fine-tuning job started: {n_examples} examples, {epochs} epoch(s), batch "
            f"size {batch_size}, learning rate {learning_rate:g}, {total_steps} steps"
            + (f", capped at {self.max_steps} by the server's max_steps" if capped else ""),
        )
        return {
            "num_train_epochs": epochs,
            "per_device_train_batch_size": batch_size,
            "learning_rate": learning_rate,
            "max_steps": self.max_steps if capped else -1,
        }

    def _train(self, job_id: str) -> None:
        """Train a queued job to its fine-tuned model (a cancelled one stops after a step)."""
        job = self.store.update_job(job_id, only_if=("queued",), status="running")
        if job is None:  # cancelled while it waited
            return
        train = self._examples(job["training_file"], "training_file")
        validation = job.get("validation_file")
        validation = self._examples(validation, "validation_file") if validation else None
        settings = self._plan(job, len(train.examples))
        model_name = fine_tuned_name(job, self.organization)
        model, tokenizer = self._load(job)
        train_set = self._tokenize(job_id, train, tokenizer, "training_file")
        validation_set = validation and self._tokenize(
            job_id, validation, tokenizer, "validation_file"
        )
        stop = functools.partial(self.should_stop, job_id)
        callback = JobCallback(
            self.store, job_id, model_name, tokenizer, validation_set, self.cores, stop
        )
        folder = self.store.job_dir(job_id)
        result = finetune(
            model,
            tokenizer,
            train_set,
            method="lora",
            output_dir=folder,
            callbacks=[callback],
            seed=job["seed"],
            logging_steps=1,
            disable_tqdm=True,
            **settings,
        )
        steps, tokens = result.steps, result.tokens_trained
        del model, result  # the result holds the model: free both before the model is served
        release_memory()
        if job_id in self._cancelled:
            self.store.add_event(job_id, f"Training stopped at step {steps} (cancelled)")
            return
        if self._stopping.is_set():
            raise JobFailed("job_interrupted", "The server was stopped while this job was running.")
        results = self.store.write_file(
            callback.results_csv(), "step_metrics.csv", "fine-tune-results"
        )
        self._succeed(job_id, model_name, folder / "final", tokens, results["id"])

    def _succeed(self, job_id: str, name: str, adapter: Path, tokens: int, results: str) -> None:
        """Mark a job succeeded and register its model, in one transaction (both or neither)."""
        base = self.store.job_base(job_id)
        with self.store.transaction():
            done = self.store.update_job(
                job_id,
                only_if=("running",),
                status="succeeded",
                fine_tuned_model=name,
                finished_at=now(),
                estimated_finish=None,
                trained_tokens=tokens,
                result_files=[results],
            )
            if done is None:  # cancelled during the last step: no model
                return
            model = {
                "id": name,
                "object": "model",
                "created": now(),
                "owned_by": self.organization,
                "metadata": {"base_model": base, "fine_tuning_job": job_id},
            }
            self.store.add_model(model, job_id, base, adapter)
            self.store.add_event(job_id, f"New fine-tuned model created: {name}")
            self.store.add_event(job_id, "The job has successfully completed")
