"""The blocks about every notebook at once: run times, peaks, headlines, sections, estimates.

Run time is papermill's duration of the whole notebook (what a learner waits); peak memory
is the kernel's ``peak_rss_mb`` (for notebook 01 also its server's, ``server_peak_rss_mb``,
where the run recorded it); each section's seconds come from the run's ``SectionTimer``.
"""

from __future__ import annotations

import re

from helpers.notebook import metric_key
from helpers.report.collect import Run
from helpers.report.figures import NOTEBOOKS
from helpers.report.tables import Table, paragraph
from helpers.report.values import MISSING, Figures, duration, listed, mib

MEASURED = "default run, 2-core CPU with bf16 (measured)"
AVX2 = "without bf16: PyTorch capped at AVX2, `size` auto = small (measured)"
HEADLINE = "headline of the canonical run"


def peak(f: Figures) -> str:
    """Return a run's peak memory: the kernel's, and its server's where it has one."""
    kernel = f.mib("peak_rss_mb")
    server = f.run.metrics.get("server_peak_rss_mb")
    if isinstance(server, int | float):
        return f"{mib(server)} (server), {kernel} (kernel)"
    return kernel


def headline(f: Figures) -> str:
    """Return a run's headline in words ("" for a notebook the report has no entry for)."""
    notebook = NOTEBOOKS.get(f.run.notebook)
    return notebook.headline(f) if notebook else ""


def avx2_run(f: Figures) -> str:
    """Return the fp32 run's time, peak and headline, or say it was not run."""
    if f.avx2 is None:
        return "not measured: `make notebooks-avx2`"
    return f"{duration(f.avx2.run.seconds)}, peak {peak(f.avx2)}; {headline(f.avx2)}"


def readme_table(figures: dict[str, Figures]) -> Table:
    """Return the README's notebook table; the words of each row stay as written there."""
    columns = ["notebook", "teaches", HEADLINE, MEASURED, AVX2, "scale it with"]
    rows = [
        {
            "notebook": f"`{stem}.ipynb`",
            HEADLINE: headline(f),
            MEASURED: f"{duration(f.run.seconds)}, peak {peak(f)}",
            AVX2: avx2_run(f),
        }
        for stem, f in figures.items()
    ]
    kept = ("teaches", "scale it with")
    return Table(columns, rows, key="notebook", kept=kept)


def course_plan(figures: dict[str, Figures]) -> Table:
    """Return the guide's course plan: run time, peak and headline of each notebook."""
    rows = [
        {
            "#": stem[:2],
            "notebook": f"[{stem}](../notebooks/{stem}.ipynb)",
            "default run": duration(f.run.seconds),
            "peak memory": peak(f),
            HEADLINE: headline(f),
        }
        for stem, f in figures.items()
    ]
    total = sum(f.run.seconds for f in figures.values())
    columns = ["#", "notebook", "default run", "peak memory", HEADLINE]
    notes = [f"Together the default runs take {duration(total)}."]
    return Table(columns, rows, key="#", kept=("notebook",), notes=notes)


def section_seconds(f: Figures, name: str) -> float | None:
    """Return the seconds a run's timer gave a section, whichever way its key was written."""
    keys = {metric_key(k[len("seconds_") :]): k for k in f.run.metrics if k.startswith("seconds_")}
    bare = re.sub(r"^\d+\.\s*", "", name)
    for candidate in (metric_key(bare), metric_key(name)):
        if candidate in keys:
            return f.get(keys[candidate])
    f.missing.append(f"seconds_{metric_key(bare)}")
    return None


def sections(f: Figures) -> Table:
    """Return a run's sections: number, name, seconds, share of the timed total."""
    seconds = {name: section_seconds(f, name) for name in f.run.sections}
    total = sum(s for s in seconds.values() if s is not None) or 1.0
    rows = []
    for position, (name, value) in enumerate(seconds.items(), start=1):
        number, _, bare = name.partition(". ")
        if not (bare and number.isdigit()):
            number, bare = str(position), name
        rows.append(
            {
                "§": number,
                "section": bare,
                "s": MISSING if value is None else f"{value:.0f}",
                "share": MISSING if value is None else f"{value / total * 100:.0f} %",
            }
        )
    columns = ["§", "section", "s", "share", "what runs"]
    return Table(columns, rows, key="section", kept=("what runs",), right=("s", "share"))


def estimates(figures: dict[str, Figures]) -> str:
    """Return the sentence comparing each notebook's estimate with its timed sections."""

    def minutes(f: Figures, key: str) -> str:
        value = f.get(key)
        return MISSING if value is None else f"{value / 60:.1f}"

    estimated = [minutes(f, "estimated_seconds") for f in figures.values()]
    measured = [minutes(f, "total_seconds") for f in figures.values()]
    return paragraph(
        f"On the reference machine the estimates were {listed(estimated)} min against "
        f"{listed(measured)} min measured (notebooks {listed([s[:2] for s in figures])}, "
        "the timed sections only)."
    )


def run_times(figures: dict[str, Figures]) -> Table:
    """Return each notebook's run time and seconds per training step."""
    rows = []
    for stem, f in figures.items():
        notebook = NOTEBOOKS.get(stem)
        rows.append(
            {
                "notebook": stem[:2],
                "default run": duration(f.run.seconds),
                "seconds per training step": notebook.training(f) if notebook else "",
            }
        )
    return Table(["notebook", "default run", "seconds per training step"], rows, key="notebook")


def run_figures(runs: dict[str, Run], avx2: dict[str, Run] | None = None) -> dict[str, Figures]:
    """Return a :class:`Figures` per run (with its fp32 run where given), in notebook order."""
    avx2 = avx2 or {}
    return {stem: Figures(run, avx2.get(stem)) for stem, run in sorted(runs.items())}
