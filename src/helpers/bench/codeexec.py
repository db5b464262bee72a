"""bench-codeexec: what one sandboxed ``run_tests`` call costs, alone and with ``run_many``."""

from __future__ import annotations

import os
import time

from helpers.codeexec import run_many, run_tests

# A task that passes at once: its time is the sandbox's own cost per call.
TASK = ("def answer():\n    return 42\n", "assert answer() == 42")


def bench_codeexec(n: int = 20, workers: int | None = None) -> dict:
    """Time ``n`` trivial passing tasks, sequentially and with ``run_many``; return the figures."""
    run_tests(*TASK)  # warm-up, and the one-time sandbox probe
    start = time.perf_counter()
    results = [run_tests(*TASK) for _ in range(n)]
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    results += run_many([TASK] * n, workers=workers)
    parallel = time.perf_counter() - start
    if not all(r.passed for r in results):
        raise RuntimeError(f"benchmark task did not pass: {results[0]}")
    return {
        "n": n,
        "sandboxed": results[0].sandboxed,
        "workers": workers or os.cpu_count() or 1,
        "sequential_ms_per_call": 1000 * sequential / n,
        "parallel_ms_per_task": 1000 * parallel / n,
    }


def format_codeexec_line(figures: dict) -> str:
    """Return :func:`bench_codeexec`'s figures as one line."""
    return (
        f"codeexec ({'bubblewrap' if figures['sandboxed'] else 'no sandbox'}), "
        f"{figures['n']} trivial tasks: "
        f"{figures['sequential_ms_per_call']:.0f} ms per call sequentially, "
        f"{figures['parallel_ms_per_task']:.0f} ms per task with run_many "
        f"({figures['workers']} workers)"
    )
