"""The OpenAI-compatible application: :func:`create_app` builds it over a data folder.

Paths, objects and errors follow what the official ``openai`` client sends and parses,
so the same code talks to this server or to OpenAI by changing ``base_url`` and
``api_key``. The app holds one :class:`~helpers.server.state.ServerState` (store, worker,
catalogue, model pool, key and limits); the routes, one module per resource under
:mod:`helpers.server.routes`, reach it as a dependency. Every request needs the key.
"""

from __future__ import annotations

import hmac
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request

from helpers.server.catalogue import Catalogue
from helpers.server.cores import CoreShare
from helpers.server.errors import APIError, add_error_handlers
from helpers.server.pool import ModelPool
from helpers.server.routes import chat, files, health, jobs, models
from helpers.server.state import ServerState
from helpers.server.store import DataFolderLock, Store
from helpers.server.worker import Worker

ORGANIZATION = "local"  # the ``org`` part of fine-tuned model names


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Lock the data folder and start the training worker; on shutdown stop it, close the store.

    The lock comes first: the worker's start repairs the folder (fails the jobs it finds
    running, removes unrecorded files, queues jobs), which only its one server may do.
    """
    state: ServerState = app.state.server
    state.folder_lock.acquire()  # DataFolderInUse if another server has it
    try:
        state.worker.start()
        yield
        state.worker.stop()
        state.store.close()
    finally:
        state.folder_lock.release()


async def authenticate(request: Request, call_next):
    """Answer a request without the server's key ``Authorization: Bearer <key>`` with a 401."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        message = "You didn't provide an API key: send 'Authorization: Bearer <key>'."
        return APIError(401, message).response()
    if not hmac.compare_digest(key.strip().encode(), request.app.state.server.api_key.encode()):
        message = "Incorrect API key provided (see the key the server printed at start)."
        return APIError(401, message, code="invalid_api_key").response()
    return await call_next(request)


def create_app(
    data_dir: str | Path,
    api_key: str,
    max_steps: int | None = None,
    max_upload_bytes: int = 100 * 2**20,
    aliases: dict[str, str] | None = None,
    max_loaded_models: int = 3,
    served: dict[str, str] | None = None,
    folder_lock: DataFolderLock | None = None,
) -> FastAPI:
    """Return the server's FastAPI application over a data folder.

    The app locks the folder when it starts (``folder_lock`` may hold it already).
    ``served`` serves model folders by name (``serve --model NAME=DIR``).
    """
    store, cores = Store(data_dir), CoreShare()
    app = FastAPI(title="finetune-course local OpenAI-compatible server", lifespan=lifespan)
    app.state.server = ServerState(
        store=store,
        folder_lock=folder_lock or DataFolderLock(store.root),
        worker=Worker(store, ORGANIZATION, max_steps, cores),
        cores=cores,
        catalogue=Catalogue(aliases, served),
        pool=ModelPool(max_loaded_models),
        api_key=api_key,
        max_upload_bytes=max_upload_bytes,
    )
    add_error_handlers(app)
    app.middleware("http")(authenticate)
    app.include_router(health.router)
    for resource in (files, jobs, models, chat):
        app.include_router(resource.router, prefix="/v1")
    return app
