"""Persistence for the local fine-tuning server: SQLite rows plus files on disk.

Everything lives under one data folder, so a restart finds it all again:

- ``server.sqlite3``: files, jobs, events, checkpoints and models, each row holding the
  API object as JSON next to the few columns that are queried;
- ``files/<file id>``: uploaded and result files, written to a temporary file and
  renamed into place, so a file is never half-written; the user's file name is kept in
  the database only and never touches a path;
- ``jobs/<job id>/``: a job's per-epoch checkpoints, its final adapter and its logs.

A crash can still fall between two steps (a file renamed but not yet recorded);
:meth:`Store.reconcile` repairs such states when the server starts. That repair is only
right when no other server uses the folder, so a server holds ``server.lock`` in it
(:class:`DataFolderLock`) from before it repairs anything until it stops.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import string
import threading
import time
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    purpose TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL, base TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    job_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    job_id TEXT NOT NULL, model TEXT UNIQUE NOT NULL, base TEXT NOT NULL,
    adapter TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    job_id TEXT NOT NULL, base TEXT NOT NULL, adapter TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id);
CREATE INDEX IF NOT EXISTS checkpoints_job ON checkpoints (job_id);
"""

# Object ids are a prefix and random letters and digits: nothing else is ever looked up.
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


def new_id(prefix: str, length: int = 24) -> str:
    """Return a fresh random object id such as ``file-3kQ...``."""
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def now() -> int:
    """Return the current Unix time in whole seconds (the API's timestamps)."""
    return int(time.time())


class DataFolderInUse(RuntimeError):
    """Another server holds the data folder; the message names it and how to pick another."""


class DataFolderLock:
    """One server per data folder: an exclusive lock on ``server.lock`` inside it.

    The operating system releases the lock when its holder exits, even when it is
    killed, so a crashed server never leaves the folder locked. ``acquire`` raises
    :class:`DataFolderInUse` at once when another process holds it; holding it already
    (from :func:`helpers.server.run_server`, then the app's start) is not an error.
    """

    def __init__(self, data_dir: str | os.PathLike):
        self.root = Path(data_dir).expanduser().resolve()
        self.path = self.root / "server.lock"
        self._file = None

    @property
    def held(self) -> bool:
        """Tell whether this object holds the lock."""
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`DataFolderInUse` if another server holds it."""
        if self.held:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held open while the server runs)
        try:
            _lock_file(handle)
        except OSError:
            holder = _holder(handle)
            handle.close()
            by = f" (process {holder})" if holder.isdigit() else ""
            raise DataFolderInUse(
                f"the data folder {self.root} is in use by another server{by}: stop that "
                f"server, or give this one another folder with --data-dir FOLDER "
                f"(data_dir= in start_server)"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        """Let the lock go (closing the file releases it); the file itself stays."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> DataFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _holder(handle) -> str:
    """Return what the lock's holder wrote in the lock file (its process id), or ""."""
    try:
        handle.seek(0)
        return handle.read(32).strip()
    except OSError:  # Windows: the holder's locked byte cannot be read
        return ""


def _lock_file(handle) -> None:
    """Lock an open file exclusively without waiting; raise OSError if another holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: lock the file's first byte instead
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


class Store:
    """The server's database and data folder; safe to use from several threads."""

    def __init__(self, data_dir: str | os.PathLike):
        self.root = Path(data_dir).expanduser().resolve()
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        (self.root / "jobs").mkdir(exist_ok=True)
        self._lock = threading.RLock()
        # Autocommit: every statement is its own transaction; the lock orders the threads.
        self._db = sqlite3.connect(
            self.root / "server.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self):
        """Run the statements of a ``with`` block as one transaction (all or nothing)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def reconcile(self) -> None:
        """Repair what a crash between two steps left behind.

        Removes half-written and unrecorded files, forgets files whose bytes are gone,
        and forgets fine-tuned models whose job did not succeed.
        """
        folder = self.root / "files"
        recorded = {row[0] for row in self._query("SELECT id FROM files")}
        for path in folder.iterdir():
            if path.name not in recorded:
                path.unlink(missing_ok=True)
        for file_id in sorted(recorded):
            if not self.file_path(file_id).is_file():
                self._query("DELETE FROM files WHERE id = ?", file_id)
        orphans = self._query(
            "SELECT models.id FROM models LEFT JOIN jobs ON jobs.id = models.job_id "
            "WHERE jobs.status IS NOT 'succeeded'"
        )
        for (model_id,) in orphans:
            self.delete_model(model_id)

    # --- generic rows -----------------------------------------------------------------------

    def _query(self, sql: str, *params) -> list[tuple]:
        """Run one statement under the lock; return its rows."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _insert(self, table: str, obj: dict, **columns) -> dict:
        """Store an object as JSON with its indexed columns; return it."""
        columns = {"id": obj["id"], **columns, "data": json.dumps(obj)}
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        self._query(f"INSERT INTO {table} ({names}) VALUES ({marks})", *columns.values())
        return obj

    def _get(self, table: str, object_id: str, column: str = "id") -> dict | None:
        """Return the object whose ``column`` matches, or None."""
        rows = self._query(f"SELECT data FROM {table} WHERE {column} = ?", object_id)
        return json.loads(rows[0][0]) if rows else None

    def _page(
        self, table: str, after: str | None, limit: int, order: str = "desc", **where
    ) -> tuple[list[dict], bool]:
        """Return up to ``limit`` objects after the cursor ``after``, and whether more follow."""
        clauses, params = [f"{name} = ?" for name in where], list(where.values())
        if after:
            compare = "<" if order == "desc" else ">"
            # An unknown cursor compares with NULL: an empty page.
            clauses.append(f"seq {compare} (SELECT seq FROM {table} WHERE id = ?)")
            params.append(after)
        sql = f"SELECT data FROM {table}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY seq {'DESC' if order == 'desc' else 'ASC'} LIMIT ?"
        rows = self._query(sql, *params, limit + 1)
        return [json.loads(row[0]) for row in rows[:limit]], len(rows) > limit

    # --- files ------------------------------------------------------------------------------

    def file_path(self, file_id: str) -> Path:
        """Return where a file's bytes live."""
        return self.root / "files" / file_id

    def temp_path(self) -> Path:
        """Return a fresh temporary path in the files folder (renamed into place when complete)."""
        return self.root / "files" / f".partial-{new_id('', 16)}"

    def add_file(self, source: Path, filename: str, purpose: str) -> dict:
        """Move a complete temporary file into place and record it; return the FileObject."""
        file_id = new_id("file-")
        os.replace(source, self.file_path(file_id))
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": self.file_path(file_id).stat().st_size,
            "created_at": now(),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }
        return self._insert("files", obj, purpose=purpose)

    def write_file(self, content: bytes, filename: str, purpose: str) -> dict:
        """Store bytes produced by the server (a results file) as a new file."""
        temp = self.temp_path()
        with open(temp, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        return self.add_file(temp, filename, purpose)

    def get_file(self, file_id: str) -> dict | None:
        """Return a FileObject, or None."""
        return self._get("files", file_id)

    def list_files(
        self, after: str | None, limit: int, order: str, purpose: str | None
    ) -> tuple[list[dict], bool]:
        """Return a page of FileObjects."""
        where = {"purpose": purpose} if purpose else {}
        return self._page("files", after, limit, order, **where)

    def delete_file(self, file_id: str) -> None:
        """Forget a file and remove its bytes."""
        self._query("DELETE FROM files WHERE id = ?", file_id)
        self.file_path(file_id).unlink(missing_ok=True)

    # --- jobs and their events ------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        """Return (and create) a job's folder."""
        folder = self.root / "jobs" / job_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def add_job(self, job: dict, base: str) -> dict:
        """Record a new job; ``base`` is the local model it trains."""
        return self._insert("jobs", job, status=job["status"], base=base)

    def get_job(self, job_id: str) -> dict | None:
        """Return a job object, or None."""
        return self._get("jobs", job_id)

    def job_base(self, job_id: str) -> str:
        """Return the local base model of a job."""
        return self._query("SELECT base FROM jobs WHERE id = ?", job_id)[0][0]

    def list_jobs(self, after: str | None, limit: int) -> tuple[list[dict], bool]:
        """Return a page of jobs, newest first."""
        return self._page("jobs", after, limit)

    def jobs_with_status(self, status: str) -> list[dict]:
        """Return the jobs in one status, oldest first."""
        rows = self._query("SELECT data FROM jobs WHERE status = ? ORDER BY seq", status)
        return [json.loads(row[0]) for row in rows]

    def update_job(self, job_id: str, only_if: tuple[str, ...] = (), **fields) -> dict | None:
        """Change fields of a job; with ``only_if``, only from those statuses (else None)."""
        with self._lock:
            job = self.get_job(job_id)
            if job is None or (only_if and job["status"] not in only_if):
                return None
            job.update(fields)
            self._query(
                "UPDATE jobs SET status = ?, data = ? WHERE id = ?",
                job["status"],
                json.dumps(job),
                job_id,
            )
            return job

    def add_event(
        self, job_id: str, message: str, level: str = "info", data: dict | None = None
    ) -> dict:
        """Record a job event (``type`` metrics when it carries data, else message)."""
        event = {
            "id": new_id("ftevent-"),
            "object": "fine_tuning.job.event",
            "created_at": now(),
            "level": level,
            "message": message,
            "data": data or {},
            "type": "metrics" if data else "message",
        }
        return self._insert("events", event, job_id=job_id)

    def list_events(self, job_id: str, after: str | None, limit: int) -> tuple[list[dict], bool]:
        """Return a page of a job's events, newest first."""
        return self._page("events", after, limit, job_id=job_id)

    # --- checkpoints and models -----------------------------------------------------------

    def add_checkpoint(self, checkpoint: dict, base: str, adapter: Path) -> dict:
        """Record a checkpoint whose adapter is saved in ``adapter``."""
        return self._insert(
            "checkpoints",
            checkpoint,
            job_id=checkpoint["fine_tuning_job_id"],
            model=checkpoint["fine_tuned_model_checkpoint"],
            base=base,
            adapter=str(adapter.relative_to(self.root)),
        )

    def list_checkpoints(
        self, job_id: str, after: str | None, limit: int
    ) -> tuple[list[dict], bool]:
        """Return a page of a job's checkpoints, newest first."""
        return self._page("checkpoints", after, limit, job_id=job_id)

    def add_model(self, model: dict, job_id: str, base: str, adapter: Path) -> dict:
        """Record a fine-tuned model (a base model plus the adapter in ``adapter``)."""
        relative = str(adapter.relative_to(self.root))
        return self._insert("models", model, job_id=job_id, base=base, adapter=relative)

    def get_model(self, model_id: str) -> dict | None:
        """Return a fine-tuned Model object, or None."""
        return self._get("models", model_id)

    def list_models(self) -> list[dict]:
        """Return every fine-tuned model, oldest first."""
        return [json.loads(row[0]) for row in self._query("SELECT data FROM models ORDER BY seq")]

    def adapter_for(self, name: str) -> tuple[str, Path] | None:
        """Return ``(base, adapter folder)`` of a fine-tuned model or checkpoint name, or None."""
        for table, column in (("models", "id"), ("checkpoints", "model")):
            rows = self._query(f"SELECT base, adapter FROM {table} WHERE {column} = ?", name)
            if rows:
                return rows[0][0], self.root / rows[0][1]
        return None

    def delete_model(self, model_id: str) -> None:
        """Forget a fine-tuned model and remove its adapter (if it is one)."""
        found = self.adapter_for(model_id) if self.get_model(model_id) else None
        if found is not None:
            self._query("DELETE FROM models WHERE id = ?", model_id)
            shutil.rmtree(found[1], ignore_errors=True)
