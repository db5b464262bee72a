"""The API's routes, one module per resource, and :func:`page`, the list envelope they share.

Each module holds a FastAPI ``router`` whose routes reach the app's state through the
``State`` dependency (:mod:`helpers.server.state`).
"""

from __future__ import annotations


def page(items: list[dict], has_more: bool) -> dict:
    """Return a list envelope that the client's cursor pages understand."""
    return {
        "object": "list",
        "data": items,
        "has_more": has_more,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
    }
