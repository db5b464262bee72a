"""Run a batch: plan every (notebook, parameters) run, skip finished ones, run the rest in parallel.

The executor is any ``concurrent.futures.Executor``: a local thread pool by default
(each thread waits on one child process), or a Dask cluster's executor when the grid
outgrows one machine (``dask_client``; the workers must see the same folders).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from helpers.batch.grid import check_grid, expand_grid, run_name, swept_names
from helpers.batch.run import (
    allow_runs,
    current_cell,
    is_finished,
    read_run,
    run_one,
    stop_all,
)

RUN_MEMORY_GIB = 4.5  # a notebook's default run: under 4 GB, plus notebook 01's kernel


@dataclass
class Run:
    """One planned run: which notebook, with which parameters, into which folder."""

    notebook: Path
    parameters: dict
    swept: list[str]
    folder: Path
    cells: int = 0
    record: dict = field(default_factory=dict)


def plan_runs(notebooks: list[Path], grid: dict, out_root: Path) -> list[Run]:
    """Check the grid against every notebook, then return one ``Run`` per combination."""
    import nbformat

    checked = {notebook: check_grid(grid, notebook) for notebook in notebooks}  # fail first
    runs = []
    for notebook, notebook_grid in checked.items():
        names = swept_names(notebook_grid)
        cells = len(nbformat.read(notebook, as_version=4).cells) + 1  # + papermill's injected
        for parameters in expand_grid(notebook_grid):
            folder = out_root / run_name(notebook, parameters, names)
            runs.append(Run(notebook, parameters, names, folder, cells))
    folders = [run.folder for run in runs]
    if len(set(folders)) != len(folders):
        raise ValueError("two runs of the grid would share a folder: give each value once")
    return runs


def default_jobs(available_bytes: int | None = None, cores: int | None = None) -> int:
    """Return how many runs fit at once: one per core, as far as memory holds them."""
    import psutil

    available = (
        available_bytes if available_bytes is not None else psutil.virtual_memory().available
    )
    cores = cores or os.cpu_count() or 1
    return max(1, min(cores, int(available // (RUN_MEMORY_GIB * 2**30))))


def local_executor(jobs: int) -> Executor:
    """Return the local pool: ``jobs`` threads, each waiting on one run's process."""
    return ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="batch-run")


def dask_client(address: str):
    """Connect to a Dask scheduler (``distributed`` on every machine, the same folders seen)."""
    from distributed import Client

    return Client(address)


def _clock(seconds: float) -> str:
    """Return seconds as ``1m05s``."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
    """One status line: runs done, running (with their cell), failed, elapsed and time left."""

    def __init__(self, total: int, jobs: int, stream=None):
        self.total, self.jobs, self.stream = total, jobs, stream or sys.stdout
        self.start, self.last_line, self.last_print = time.monotonic(), "", 0.0
        self.live = self.stream.isatty()

    def line(self, done: list[Run], running: list[Run]) -> str:
        """Return the status line for the runs done and running now."""
        elapsed = time.monotonic() - self.start
        failed = sum(run.record.get("status") != "ok" for run in done)
        cells = ", ".join(
            f"{run.folder.name} cell {current_cell(run.folder)}/{run.cells}" for run in running
        )
        text = f"[{_clock(elapsed)}] {len(done)}/{self.total} done, {failed} failed"
        text += f", {len(running)} running" + (f" ({cells})" if cells else "")
        timed = [run.record["seconds"] for run in done if "seconds" in run.record]
        if timed and len(done) < self.total:
            left = sum(timed) / len(timed) * (self.total - len(done)) / self.jobs
            text += f", about {_clock(left)} left"
        return text

    def show(self, done: list[Run], running: list[Run], force: bool = False) -> None:
        """Rewrite the line in a terminal; elsewhere print it on events and every 30 s."""
        text = self.line(done, running)
        if self.live:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + text[:width].ljust(min(width, len(self.last_line))))
        elif force or time.monotonic() - self.last_print > 30:
            self.stream.write(text + "\n")
            self.last_print = time.monotonic()
        self.stream.flush()
        self.last_line = text

    def say(self, message: str) -> None:
        """Print a message on a line of its own."""
        self.stream.write(("\n" if self.live else "") + message + "\n")
        self.stream.flush()


def run_batch(
    runs: list[Run], jobs: int, executor: Executor | None = None, threads: int | None = None
) -> list[Run]:
    """Run every unfinished run (``jobs`` at once), skip finished ones; return all, with records."""
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    allow_runs()  # an earlier batch in this process may have been interrupted
    progress = Progress(len(runs), jobs)
    done = []
    for run in runs:
        if is_finished(run.folder, run.notebook, run.parameters):
            run.record = read_run(run.folder)
            done.append(run)
    if done:
        progress.say(f"{len(done)} of {len(runs)} runs already finished: skipped (resume)")
    waiting = [run for run in runs if run not in done]
    executor = executor or local_executor(jobs)
    running: dict = {}
    try:
        while waiting or running:
            started = bool(waiting) and len(running) < jobs
            while waiting and len(running) < jobs:
                run = waiting.pop(0)
                future = executor.submit(run_one, run.notebook, run.folder, run.parameters, threads)
                running[future] = run
            progress.show(done, list(running.values()), force=started)
            finished, _ = wait(running, timeout=2, return_when=FIRST_COMPLETED)
            for future in finished:
                run = running.pop(future)
                run.record = _record(future, run)
                done.append(run)
                status = run.record["status"]
                detail = f": {run.record['error']}" if status != "ok" else ""
                progress.say(f"{run.folder.name}: {status} in {run.record['seconds']} s{detail}")
    except KeyboardInterrupt:  # finished runs stay as they are; the rest are stopped
        progress.say(f"interrupted: stopping {len(running)} runs; finished runs are kept")
        stop_all()
        raise
    finally:
        _shutdown(executor)
    progress.say(progress.line(done, []))
    order = {id(run): index for index, run in enumerate(runs)}
    return sorted(done, key=lambda run: order[id(run)])


def _shutdown(executor: Executor) -> None:
    """Stop the executor without waiting; runs not started yet are cancelled."""
    try:
        executor.shutdown(wait=False, cancel_futures=True)
    except TypeError:  # Dask's executor has no cancel_futures
        executor.shutdown(wait=False)


def _record(future, run: Run) -> dict:
    """Return a finished future's record; an error of the pool itself becomes a failed row."""
    try:
        return future.result()
    except Exception as error:  # the run could not even start: still a row, never a crash
        return {"status": "failed", "error": f"{type(error).__name__}: {error}", "seconds": 0.0}


def run_grid(
    notebooks: list[Path],
    grid: dict,
    out_root: Path,
    jobs: int | None = None,
    scheduler: str | None = None,
    show: tuple[str, ...] = (),
) -> tuple[list[Run], list[Path]]:
    """Check, plan and run a grid, then write its results; return the runs and the files written."""
    from helpers.batch.results import results_table, write_results

    runs = plan_runs(notebooks, grid, out_root)  # an unknown name or a bad type stops here
    jobs = jobs or default_jobs()
    if scheduler:
        with dask_client(scheduler) as client:
            runs = run_batch(runs, jobs, client.get_executor())
    else:
        runs = run_batch(runs, jobs)
    swept = list(dict.fromkeys(name for run in runs for name in run.swept))
    return runs, write_results(results_table(runs), swept, out_root, show)
