"""The Files API: upload (within the server's size limit), list, retrieve, delete, content."""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from helpers.server.errors import APIError, checked_id, invalid, not_found
from helpers.server.routes import page
from helpers.server.state import ServerState, State
from helpers.server.store import Store

UPLOAD_PURPOSES = ("fine-tune", "assistants", "batch", "vision", "user_data")
COPY_CHUNK = 1 << 20
FORM_OVERHEAD = 1 << 16  # multipart headers and the purpose field, beyond the file itself

router = APIRouter()


class UploadTooLarge(Exception):
    """An upload's body passed the server's limit while it arrived."""


def too_large(limit_bytes: int) -> APIError:
    """Return the 413 for an upload beyond the server's limit."""
    limit = f"{limit_bytes / 2**20:g} MB"
    return APIError(413, f"The file is larger than this server's limit of {limit}.", "file")


def existing_file(store: Store, file_id: str) -> dict:
    """Return a file's record; 400 for a malformed id, 404 for an unknown one."""
    found = store.get_file(checked_id(file_id, "file_id"))
    if found is None:
        raise not_found("File", file_id, "file_not_found")
    return found


def save_upload(state: ServerState, upload: UploadFile, purpose: str) -> dict:
    """Copy an upload to a temporary file within the size limit, then store it."""
    temp, size = state.store.temp_path(), 0
    try:
        with open(temp, "wb") as out:
            while chunk := upload.file.read(COPY_CHUNK):
                size += len(chunk)
                if size > state.max_upload_bytes:
                    raise too_large(state.max_upload_bytes)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        name = PurePosixPath((upload.filename or "").replace("\\", "/")).name
        name = "".join(c for c in name if c.isprintable())[:255] or "upload.jsonl"
        return state.store.add_file(temp, name, purpose)
    finally:
        temp.unlink(missing_ok=True)


@router.post("/files")
async def upload_file(request: Request, state: State):
    """Store a multipart upload's ``file`` with its ``purpose``; 413 beyond the limit."""
    # The body is counted as it arrives, whether its length is declared or it comes in
    # chunks: the form parser never spools more than the limit (plus one chunk).
    limit = state.max_upload_bytes + FORM_OVERHEAD
    received, more = 0, True

    async def receive():
        """Pass the next body message on, counting its bytes against the limit."""
        nonlocal received, more
        message = await request.receive()
        received += len(message.get("body", b""))
        more = message["type"] == "http.request" and message.get("more_body", False)
        if received > limit:
            raise UploadTooLarge
        return message

    try:
        if int(request.headers.get("content-length") or 0) > limit:
            raise UploadTooLarge
        async with Request(request.scope, receive).form(max_files=1, max_fields=8) as form:
            upload, purpose = form.get("file"), form.get("purpose")
            if not isinstance(upload, UploadFile):
                raise invalid("Send the file as the multipart field 'file'.", "file")
            if purpose not in UPLOAD_PURPOSES:
                message = f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}."
                raise invalid(message, "purpose")
            return await run_in_threadpool(save_upload, state, upload, purpose)
    except UploadTooLarge:
        while more:  # read the rest without keeping it, so the client sees the answer
            message = await request.receive()
            more = message["type"] == "http.request" and message.get("more_body", False)
        raise too_large(state.max_upload_bytes) from None


@router.get("/files")
def list_files(
    state: State,
    after: str | None = None,
    limit: int = Query(10000, ge=1, le=10000),
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
):
    """List the uploaded files, newest first unless ``order`` says otherwise."""
    return page(*state.store.list_files(after, limit, order, purpose))


@router.get("/files/{file_id}")
def retrieve_file(file_id: str, state: State):
    """Return a file's record."""
    return existing_file(state.store, file_id)


@router.delete("/files/{file_id}")
def delete_file(file_id: str, state: State):
    """Delete a file and its bytes."""
    existing_file(state.store, file_id)
    state.store.delete_file(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/files/{file_id}/content")
def file_content(file_id: str, state: State):
    """Return a file's bytes under its name."""
    record = existing_file(state.store, file_id)
    return FileResponse(state.store.file_path(file_id), filename=record["filename"])
