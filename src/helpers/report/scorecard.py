"""The claims scorecard: every claim of the article the course tests, with its run's verdict.

Notebooks record each claim with ``Metrics.claim(key, Claim(...))`` (helpers.verdicts):
``metrics["claims"][key] = {"claim", "outcome", "figure", "band", "note"}``. The scorecard
is one table of them all, notebook by notebook in the order they were recorded.
"""

from __future__ import annotations

from helpers.report import ReportError
from helpers.report.collect import Run
from helpers.report.tables import Table
from helpers.report.values import listed
from helpers.verdicts import OUTCOMES

COLUMNS = ["claim", "notebook", "verdict", "figure", "band"]


def claims(run: Run) -> list[dict]:
    """Return a run's recorded claims, each checked: a claim, one of the outcomes, a figure."""
    recorded = run.metrics.get("claims", {})
    if not isinstance(recorded, dict):
        raise ReportError(f"{run.source}: 'claims' is not an object of claims by key")
    checked = []
    for key, record in recorded.items():
        where = f"{run.source}: claim {key!r}"
        if not isinstance(record, dict):
            raise ReportError(f"{where} is not an object")
        for field in ("claim", "outcome", "figure"):
            if not isinstance(record.get(field), str) or not record[field].strip():
                raise ReportError(f"{where} has no {field}")
        if record["outcome"] not in OUTCOMES:
            raise ReportError(
                f"{where}: outcome {record['outcome']!r} is not one of {', '.join(OUTCOMES)}"
            )
        checked.append(record)
    return checked


def notebook_link(stem: str, prefix: str) -> str:
    """Return the notebook's number linked to its file: ``[03](notebooks/03_lora_peft.ipynb)``."""
    return f"[{stem[:2]}]({prefix}{stem}.ipynb)"


def summary(records: list[dict]) -> str:
    """Return one line counting the claims by outcome."""
    counts = [(o, sum(r["outcome"] == o for r in records)) for o in OUTCOMES]
    parts = ", ".join(f"{count} {outcome}" for outcome, count in counts if count)
    return f"{len(records)} claims tested: {parts}."


def scorecard(runs: dict[str, Run], prefix: str = "notebooks/") -> Table | str:
    """Return the scorecard table (or a sentence, when no run recorded a claim yet)."""
    rows, records, without = [], [], []
    for stem, run in sorted(runs.items()):
        found = claims(run)
        if not found:
            without.append(stem[:2])
        for record in found:
            records.append(record)
            verdict = f"**{record['outcome']}**"
            if str(record.get("note") or "").strip():
                verdict += f"; {record['note']}"
            rows.append(
                {
                    "claim": record["claim"],
                    "notebook": notebook_link(stem, prefix),
                    "verdict": verdict,
                    "figure": record["figure"],
                    "band": str(record.get("band") or ""),
                }
            )
    missing = ""
    if without:
        missing = (
            f"No claims recorded in the canonical run of notebook{'s' if len(without) > 1 else ''}"
            f" {listed(without)} (a run from before `Metrics.claim`): rerun with `make notebooks`."
        )
    if not rows:
        return missing
    table = Table(COLUMNS, rows, key="claim", notes=[summary(records)])
    if missing:
        table.notes.append(missing)
    return table
