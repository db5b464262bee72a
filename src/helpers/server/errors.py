"""The API's errors: OpenAI's ``{"error": {...}}`` bodies, and the handlers that answer them.

Errors are always ``{"error": {message, type, param, code}}`` with the status the
``openai`` client turns into the right exception (400, 401, 404, 413; 5xx only for real
server faults, since the client retries those). A fault's answer names a request id that
the server's log has, never the exception itself.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from helpers.server.store import ID_PATTERN, new_id

log = logging.getLogger("helpers.server")


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
        self.status = status
        self.body = {"message": message, "type": kind, "param": param, "code": code}

    def response(self) -> JSONResponse:
        """Return the error as a JSON response."""
        return JSONResponse({"error": self.body}, status_code=self.status)


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """Return a 400 invalid-request error."""
    return APIError(400, message, param, code)


def not_found(kind: str, object_id: str, code: str) -> APIError:
    """Return a 404 error for an unknown id."""
    return APIError(404, f"No such {kind}: '{object_id}'.", "id", code)


def no_such_model(name: str) -> APIError:
    """Return the 404 for a model name that the server does not have."""
    return APIError(404, f"The model '{name}' does not exist.", "model", "model_not_found")


def checked_id(object_id: str, param: str) -> str:
    """Return an id if it looks like one of ours (letters, digits, - and _), else a 400."""
    if not ID_PATTERN.match(object_id):
        raise invalid(f"Invalid id {object_id!r}: expected letters, digits, '-' or '_'.", param)
    return object_id


def fault(what: str, error: BaseException) -> dict:
    """Log a server fault under a new request id; return the 500 error's body naming the id."""
    request_id = new_id("req_")
    log.error("Request %s (%s) failed", request_id, what, exc_info=error)
    message = f"Internal server error (request {request_id}); the server's log has the details."
    return {"message": message, "type": "server_error", "param": None, "code": None}


async def api_error(request: Request, error: APIError) -> JSONResponse:
    """Answer an :class:`APIError`."""
    return error.response()


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """Answer a request that FastAPI could not parse as a 400 naming the first bad field."""
    first = error.errors()[0]
    location = [str(part) for part in first["loc"] if part not in ("body", "query", "path")]
    param = ".".join(location) or None
    return invalid(f"Invalid value for {param or 'the request'}: {first['msg']}", param).response()


async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """Answer Starlette's own errors (unknown path, wrong method) in OpenAI's shape."""
    message = f"{error.detail}: {request.method} {request.url.path}"
    return APIError(error.status_code, message).response()


async def server_error(request: Request, error: Exception) -> JSONResponse:
    """Answer an unexpected exception as a 500 whose id the log has."""
    body = fault(f"{request.method} {request.url.path}", error)
    return JSONResponse({"error": body}, status_code=500)


def add_error_handlers(app: FastAPI) -> None:
    """Make the app answer every error in OpenAI's shape."""
    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, server_error)
