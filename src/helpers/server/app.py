"""The OpenAI-compatible API: routes, errors and authentication, and the chat models behind it.

Paths, objects and errors follow what the official ``openai`` client sends and parses,
so the same code talks to this server or to OpenAI by changing ``base_url`` and
``api_key``. Errors are always ``{"error": {message, type, param, code}}`` with the
status the client turns into the right exception (400, 401, 404, 413; 5xx only for
real server faults, since the client retries those).

Base models are the embedded SmolLM2, Hugging Face models already downloaded, and
OpenAI's model names, which :data:`OPENAI_MODEL_NAMES` maps to the embedded model
(``aliases`` adds to or overrides the map; only an alias makes a local folder a model,
so clients cannot probe the server's folders). Chat models are loaded once, outside
any lock shared between models, and kept in a small LRU pool. Concurrent requests to
one model decode together in one batch (:mod:`helpers.server.batching`), while the
training thread works on its own copy. Sampling draws from a generator of its own per
request, never from torch's global one that training's dropout uses.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
import threading
from collections import OrderedDict
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath
from typing import Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from helpers.chat import ensure_chat_template, render_prompt
from helpers.models import EMBEDDED_MODEL, ModelLoadError, load_base_model
from helpers.server.batching import MAX_BATCH, Batcher, supports_batching
from helpers.server.cores import CoreShare
from helpers.server.store import ID_PATTERN, Store, new_id, now
from helpers.server.worker import Worker

log = logging.getLogger("helpers.server")

ORGANIZATION = "local"  # the ``org`` part of fine-tuned model names
ORGANIZATION_ID = "org-local"
# OpenAI's fine-tunable models (and the seed's gpt-3.5-turbo), served by the embedded model.
OPENAI_MODEL_NAMES = (
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-1106",
    "gpt-4o-mini",
    "gpt-4o-mini-2024-07-18",
    "gpt-4o-2024-08-06",
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14",
    "babbage-002",
    "davinci-002",
)
BASE_MODELS_CREATED = 1730419200  # 2024-11-01, SmolLM2's release
UPLOAD_PURPOSES = ("fine-tune", "assistants", "batch", "vision", "user_data")
DEFAULT_MAX_TOKENS = 512  # when a request sets no limit: keeps a CPU busy for seconds, not hours
MAX_CHOICES = 8
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._:/~-]{1,256}$")
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
COPY_CHUNK = 1 << 20
FORM_OVERHEAD = 1 << 16  # multipart headers and the purpose field, beyond the file itself


# --- errors -------------------------------------------------------------------------------


class UploadTooLarge(Exception):
    """An upload's body passed the server's limit while it arrived."""


class APIError(Exception):
    """An error answered as OpenAI's ``{"error": {...}}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.body = (
            status,
            {"message": message, "type": kind, "param": param, "code": code},
        )

    def response(self) -> JSONResponse:
        """Return the error as a JSON response."""
        return JSONResponse({"error": self.body}, status_code=self.status)


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """Return a 400 invalid-request error."""
    return APIError(400, message, param, code)


def not_found(kind: str, object_id: str, code: str) -> APIError:
    """Return a 404 error for an unknown id."""
    return APIError(404, f"No such {kind}: '{object_id}'.", "id", code)


def checked_id(object_id: str, param: str) -> str:
    """Return an id if it looks like one of ours (letters, digits, - and _), else a 400."""
    if not ID_PATTERN.match(object_id):
        raise invalid(f"Invalid id {object_id!r}: expected letters, digits, '-' or '_'.", param)
    return object_id


def page(items: list[dict], has_more: bool) -> dict:
    """Return a list envelope that the client's cursor pages understand."""
    return {
        "object": "list",
        "data": items,
        "has_more": has_more,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
    }


# --- request bodies -----------------------------------------------------------------------


class Hyperparameters(BaseModel):
    """Supervised fine-tuning hyperparameters, each a number or ``"auto"``."""

    model_config = ConfigDict(extra="forbid")
    n_epochs: Literal["auto"] | int | None = None
    batch_size: Literal["auto"] | int | None = None
    learning_rate_multiplier: Literal["auto"] | float | None = None


class Supervised(BaseModel):
    """The ``supervised`` part of a job's ``method``."""

    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    """A job's fine-tuning method; only ``supervised`` is available here."""

    type: str
    supervised: Supervised | None = None


class JobRequest(BaseModel):
    """The body of ``POST /fine_tuning/jobs``."""

    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None


class ChatRequest(BaseModel):
    """The body of ``POST /chat/completions`` (other OpenAI parameters are ignored)."""

    model: str
    messages: list[dict]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = None
    stream_options: dict | None = None


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
    bounds = {"n_epochs": (1, 50), "batch_size": (1, 256)}
    for name, (low, high) in bounds.items():
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


# --- base models --------------------------------------------------------------------------


class Catalogue:
    """The base model names the server accepts and what each one loads."""

    def __init__(self, aliases: dict[str, str] | None = None):
        self.aliases = {name: EMBEDDED_MODEL for name in OPENAI_MODEL_NAMES} | (aliases or {})

    def resolve(self, name: str) -> str | None:
        """Return what the training core loads for a base model name, or None if unknown.

        A hub id resolves to its folder in the Hugging Face cache (so it loads offline, and
        never as a folder of the same name on this machine); paths never resolve.
        """
        if name in self.aliases:
            return self.aliases[name]
        if name == EMBEDDED_MODEL:
            return name
        if not HUB_ID_PATTERN.match(name) or ".." in name:
            return None
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(name, "config.json")
        except ValueError:  # not a valid hub id
            return None
        return str(Path(cached).parent) if isinstance(cached, str) else None

    def models(self) -> list[dict]:
        """Return the listed base models as Model objects."""
        listed = [self.model(EMBEDDED_MODEL)]
        return listed + [self.model(name) for name in self.aliases]

    def model(self, name: str) -> dict:
        """Return a base model's Model object; an alias states which model serves it."""
        served_by = self.aliases.get(name, name)
        owner = "finetune-course" if served_by == name else f"finetune-course ({served_by})"
        return {
            "id": name,
            "object": "model",
            "created": BASE_MODELS_CREATED,
            "owned_by": owner,
            "metadata": {"served_by": served_by},
        }

    def unknown(self, name: str) -> APIError:
        """Return the 400 for a base model name that is not available, listing what is."""
        names = ", ".join([EMBEDDED_MODEL, *self.aliases])
        return invalid(
            f"Model '{name}' is not available for fine-tuning here. Available: {names}; a "
            "fine-tuned model (ft:...); a Hugging Face model downloaded first with "
            "`python -m helpers prepare-model NAME`; or a local folder that the server was "
            "started with as `--alias NAME=FOLDER`.",
            "model",
            "model_not_available",
        )


# --- chat models and generation ---------------------------------------------------------------


class LoadedModel:
    """A model ready for chat, and the batch that its concurrent requests decode in."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self._batcher: Batcher | None = None
        self._lock = threading.Lock()

    def batcher(self, cores: CoreShare) -> Batcher:
        """Return the model's batcher, made on first use."""
        with self._lock:
            if self._batcher is None:
                size = MAX_BATCH if supports_batching(self.model) else 1
                self._batcher = Batcher(self.model, self.tokenizer, cores, size)
            return self._batcher


def load_chat_model(base: str, adapter: Path | None) -> LoadedModel:
    """Load a base model for chat, with a LoRA adapter merged into it when given."""
    model, tokenizer = load_base_model(base)
    if adapter is not None:
        from peft import PeftModel

        # Merged weights generate as fast as the base model.
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    ensure_chat_template(tokenizer)
    return LoadedModel(model, tokenizer)


class ModelPool:
    """Chat models loaded once and kept, the least recently used dropped beyond ``size``.

    A model loads outside the pool's lock (the first conversion takes ~25 s), so requests
    for models already loaded go on meanwhile; requests for a model that is loading wait
    for that one load.
    """

    def __init__(self, size: int = 3, loader=load_chat_model):
        self.size, self.loader = size, loader
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, Future] = {}
        self._lock = threading.Lock()

    def get(self, base: str, adapter: Path | None) -> LoadedModel:
        """Return the loaded model ``base``, plus a LoRA adapter when given."""
        key = f"{base}|{adapter or ''}"  # aliases of one base model share it
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loading = self._loading.get(key)
            if loading is None:
                self._loading[key] = Future()
        if loading is not None:
            return loading.result()
        try:
            loaded = self.loader(base, adapter)
        except BaseException as error:
            with self._lock:
                self._loading.pop(key).set_exception(error)
            raise
        with self._lock:
            self._models[key] = loaded
            while len(self._models) > self.size:
                self._models.popitem(last=False)
            self._loading.pop(key).set_result(loaded)
        return loaded

    def forget(self, adapter: Path) -> None:
        """Drop the models that use an adapter (after it was deleted)."""
        with self._lock:
            for key in [key for key in self._models if key.endswith(f"|{adapter}")]:
                del self._models[key]


def chat_events(loaded: LoadedModel, prompt_ids: list[int], settings: dict, cores: CoreShare):
    """Yield the items the model's batch queues for one request; cancel it if closed."""
    request = loaded.batcher(cores).submit(prompt_ids, settings)
    try:
        while (item := request.out.get()) is not None:
            if item[0] == "error":
                raise item[2]
            yield item
    finally:
        request.cancel.set()  # the client went away, or we are done


def message_text(message: dict, position: int) -> dict:
    """Return a request message as ``{role, content}`` text, or a 400 naming it."""
    role, content = message.get("role"), message.get("content")
    param = f"messages.[{position}]"
    if role == "developer":
        role = "system"
    if role not in ("system", "user", "assistant"):
        raise invalid(f"Role {role!r} is not supported here (system, user, assistant).", param)
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        if len(parts) != len(content) or not all(isinstance(part, str) for part in parts):
            raise invalid("Only text content parts are supported here.", f"{param}.content")
        content = "".join(parts)
    if not isinstance(content, str):
        raise invalid("Each message needs text content.", f"{param}.content")
    return {"role": role, "content": content}


def chat_settings(body: ChatRequest, prompt_tokens: int, context: int) -> dict:
    """Return the generation settings of a request; 400 for values out of range."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = getattr(body, name)
        if value is not None and value < 1:
            raise invalid(f"{name} must be at least 1, got {value}.", name)
    limit = body.max_tokens if body.max_completion_tokens is None else body.max_completion_tokens
    if prompt_tokens >= context:
        raise invalid(
            f"The prompt has {prompt_tokens} tokens; this model's context is {context} tokens.",
            "messages",
            "context_length_exceeded",
        )
    temperature = 1.0 if body.temperature is None else body.temperature
    top_p = 1.0 if body.top_p is None else body.top_p
    n = body.n or 1
    if not 0 <= temperature <= 2:
        raise invalid("temperature must be between 0 and 2.", "temperature")
    if not 0 < top_p <= 1:
        raise invalid("top_p must be greater than 0 and at most 1.", "top_p")
    if not 1 <= n <= MAX_CHOICES:
        raise invalid(f"n must be between 1 and {MAX_CHOICES}.", "n")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4:
        raise invalid("Up to 4 stop sequences are allowed.", "stop")
    return {
        "max_tokens": min(limit or DEFAULT_MAX_TOKENS, context - prompt_tokens),
        "temperature": temperature,
        "top_p": top_p,
        "n": n,
        "stop": stop,
        "seed": body.seed,
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """Return a CompletionUsage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# --- the application ------------------------------------------------------------------------


def server_fault(request_id: str) -> dict:
    """Return the body of a 500 error: a short message with the id that the log has."""
    message = f"Internal server error (request {request_id}); the server's log has the details."
    return {"message": message, "type": "server_error", "param": None, "code": None}


def create_app(
    data_dir: str | Path,
    api_key: str,
    max_steps: int | None = None,
    max_upload_bytes: int = 100 * 2**20,
    aliases: dict[str, str] | None = None,
    max_loaded_models: int = 3,
) -> FastAPI:
    """Return the server's FastAPI application over a data folder."""
    store = Store(data_dir)
    cores = CoreShare()
    worker = Worker(store, ORGANIZATION, max_steps, cores)
    catalogue = Catalogue(aliases)
    pool = ModelPool(max_loaded_models)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        worker.stop()
        store.close()

    app = FastAPI(title="finetune-course local OpenAI-compatible server", lifespan=lifespan)

    # --- errors and authentication ---------------------------------------------------------

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError):
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        location = [str(part) for part in first["loc"] if part not in ("body", "query", "path")]
        param = ".".join(location) or None
        message = f"Invalid value for {param or 'the request'}: {first['msg']}"
        return invalid(message, param).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        message = f"{error.detail}: {request.method} {request.url.path}"
        return APIError(error.status_code, message).response()

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception):
        request_id = new_id("req_")
        path = f"{request.method} {request.url.path}"
        log.error("Request %s (%s) failed", request_id, path, exc_info=error)
        return JSONResponse({"error": server_fault(request_id)}, status_code=500)

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            message = "You didn't provide an API key: send 'Authorization: Bearer <key>'."
            return APIError(401, message).response()
        if not hmac.compare_digest(key.strip().encode(), api_key.encode()):
            message = "Incorrect API key provided (see the key the server printed at start)."
            return APIError(401, message, code="invalid_api_key").response()
        return await call_next(request)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    # --- files ------------------------------------------------------------------------------

    def existing_file(file_id: str) -> dict:
        found = store.get_file(checked_id(file_id, "file_id"))
        if found is None:
            raise not_found("File", file_id, "file_not_found")
        return found

    def save_upload(upload: UploadFile, purpose: str) -> dict:
        """Copy an upload to a temporary file within the size limit, then store it."""
        temp, size = store.temp_path(), 0
        try:
            with open(temp, "wb") as out:
                while chunk := upload.file.read(COPY_CHUNK):
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise too_large()
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            name = PurePosixPath((upload.filename or "").replace("\\", "/")).name
            name = "".join(c for c in name if c.isprintable())[:255] or "upload.jsonl"
            return store.add_file(temp, name, purpose)
        finally:
            temp.unlink(missing_ok=True)

    def too_large() -> APIError:
        limit = f"{max_upload_bytes / 2**20:g} MB"
        return APIError(413, f"The file is larger than this server's limit of {limit}.", "file")

    @app.post("/v1/files")
    async def upload_file(request: Request):
        # The body is counted as it arrives, whether its length is declared or it comes in
        # chunks: the form parser never spools more than the limit (plus one chunk).
        received, more = 0, True

        async def receive():
            nonlocal received, more
            message = await request.receive()
            received += len(message.get("body", b""))
            more = message["type"] == "http.request" and message.get("more_body", False)
            if received > max_upload_bytes + FORM_OVERHEAD:
                raise UploadTooLarge
            return message

        try:
            if int(request.headers.get("content-length") or 0) > max_upload_bytes + FORM_OVERHEAD:
                raise UploadTooLarge
            async with Request(request.scope, receive).form(max_files=1, max_fields=8) as form:
                upload, purpose = form.get("file"), form.get("purpose")
                if not isinstance(upload, UploadFile):
                    raise invalid("Send the file as the multipart field 'file'.", "file")
                if purpose not in UPLOAD_PURPOSES:
                    message = f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}."
                    raise invalid(message, "purpose")
                return await run_in_threadpool(save_upload, upload, purpose)
        except UploadTooLarge:
            while more:  # read the rest without keeping it, so the client sees the answer
                message = await request.receive()
                more = message["type"] == "http.request" and message.get("more_body", False)
            raise too_large() from None

    @app.get("/v1/files")
    def list_files(
        after: str | None = None,
        limit: int = Query(10000, ge=1, le=10000),
        order: Literal["asc", "desc"] = "desc",
        purpose: str | None = None,
    ):
        return page(*store.list_files(after, limit, order, purpose))

    @app.get("/v1/files/{file_id}")
    def retrieve_file(file_id: str):
        return existing_file(file_id)

    @app.delete("/v1/files/{file_id}")
    def delete_file(file_id: str):
        existing_file(file_id)
        store.delete_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    @app.get("/v1/files/{file_id}/content")
    def file_content(file_id: str):
        record = existing_file(file_id)
        return FileResponse(store.file_path(file_id), filename=record["filename"])

    # --- fine-tuning jobs ----------------------------------------------------------------------

    def existing_job(job_id: str) -> dict:
        found = store.get_job(checked_id(job_id, "fine_tuning_job_id"))
        if found is None:
            raise not_found("fine-tuning job", job_id, "fine_tuning_job_not_found")
        return found

    def job_file(file_id: str | None, param: str) -> str | None:
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

    def job_base(name: str) -> str:
        """Return the base model a job trains: the model's own, or a fine-tuned model's base."""
        if name.startswith("ft:"):
            found = store.adapter_for(name) if MODEL_NAME_PATTERN.match(name) else None
            if found is None:
                message = f"There is no fine-tuned model '{name}' to continue fine-tuning."
                raise invalid(message, "model", "model_not_available")
            return found[0]
        base = catalogue.resolve(name)
        if base is None:
            raise catalogue.unknown(name)
        return base

    @app.post("/v1/fine_tuning/jobs")
    def create_job(body: JobRequest):
        base = job_base(body.model)
        if body.suffix is not None and not SUFFIX_PATTERN.match(body.suffix):
            raise invalid("suffix takes 1 to 64 letters, digits, '.', '_' or '-'.", "suffix")
        hyperparameters = checked_hyperparameters(body)
        job = {
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
            "training_file": job_file(body.training_file, "training_file"),
            "validation_file": job_file(body.validation_file, "validation_file"),
            "estimated_finish": None,
            "integrations": [],
            "metadata": checked_metadata(body.metadata),
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            "suffix": body.suffix,
        }
        store.add_job(job, base)
        served = "" if base == body.model else f", served locally by {base} instead"
        if body.model.startswith("ft:"):
            served = f", a fine-tuned {base}: its adapter trains on"
        store.add_event(
            job["id"],
            f"Created fine-tuning job: {job['id']} (base model {body.model}{served}; "
            "LoRA fine-tuning on this machine)",
        )
        worker.submit(job["id"])
        return job

    @app.get("/v1/fine_tuning/jobs")
    def list_jobs(after: str | None = None, limit: int = Query(20, ge=1, le=100)):
        return page(*store.list_jobs(after, limit))

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    def retrieve_job(job_id: str):
        return existing_job(job_id)

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    def cancel_job(job_id: str):
        existing_job(job_id)
        cancelled = worker.cancel(job_id)
        if cancelled is None:
            status = store.get_job(job_id)["status"]
            raise invalid(f"Job {job_id} has already finished ({status}); nothing to cancel.", "id")
        return cancelled

    @app.post("/v1/fine_tuning/jobs/{job_id}/pause")
    @app.post("/v1/fine_tuning/jobs/{job_id}/resume")
    def pause_or_resume(job_id: str):
        existing_job(job_id)
        raise invalid(
            "Pausing and resuming jobs is not supported by this local server; cancel the job "
            "and create it again instead.",
            "id",
            "unsupported",
        )

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    def list_events(job_id: str, after: str | None = None, limit: int = Query(20, ge=1, le=1000)):
        existing_job(job_id)
        return page(*store.list_events(job_id, after, limit))

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    def list_checkpoints(
        job_id: str, after: str | None = None, limit: int = Query(10, ge=1, le=100)
    ):
        existing_job(job_id)
        return page(*store.list_checkpoints(job_id, after, limit))

    # --- models ------------------------------------------------------------------------------

    def known_model(model_id: str) -> dict:
        found = store.get_model(model_id)
        if found is None and (model_id == EMBEDDED_MODEL or model_id in catalogue.aliases):
            found = catalogue.model(model_id)
        if found is None:
            raise APIError(
                404,
                f"The model '{model_id}' does not exist.",
                "model",
                "model_not_found",
            )
        return found

    @app.get("/v1/models")
    def list_models():
        return page(catalogue.models() + store.list_models(), False)

    @app.get("/v1/models/{model_id:path}")
    def retrieve_model(model_id: str):
        return known_model(model_id)

    @app.delete("/v1/models/{model_id:path}")
    def delete_model(model_id: str):
        known_model(model_id)
        fine_tuned = store.adapter_for(model_id) if store.get_model(model_id) else None
        if fine_tuned is None:
            raise invalid(f"'{model_id}' is a base model; only fine-tuned models can be deleted.")
        store.delete_model(model_id)
        pool.forget(fine_tuned[1])
        return {"id": model_id, "object": "model", "deleted": True}

    # --- chat completions ------------------------------------------------------------------------

    def chat_model(name: str) -> LoadedModel:
        """Return the loaded model for a fine-tuned, checkpoint or base model name; 404 if none."""
        if not MODEL_NAME_PATTERN.match(name):
            raise invalid(f"Invalid model name {name!r}.", "model")
        fine_tuned = store.adapter_for(name)
        base, adapter = fine_tuned if fine_tuned else (catalogue.resolve(name), None)
        if base is None:
            raise APIError(404, f"The model '{name}' does not exist.", "model", "model_not_found")
        try:
            return pool.get(base, adapter)
        except (ModelLoadError, OSError, ValueError) as error:
            raise invalid(f"Model '{name}' could not be loaded: {error}", "model") from None

    @app.post("/v1/chat/completions")
    def chat_completions(body: ChatRequest):
        if not body.messages:
            raise invalid("messages must hold at least one message.", "messages")
        messages = [message_text(m, i) for i, m in enumerate(body.messages)]
        loaded = chat_model(body.model)
        text = render_prompt(loaded.tokenizer, messages)
        prompt_ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        prompt_tokens = len(prompt_ids)
        context = getattr(loaded.model.config, "max_position_embeddings", 2048)
        settings = chat_settings(body, prompt_tokens, context)
        reply = {"id": new_id("chatcmpl-"), "created": now(), "model": body.model}
        events = chat_events(loaded, prompt_ids, settings, cores)
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                sse_chunks(reply, events, prompt_tokens, include_usage),
                media_type="text/event-stream",
            )
        texts, finishes = [""] * settings["n"], [("stop", 0)] * settings["n"]
        for kind, index, payload in events:
            if kind == "text":
                texts[index] += payload
            else:
                finishes[index] = payload
        choices = [
            {
                "index": index,
                "message": {"role": "assistant", "content": texts[index], "refusal": None},
                "finish_reason": finishes[index][0],
                "logprobs": None,
            }
            for index in range(settings["n"])
        ]
        completion_tokens = sum(tokens for _, tokens in finishes)
        return {
            **reply,
            "object": "chat.completion",
            "choices": choices,
            "usage": usage(prompt_tokens, completion_tokens),
        }

    return app


def sse_chunks(reply: dict, events, prompt_tokens: int, include_usage: bool):
    """Yield a chat completion as server-sent ``chat.completion.chunk`` events, then [DONE]."""

    def chunk(choices: list[dict], **extra) -> str:
        body = {**reply, "object": "chat.completion.chunk", "choices": choices, **extra}
        if include_usage:
            body.setdefault("usage", None)
        return f"data: {json.dumps(body)}\n\n"

    started, completion_tokens = set(), 0
    try:
        for kind, index, payload in events:
            if index not in started:
                started.add(index)
                yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""}}])
            if kind == "text":
                yield chunk([{"index": index, "delta": {"content": payload}}])
            else:
                completion_tokens += payload[1]
                yield chunk([{"index": index, "delta": {}, "finish_reason": payload[0]}])
    except Exception as error:  # headers are sent: report the error in the stream
        request_id = new_id("req_")
        log.error("Request %s (streamed chat) failed", request_id, exc_info=error)
        yield f"data: {json.dumps({'error': server_fault(request_id)})}\n\n"
        return
    if include_usage:
        yield chunk([], usage=usage(prompt_tokens, completion_tokens))
    yield "data: [DONE]\n\n"
