"""Plots for the notebooks: loss curves and comparison charts, shown inline and saved as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd


def save(figure, path: str | Path | None):
    """Save a figure as PNG when ``path`` is given; return the figure (it shows inline)."""
    figure.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    return figure


def plot_loss(results: dict, path: str | Path | None = None, title: str = "Training loss"):
    """Plot train (solid) and validation (dashed) loss per run, marking each run's best step.

    ``results`` maps a label to a TrainResult (or anything with ``train_loss``,
    ``eval_loss``, ``best_step`` and ``best_eval_loss``).
    """
    figure, axes = plt.subplots(figsize=(7, 4))
    for index, (label, result) in enumerate(results.items()):
        color = f"C{index}"
        if result.train_loss:
            steps, losses = zip(*result.train_loss, strict=True)
            axes.plot(steps, losses, color=color, label=f"{label}: train")
        if result.eval_loss:
            steps, losses = zip(*result.eval_loss, strict=True)
            axes.plot(
                steps, losses, color=color, linestyle="--", marker=".", label=f"{label}: validation"
            )
        if result.best_step is not None:
            axes.scatter(
                [result.best_step],
                [result.best_eval_loss],
                s=120,
                marker="*",
                color=color,
                zorder=3,
                label=f"{label}: best (step {result.best_step})",
            )
    axes.set(xlabel="optimizer step", ylabel="loss (assistant tokens)", title=title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save(figure, path)


def plot_bars(
    values: pd.DataFrame | dict,
    path: str | Path | None = None,
    title: str = "",
    ylabel: str = "",
    fmt: str = "{:.3g}",
):
    """Bar chart of one value per label (a dict) or grouped bars (a DataFrame: rows x columns)."""
    table = pd.DataFrame({ylabel or "value": values}) if isinstance(values, dict) else values
    figure, axes = plt.subplots(figsize=(7, 4))
    table.plot.bar(ax=axes, rot=0, legend=table.shape[1] > 1)
    for container in axes.containers:
        axes.bar_label(container, labels=[fmt.format(v) for v in container.datavalues], fontsize=8)
    axes.set(title=title, ylabel=ylabel)
    axes.grid(axis="y", alpha=0.3)
    return save(figure, path)


def plot_lines(
    table: pd.DataFrame,
    x: str,
    y: str,
    group: str | None = None,
    path: str | Path | None = None,
    title: str = "",
    logx: bool = False,
):
    """Line chart of ``y`` against ``x``, one line per value of ``group``, points labelled."""
    figure, axes = plt.subplots(figsize=(7, 4))
    groups = table.groupby(group) if group else [("", table)]
    for name, rows in groups:
        rows = rows.sort_values(x)
        axes.plot(rows[x], rows[y], marker="o", label=str(name) if group else None)
    if logx:
        axes.set_xscale("log")
    axes.set(xlabel=x, ylabel=y, title=title)
    axes.grid(alpha=0.3)
    if group:
        axes.legend(title=group, fontsize=8)
    return save(figure, path)
