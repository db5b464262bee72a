"""A batch's results: one table (CSV and Markdown), a comparison plot, and a short summary.

The CSV keeps every metric of every run; the Markdown table and the printed summary keep
the parameters, the status, the time, the peak memory and each notebook's headline metric,
so they fit a 100-column terminal.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

# The figure each notebook is about (its metrics.json key), shown in summaries and plots.
HEADLINE_METRICS = {
    "01_customer_service_openai": "fine_tuned_style_score",
    "02_code_generation_full_finetune": "fine-tuned_pass_at_1",
    "03_lora_peft": "LoRA_style_pass_rate",
    "04_medical_qa": "fine_tuned_similarity",
}


def headline_metric(notebook: str, metrics: dict) -> str | None:
    """Return the name of a run's headline metric: the notebook's own, else its first number."""
    name = HEADLINE_METRICS.get(Path(notebook).stem)
    if name in metrics:
        return name
    numbers = [
        k for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    return numbers[0] if numbers else None


def _value(value) -> str:
    """Return a parameter value as a short cell (lists joined with ``+``)."""
    if isinstance(value, list):
        return "+".join(map(str, value))
    return format(value, "g") if isinstance(value, float) else str(value)


def results_table(runs) -> pd.DataFrame:
    """Return one row per run: parameters, status, seconds, peak memory, headline, metrics."""
    rows = []
    for run in runs:
        record, metrics = run.record, run.record.get("metrics") or {}
        name = headline_metric(run.notebook.name, metrics)
        row = {"run": run.folder.name, "notebook": run.notebook.stem}
        row.update({key: _value(value) for key, value in run.parameters.items()})
        row.update(
            status=record.get("status", "not run"),
            seconds=record.get("seconds"),
            peak_mib=record.get("peak_mib"),
            headline=name or "",
            headline_value=metrics.get(name) if name else None,
            error=record.get("error", ""),
        )
        row.update({f"metric.{key}": value for key, value in metrics.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(value) -> str:
    """Return a number with 3 significant digits; anything else as it is; blank for none."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def short_table(table: pd.DataFrame, swept: list[str], show: tuple[str, ...] = ()) -> pd.DataFrame:
    """Return what a person reads: notebook, swept parameters, status, time, peak, headline.

    ``show`` adds metrics by name (``fine_tuned_all_checks``), each as a column of its own.
    """
    columns = ["notebook", *swept, "status", "seconds", "peak_mib", "headline", "headline_value"]
    columns += [f"metric.{name}" for name in show]
    short = table[[c for c in columns if c in table.columns]].copy()
    short["notebook"] = short["notebook"].str.slice(0, 2)  # "03": the course numbers them
    short["headline"] = short["headline"].str.slice(0, 24)
    for column in ["headline_value", *(c for c in short.columns if c.startswith("metric."))]:
        short[column] = short[column].map(_cell)
    names = {"notebook": "nb", "peak_mib": "peak MiB", "headline_value": "value"}
    names.update({f"metric.{name}": name for name in show})
    return short.rename(columns=names)


def write_results(
    table: pd.DataFrame, swept: list[str], out_root: Path, show: tuple[str, ...] = ()
) -> list[Path]:
    """Write ``results.csv`` (everything), ``results.md`` and, for a sweep, ``comparison.png``."""
    written = [out_root / "results.csv", out_root / "results.md"]
    table.to_csv(written[0], index=False)
    markdown = short_table(table, swept, show).to_markdown(index=False)
    failed = table[table["status"] != "ok"]
    notes = "".join(f"\n- `{row.run}`: {row.error}" for row in failed.itertuples())
    written[1].write_text(markdown + ("\n\nFailed runs:" + notes if notes else "") + "\n", "utf-8")
    plot = comparison_plot(table, swept, out_root / "comparison.png")
    return written + ([plot] if plot else [])


def comparison_plot(table: pd.DataFrame, swept: list[str], path: Path) -> Path | None:
    """Plot the headline metric against the first swept parameter, one line per other setting."""
    ok = table[(table["status"] == "ok") & table["headline_value"].notna()]
    if not swept or ok.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, others = swept[0], swept[1:]
    figure, axis = plt.subplots(figsize=(6, 4))
    for key, group in ok.groupby(["notebook", *others], sort=False):
        label = ", ".join(f"{name}={value}" for name, value in zip(others, key[1:], strict=True))
        label = label or key[0]
        axis.plot(group[x].astype(str), group["headline_value"].astype(float), "o-", label=label)
    axis.set_xlabel(x)
    axis.set_ylabel(", ".join(sorted(set(ok["headline"]))))
    if len(axis.get_lines()) > 1 or others:
        axis.legend(fontsize=8)
    axis.set_title("batch: headline metric across the grid")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
