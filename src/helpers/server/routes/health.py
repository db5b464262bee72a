"""``GET /health``: whether the server answers (with a valid key)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()


@router.get("/health")
def health():
    """Say the server is up."""
    return {"status": "ok"}
