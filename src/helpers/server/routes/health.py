"""``GET /health``: whether the server answers (with a valid key), and its peak memory."""

from __future__ import annotations

from fastapi import APIRouter

from helpers.measure import process_peak_rss_mb

router = APIRouter()


@router.get("/health")
def health():
    """Say the server is up, with the server process's peak resident memory so far."""
    return {"status": "ok", "peak_rss_mb": round(process_peak_rss_mb(), 1)}
