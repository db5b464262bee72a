"""The Models API: list the base and fine-tuned models, retrieve one, delete a fine-tuned one."""

from __future__ import annotations

from fastapi import APIRouter

from helpers.server.errors import invalid, no_such_model
from helpers.server.routes import page
from helpers.server.state import ServerState, State

router = APIRouter()


def known_model(state: ServerState, model_id: str) -> dict:
    """Return a model's Model object: fine-tuned, or a listed base model; 404 if neither."""
    found = state.store.get_model(model_id)
    if found is None and state.catalogue.listed(model_id):
        found = state.catalogue.model(model_id)
    if found is None:
        raise no_such_model(model_id)
    return found


@router.get("/models")
def list_models(state: State):
    """List the base models, then the fine-tuned ones."""
    return page(state.catalogue.models() + state.store.list_models(), False)


@router.get("/models/{model_id:path}")
def retrieve_model(model_id: str, state: State):
    """Return a model."""
    return known_model(state, model_id)


@router.delete("/models/{model_id:path}")
def delete_model(model_id: str, state: State):
    """Delete a fine-tuned model and its adapter; 400 for a base model."""
    known_model(state, model_id)
    fine_tuned = state.store.adapter_for(model_id) if state.store.get_model(model_id) else None
    if fine_tuned is None:
        raise invalid(f"'{model_id}' is a base model; only fine-tuned models can be deleted.")
    state.store.delete_model(model_id)
    state.pool.forget(fine_tuned[1])
    return {"id": model_id, "object": "model", "deleted": True}
