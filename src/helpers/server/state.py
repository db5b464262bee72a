"""The application's state, one :class:`ServerState` per app, and the dependency that gives it.

Routes declare a ``state: State`` parameter; FastAPI fills it from ``app.state.server``,
which :func:`helpers.server.app.create_app` sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from helpers.server.catalogue import Catalogue
from helpers.server.cores import CoreShare
from helpers.server.pool import ModelPool
from helpers.server.store import DataFolderLock, Store
from helpers.server.worker import Worker


@dataclass
class ServerState:
    """What the routes share: the store, the training worker, the models and the limits."""

    store: Store
    folder_lock: DataFolderLock  # held from the app's start to its end: one server per folder
    worker: Worker
    cores: CoreShare
    catalogue: Catalogue
    pool: ModelPool
    api_key: str
    max_upload_bytes: int


def server_state(request: Request) -> ServerState:
    """Return the state of the app serving ``request``."""
    return request.app.state.server


State = Annotated[ServerState, Depends(server_state)]
