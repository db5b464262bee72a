"""A local OpenAI-compatible fine-tuning server: the OpenAI workflow, offline and free.

``python -m helpers serve`` (or :func:`run_server`) serves the Files, Fine-tuning,
Models and Chat Completions APIs under ``/v1``; the unmodified ``openai`` client talks
to it through ``base_url``. Jobs really fine-tune the embedded SmolLM2 with LoRA, and
the fine-tuned models answer chat completions. From Python or a notebook::

    from openai import OpenAI
    from helpers.server import start_server

    with start_server() as server:
        client = OpenAI(base_url=server.base_url, api_key=server.api_key)
        ...

Everything the server keeps (SQLite database, files, adapters) lives under its data
folder, by default ``$CACHE/server``, which one server at a time may use; it listens on
127.0.0.1 and every request needs ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from helpers.paths import cache_dir
from helpers.server.store import DataFolderLock

API_KEY_ENV = "FINETUNE_COURSE_API_KEY"
PARENT_PID_ENV = "FINETUNE_COURSE_PARENT_PID"  # set by start_server: stop when it is gone
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 100.0


def default_data_dir() -> Path:
    """Return the server's default data folder, ``$CACHE/server``."""
    return cache_dir() / "server"


def new_api_key() -> str:
    """Return a fresh random API key."""
    return "sk-local-" + secrets.token_urlsafe(24)


def run_server(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    api_key: str | None = None,
    data_dir: str | os.PathLike | None = None,
    max_steps: int | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    aliases: dict[str, str] | None = None,
    served: dict[str, str] | None = None,
) -> None:
    """Serve the API until interrupted; the key comes from ``api_key``, the environment or is new.

    ``max_steps`` caps every job's training steps (for tests and short workshops);
    ``aliases`` maps more model names to local models; ``served`` serves model folders
    (merged models, as ``helpers export`` writes them) by name. Raises
    :class:`~helpers.server.store.DataFolderInUse` when another server uses the data folder.
    """
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    lock = DataFolderLock(data_dir)
    lock.acquire()  # DataFolderInUse if another server has it: before anything heavy or repaired

    import uvicorn

    from helpers.server.app import create_app

    # Training and chat share the cores per thread: see helpers.server.cores.CoreShare.
    key = api_key or os.environ.get(API_KEY_ENV)
    if not key:
        key = new_api_key()
        print(f"API key (generated): {key}", flush=True)
    if parent := os.environ.get(PARENT_PID_ENV):
        threading.Thread(target=_exit_with_parent, args=(int(parent),), daemon=True).start()
    app = create_app(
        data_dir,
        key,
        max_steps,
        int(max_upload_mb * 2**20),
        aliases,
        folder_lock=lock,
        served=served,
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"Warning: listening on {host}, reachable from other machines.", flush=True)
    print(f"Serving the OpenAI-compatible API at http://{host}:{port}/v1", flush=True)
    print(f"Data folder: {data_dir}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """Stop this server (as Ctrl-C would) once the process that started it has gone.

    A notebook's kernel that is restarted, or a batch run that is interrupted, must not
    leave its server behind holding gigabytes.
    """
    while os.getppid() == parent:
        time.sleep(every_s)
    print(f"The process that started this server ({parent}) has exited: stopping.", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


def free_port(host: str = DEFAULT_HOST) -> int:
    """Return a TCP port that is free now on ``host``."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class LocalServer:
    """A server running in a subprocess: its ``base_url`` and ``api_key``; ``stop()`` ends it."""

    base_url: str
    api_key: str
    data_dir: Path
    process: subprocess.Popen = field(repr=False)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (a running job is marked failed) and wait for it to exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def health(self) -> dict | None:
        """Return the server's authenticated health answer, or None when it does not answer."""
        request = urllib.request.Request(
            self.base_url.removesuffix("/v1") + "/health",
            headers={"Authorization": f"Bearer {self.api_key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return json.load(response)
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def healthy(self) -> bool:
        """Tell whether the server answers an authenticated health check."""
        return (self.health() or {}).get("status") == "ok"

    def peak_rss_mb(self) -> float | None:
        """Return the server process's peak resident memory so far in MB (None if it is down)."""
        return (self.health() or {}).get("peak_rss_mb")


def start_server(
    data_dir: str | os.PathLike | None = None,
    api_key: str | None = None,
    port: int | None = None,
    max_steps: int | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    timeout: float = 120.0,
    aliases: dict[str, str] | None = None,
    served: dict[str, str] | None = None,
) -> LocalServer:
    """Start the server in a subprocess on a free port and wait until it answers.

    Returns a :class:`LocalServer`; use it as a context manager, or call ``stop()``.
    ``aliases`` maps more model names to local models (``--alias NAME=MODEL``);
    ``served`` serves model folders by name (``--model NAME=DIR``). The
    server's output goes to ``server.log`` in its data folder.
    """
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    with DataFolderLock(data_dir):  # another server has it: say so now, not after a start
        pass
    key, port = api_key or new_api_key(), port or free_port()
    command = [sys.executable, "-m", "helpers", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--max-upload-mb", str(max_upload_mb)]
    if max_steps is not None:
        command += ["--max-steps", str(max_steps)]
    for name, model in (aliases or {}).items():
        command += ["--alias", f"{name}={model}"]
    for name, folder in (served or {}).items():
        command += ["--model", f"{name}={folder}"]
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115 (the child writes to it)
    # The key travels in the environment, not on the command line that `ps` shows.
    env = {**os.environ, API_KEY_ENV: key, PARENT_PID_ENV: str(os.getpid())}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    server = LocalServer(f"http://{DEFAULT_HOST}:{port}/v1", key, data_dir, process)
    deadline = time.monotonic() + timeout
    while not server.healthy():
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            tail = (data_dir / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"The server did not start; its log ends with:\n{tail}")
        time.sleep(0.2)
    return server
