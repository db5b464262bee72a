"""The Fine-tuning API: create jobs (the worker trains them), list, cancel, events, checkpoints."""

from __future__ import annotations

import re
import secrets

from fastapi import APIRouter, Query

from helpers.server.catalogue import MODEL_NAME_PATTERN
from helpers.server.errors import checked_id, invalid, not_found
from helpers.server.params import JOB_NOT_HONOURED, refuse_not_honoured
from helpers.server.routes import page
from helpers.server.schemas import Hyperparameters, JobRequest
from helpers.server.state import ServerState, State
from helpers.server.store import ID_PATTERN, Store, new_id, now

ORGANIZATION_ID = "org-local"
SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HYPERPARAMETER_BOUNDS = {"n_epochs": (1, 50), "batch_size": (1, 256)}

router = APIRouter()


def checked_hyperparameters(request: JobRequest) -> dict:
    """Return the job's hyperparameters (``method`` wins over the legacy field); 400 if bad."""
    given = request.hyperparameters or Hyperparameters()
    if request.method is not None:
        if request.method.type != "supervised":
            raise invalid(
                f"Method '{request.method.type}' is not available here; use 'supervised'.",
                "method.type",
            )
        if request.method.supervised and request.method.supervised.hyperparameters:
            given = request.method.supervised.hyperparameters
    values = {key: "auto" if value is None else value for key, value in given.model_dump().items()}
    for name, (low, high) in HYPERPARAMETER_BOUNDS.items():
        if values[name] != "auto" and not low <= values[name] <= high:
            raise invalid(
                f"{name} must be between {low} and {high}, got {values[name]}.",
                f"hyperparameters.{name}",
            )
    multiplier = values["learning_rate_multiplier"]
    if multiplier != "auto" and multiplier <= 0:
        raise invalid(
            f"learning_rate_multiplier must be greater than 0, got {multiplier}.",
            "hyperparameters.learning_rate_multiplier",
        )
    return values


def checked_metadata(metadata: dict[str, str] | None) -> dict[str, str] | None:
    """Return metadata within OpenAI's limits (16 pairs, keys 64 and values 512 characters)."""
    if metadata is None:
        return None
    if len(metadata) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in metadata.items()):
        raise invalid("metadata allows 16 pairs, keys up to 64 and values up to 512 characters.")
    return metadata


def existing_job(store: Store, job_id: str) -> dict:
    """Return a job; 400 for a malformed id, 404 for an unknown one."""
    found = store.get_job(checked_id(job_id, "fine_tuning_job_id"))
    if found is None:
        raise not_found("fine-tuning job", job_id, "fine_tuning_job_not_found")
    return found


def job_file(store: Store, file_id: str | None, param: str) -> str | None:
    """Check that a job's file exists and is meant for fine-tuning; return its id."""
    if file_id is None:
        return None
    record = store.get_file(file_id) if ID_PATTERN.match(file_id) else None
    if record is None:
        raise invalid(f"Invalid {param}: no file '{file_id}' was uploaded.", param)
    if record["purpose"] != "fine-tune":
        raise invalid(
            f"File '{file_id}' has purpose '{record['purpose']}'; upload it with purpose "
            "'fine-tune'.",
            param,
        )
    return file_id


def job_base(state: ServerState, name: str) -> str:
    """Return the base model a job trains: the model's own, or a fine-tuned model's base."""
    if name.startswith("ft:"):
        found = state.store.adapter_for(name) if MODEL_NAME_PATTERN.match(name) else None
        if found is None:
            message = f"There is no fine-tuned model '{name}' to continue fine-tuning."
            raise invalid(message, "model", "model_not_available")
        return found[0]
    base = state.catalogue.resolve(name)
    if base is None:
        raise state.catalogue.unknown(name)
    return base


def new_job(store: Store, body: JobRequest) -> dict:
    """Return a new FineTuningJob for a request, its files and settings checked; 400 if bad."""
    if body.suffix is not None and not SUFFIX_PATTERN.match(body.suffix):
        raise invalid("suffix takes 1 to 64 letters, digits, '.', '_' or '-'.", "suffix")
    hyperparameters = checked_hyperparameters(body)
    return {
        "id": new_id("ftjob-"),
        "object": "fine_tuning.job",
        "created_at": now(),
        "error": None,
        "fine_tuned_model": None,
        "finished_at": None,
        "hyperparameters": hyperparameters,
        "model": body.model,
        "organization_id": ORGANIZATION_ID,
        "result_files": [],
        "seed": body.seed if body.seed is not None else secrets.randbelow(2**31),
        "status": "validating_files",
        "trained_tokens": None,
        "training_file": job_file(store, body.training_file, "training_file"),
        "validation_file": job_file(store, body.validation_file, "validation_file"),
        "estimated_finish": None,
        "integrations": [],
        "metadata": checked_metadata(body.metadata),
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        "suffix": body.suffix,
    }


@router.post("/fine_tuning/jobs")
def create_job(body: JobRequest, state: State):
    """Record a job and hand it to the worker, which validates its files and trains it."""
    refuse_not_honoured(body.model_extra, JOB_NOT_HONOURED, accepted=())
    base = job_base(state, body.model)
    job = new_job(state.store, body)
    state.store.add_job(job, base)
    served = "" if base == body.model else f", served locally by {base} instead"
    if body.model.startswith("ft:"):
        served = f", a fine-tuned {base}: its adapter trains on"
    state.store.add_event(
        job["id"],
        f"Created fine-tuning job: {job['id']} (base model {body.model}{served}; "
        "LoRA fine-tuning on this machine)",
    )
    state.worker.submit(job["id"])
    return job


@router.get("/fine_tuning/jobs")
def list_jobs(state: State, after: str | None = None, limit: int = Query(20, ge=1, le=100)):
    """List the jobs, newest first."""
    return page(*state.store.list_jobs(after, limit))


@router.get("/fine_tuning/jobs/{job_id}")
def retrieve_job(job_id: str, state: State):
    """Return a job."""
    return existing_job(state.store, job_id)


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(job_id: str, state: State):
    """Cancel a job that has not finished; 400 for one that has."""
    existing_job(state.store, job_id)
    cancelled = state.worker.cancel(job_id)
    if cancelled is None:
        status = state.store.get_job(job_id)["status"]
        raise invalid(f"Job {job_id} has already finished ({status}); nothing to cancel.", "id")
    return cancelled


@router.post("/fine_tuning/jobs/{job_id}/pause")
@router.post("/fine_tuning/jobs/{job_id}/resume")
def pause_or_resume(job_id: str, state: State):
    """Answer that pausing and resuming are not available here."""
    existing_job(state.store, job_id)
    raise invalid(
        "Pausing and resuming jobs is not supported by this local server; cancel the job "
        "and create it again instead.",
        "id",
        "unsupported",
    )


@router.get("/fine_tuning/jobs/{job_id}/events")
def list_events(
    job_id: str, state: State, after: str | None = None, limit: int = Query(20, ge=1, le=1000)
):
    """List a job's events, newest first."""
    existing_job(state.store, job_id)
    return page(*state.store.list_events(job_id, after, limit))


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def list_checkpoints(
    job_id: str, state: State, after: str | None = None, limit: int = Query(10, ge=1, le=100)
):
    """List a job's checkpoints, newest first."""
    existing_job(state.store, job_id)
    return page(*state.store.list_checkpoints(job_id, after, limit))
