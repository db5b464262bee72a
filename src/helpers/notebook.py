"""Conventions every course notebook shares: the setup report, section timings, metrics.

A notebook's second code cell calls :func:`setup_report` (versions, device, what to
install), marks each section with ``timer.section("1. Data")`` so the canonical run
records how long each part takes (instructors plan pauses with it), and records its figures
and each of the article's claims (a :class:`helpers.verdicts.Claim`) in :class:`Metrics`,
so the words follow the numbers of the run and the scorecard follows the notebooks.
A cell that cannot go on (no API key, no confirmation to spend money) raises
:class:`NotebookStopped`: the learner reads one sentence, not a traceback.
"""

from __future__ import annotations

import platform
import re
import time
from importlib import metadata
from pathlib import Path

# What every notebook needs, and what to install when it is missing.
CORE_PACKAGES = ("torch", "transformers", "peft", "datasets", "accelerate")
INSTALL_HINT = "run `make setup` in the repository (or `pip install -e .[dev]`)"


def package_versions(packages=CORE_PACKAGES) -> dict[str, str | None]:
    """Return each package's installed version, or None where it is missing."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def setup_report(packages=CORE_PACKAGES) -> dict:
    """Print Python and library versions, the device and its precision; return them.

    A missing package is named with the command that installs it, instead of the
    ImportError a learner would meet three cells later.
    """
    from helpers.models import cpu_description, cpu_has_bf16, pick_device, use_bf16

    versions = package_versions(packages)
    device = pick_device()
    print(f"python        {platform.python_version()}")
    for name, version in versions.items():
        print(f"{name:<13} {version or 'MISSING'}")
    bf16 = use_bf16(device)
    print(f"device        {device}; bf16 mixed precision: {'yes' if bf16 else 'no'}")
    print(f"cpu           {cpu_description()}")
    if device == "cpu" and not cpu_has_bf16():
        print(
            "              no bf16 in hardware (AVX-512 BF16 or AMX): training runs in fp32, "
            "slower than the committed run; the notebook estimates this run's time before training"
        )
    missing = [name for name, version in versions.items() if version is None]
    if missing:
        print(f"missing: {', '.join(missing)}: {INSTALL_HINT}")
    return {"device": device, "bf16": bf16, **versions}


SIZES = ("auto", "full", "small")


def choose_size(size: str, device: str) -> str:
    """Resolve a notebook's ``size`` parameter: "auto" is "small" where training runs in fp32.

    A CPU without bf16 in hardware (AVX2 only, as on AMD Zen 1-3 and most Intel laptops)
    trains 4-9x slower than one with it; "small" gives it the same lesson on less work
    (fewer steps and prompts), so a notebook still fits about ten minutes there.
    """
    from helpers.models import cpu_has_bf16

    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    if size != "auto":
        return size
    slow = device == "cpu" and not cpu_has_bf16()
    reason = "no bf16 in hardware" if slow else "bf16 in hardware or an accelerator"
    chosen = "small" if slow else "full"
    print(f"size: auto -> {chosen} ({device}, {reason}; size='full' or 'small' to choose)")
    return chosen


class SectionTimer:
    """Wall-clock seconds per notebook section, for the instructor's plan."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._current: str | None = None
        self._start = self._born = time.perf_counter()

    def section(self, name: str) -> None:
        """Close the running section (if any) and start timing ``name`` from the same instant."""
        self._current, self._start = name, self._close()

    def _close(self) -> float:
        now = time.perf_counter()
        if self._current is not None:
            elapsed = now - self._start
            self.seconds[self._current] = self.seconds.get(self._current, 0.0) + elapsed
            self._current = None
        return now

    def running(self) -> float:
        """Seconds since the current section started (0 before the first section)."""
        return time.perf_counter() - self._start if self._current is not None else 0.0

    def elapsed(self) -> float:
        """Seconds since the timer was made: the notebook's run so far."""
        return time.perf_counter() - self._born

    def table(self):
        """Return the timings so far as a DataFrame (seconds and share of the total)."""
        import pandas as pd

        self._close()
        frame = pd.DataFrame({"seconds": self.seconds}).rename_axis("section")
        frame["share"] = frame["seconds"] / max(frame["seconds"].sum(), 1e-9)
        return frame


def metric_key(label: str) -> str:
    """Return a metrics key for a label: ``"USD per 1k requests"`` -> ``usd_per_1k_requests``."""
    return "_".join(re.findall(r"[a-z0-9]+", label.lower()))


def section_key(name: str) -> str:
    """Return a section's metrics key: ``"3. Fine-tuning job"`` -> ``seconds_fine_tuning_job``."""
    return "seconds_" + metric_key(re.sub(r"^\d+\.\s*", "", name))


class Metrics(dict):
    """A run's figures, recorded section by section as the notebook goes; saved as metrics.json.

    ``metrics.add(steps=12)`` records where the figure is computed, so the last cell only
    saves; recording a name twice raises (two sections would otherwise overwrite a figure).
    """

    def add(self, **values) -> None:
        """Record figures under new names."""
        again = sorted(set(values) & set(self))
        if again:
            raise KeyError(f"metrics recorded twice: {', '.join(again)}")
        self.update(values)

    def add_table(self, table) -> None:
        """Record each cell of a DataFrame as ``<row>_<column>``, both parts :func:`metric_key`."""
        self.add(
            **{
                f"{metric_key(str(row))}_{metric_key(str(column))}": value
                for row, values in table.iterrows()
                for column, value in values.items()
            }
        )

    def claim(self, key: str, claim) -> str:
        """Record a :class:`helpers.verdicts.Claim` under ``claims``; return its sentence."""
        claims = self.setdefault("claims", {})
        if key in claims:
            raise KeyError(f"claim recorded twice: {key}")
        claims[key] = claim.record()
        return claim.markdown()

    def save(self, output_dir: str | Path, timer: SectionTimer) -> Path:
        """Add seconds per section, run time and peak memory; write and return metrics.json."""
        from helpers.evaluate import save_metrics
        from helpers.measure import process_peak_rss_mb

        timings = timer.table()["seconds"]
        self.update({section_key(name): seconds for name, seconds in timings.items()})
        self.update(total_seconds=timer.elapsed(), peak_rss_mb=process_peak_rss_mb())
        return save_metrics(self, output_dir)


class NotebookStopped(Exception):
    """Stops a notebook with one clear message: IPython shows the message, not a traceback.

    Raise it where a run cannot go on for a reason the learner can fix (a missing API key,
    a missing confirmation); the remaining cells do not run, and papermill reports it as
    the run's error with the message as its value.
    """

    def _render_traceback_(self) -> list[str]:
        """Return what IPython shows instead of the traceback: the message alone."""
        return [str(self)]


def megabytes(value: float) -> str:
    """Format a size in MB for people: ``2,720 MB``, ``1.77 MB``."""
    return f"{value:,.0f} MB" if value >= 100 else f"{value:.3g} MB"
