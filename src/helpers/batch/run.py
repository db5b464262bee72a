"""One run of a batch: a notebook executed by papermill in its own process and folder.

``run_one`` starts ``python -m helpers.batch.run NOTEBOOK RUN_DIR`` with the run's
parameters in ``RUN_DIR/run.json``; that process executes the notebook and records
how it ended. Its output (kernel warnings, papermill's log, the cells' output) goes to
``RUN_DIR/run.log``, not to the user's terminal. The parent waits with ``wait4``, whose
peak resident memory covers the kernel and anything the notebook started (a server).
A run is finished when ``run.json`` says ``"status": "ok"`` for the same parameters.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

RUN_FILE, LOG_FILE, METRICS_FILE = "run.json", "run.log", "metrics.json"
CELL_LINE = re.compile(r"Executing Cell (\d+)")
_running: set[subprocess.Popen] = set()  # the runs' child processes, for stop_all
_stopped = threading.Event()  # set by stop_all: a run whose process has not started stays so
_lock = threading.Lock()  # a run's process starts, or stop_all stops the runs: never both


def stop_all() -> None:
    """Stop every run in progress (Ctrl-C): its kernel and any server it started follow.

    A run that a pool thread is about to start when this is called does not start.
    """
    with _lock:
        _stopped.set()
        running = list(_running)
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()


def allow_runs() -> None:
    """Let runs start again after :func:`stop_all` (a new batch in the same process)."""
    _stopped.clear()


def read_run(run_dir: Path) -> dict | None:
    """Return a run folder's record (``run.json``), or None when it has none or it is unreadable."""
    try:
        return json.loads((run_dir / RUN_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None


def write_run(run_dir: Path, record: dict) -> None:
    """Write a run's record atomically (a Ctrl-C never leaves half a file)."""
    partial = run_dir / f"{RUN_FILE}.partial"
    partial.write_text(json.dumps(record, indent=1, default=str) + "\n", "utf-8")
    partial.replace(run_dir / RUN_FILE)


def is_finished(run_dir: Path, notebook: Path, parameters: dict) -> bool:
    """Whether this run already succeeded with exactly these parameters (resume skips it)."""
    record = read_run(run_dir)
    return bool(
        record
        and record.get("status") == "ok"
        and record.get("notebook") == notebook.name
        and record.get("parameters") == parameters
    )


def current_cell(run_dir: Path) -> int:
    """Return the number of the cell the run is executing now (0 before the first)."""
    try:
        with open(run_dir / LOG_FILE, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 65536))
            tail = log.read().decode("utf-8", "replace")
    except OSError:
        return 0
    found = CELL_LINE.findall(tail)
    return int(found[-1]) if found else 0


def read_metrics(run_dir: Path) -> tuple[dict, str | None]:
    """Return a run's metrics (scalars only) and a problem, if its ``metrics.json`` has one."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return {}, "the notebook wrote no metrics.json"
    try:
        metrics = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        return {}, f"metrics.json is unreadable ({error})"
    if not isinstance(metrics, dict):
        return {}, "metrics.json is not a JSON object"
    scalars = (int, float, str, bool)
    return {k: v for k, v in metrics.items() if isinstance(v, scalars) or v is None}, None


def thread_env(threads: int) -> dict[str, str]:
    """Return the environment that caps a run's math libraries at ``threads`` threads."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    return {**os.environ, **dict.fromkeys(names, str(threads)), "TOKENIZERS_PARALLELISM": "false"}


def maxrss_mib(ru_maxrss: int, platform: str = sys.platform) -> float:
    """Return a ``ru_maxrss`` in MiB: Linux reports KiB, macOS bytes."""
    return ru_maxrss / 2**20 if platform == "darwin" else ru_maxrss / 2**10


def run_one(notebook: Path, run_dir: Path, parameters: dict, threads: int = 1) -> dict:
    """Execute one notebook run in a child process; return its record (also in ``run.json``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"notebook": notebook.name, "parameters": parameters, "status": "running"}
    write_run(run_dir, record)
    (run_dir / METRICS_FILE).unlink(missing_ok=True)  # a retry must not report old metrics
    command = [sys.executable, "-m", "helpers.batch.run", str(notebook), str(run_dir)]
    start = time.perf_counter()
    with open(run_dir / LOG_FILE, "wb") as log:
        with _lock:
            if _stopped.is_set():  # Ctrl-C came while this run was being set up
                record.update(status="failed", error="interrupted before it started", seconds=0.0)
                write_run(run_dir, record)
                return record
            process = subprocess.Popen(  # its own session: Ctrl-C reaches the batch, which stops it
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=thread_env(threads),
                start_new_session=True,
            )
            _running.add(process)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            _running.discard(process)
        process.returncode = os.waitstatus_to_exitcode(status)
    ended = read_run(run_dir) or {}
    record.update(
        seconds=round(time.perf_counter() - start, 1),
        peak_mib=round(maxrss_mib(usage.ru_maxrss)),  # the largest process of the run
    )
    if ended.get("status") == "ok":
        record["metrics"], problem = read_metrics(run_dir)
        record.update(status="failed", error=problem) if problem else record.update(status="ok")
    else:
        record["status"] = "failed"
        record["error"] = ended.get("error") or (
            f"the run's process exited with status {process.returncode}; see {LOG_FILE}"
        )
    write_run(run_dir, record)
    return record


def _error_line(error: BaseException) -> str:
    """Return one line naming what went wrong (for a cell's error, its cell and exception)."""
    if hasattr(error, "ename"):  # papermill's PapermillExecutionError
        return f"In [{error.exec_count}]: {error.ename}: {error.evalue}"[:300]
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


# What jupyter_client raises when a kernel never answers its first request.
KERNEL_NOT_STARTED = "Kernel didn't respond"


def execute(notebook: Path, run_dir: Path) -> int:
    """Execute the notebook with papermill (the child process of ``run_one``); return 0 or 1."""
    import papermill

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    record = read_run(run_dir)
    parameters = {**record["parameters"], "output_dir": str(run_dir)}
    arguments = dict(
        parameters=parameters,
        kernel_name="python3",
        cwd=str(notebook.parent),
        progress_bar=False,
        log_output=True,  # "Executing Cell N" in run.log: the parent's progress line
    )
    try:
        try:
            papermill.execute_notebook(str(notebook), str(run_dir / notebook.name), **arguments)
        except RuntimeError as error:
            if KERNEL_NOT_STARTED not in str(error):
                raise
            # No cell ran: a kernel started at the same moment elsewhere can take the ports
            # this one was given. A second start gets fresh ports.
            logging.warning("the kernel did not start (%s); starting it once more", error)
            papermill.execute_notebook(str(notebook), str(run_dir / notebook.name), **arguments)
    except Exception as error:  # the partial notebook is saved; the record says what failed
        logging.exception("the run failed")
        write_run(run_dir, {**record, "status": "failed", "error": _error_line(error)})
        return 1
    write_run(run_dir, {**record, "status": "ok"})
    return 0


if __name__ == "__main__":
    sys.exit(execute(Path(sys.argv[1]), Path(sys.argv[2])))
