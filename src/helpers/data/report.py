"""Validation results: a :class:`Problem` per finding, gathered in a :class:`ValidationReport`."""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Problem:
    """One finding about one line (``line`` 0: the whole file)."""

    line: int
    code: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        tag = self.code if self.severity == "error" else f"{self.code} ({self.severity})"
        return f"line {self.line}: {tag}: {self.message}"


@dataclass
class ValidationReport:
    """What :func:`validate` found: the valid examples, their lines and every problem."""

    source: str
    examples: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    total: int = 0

    @property
    def valid(self) -> int:
        """Number of valid examples (kept)."""
        return len(self.examples)

    @property
    def invalid(self) -> int:
        """Number of examples dropped because of errors."""
        return self.total - self.valid

    @property
    def errors(self) -> int:
        """Number of error problems."""
        return sum(p.severity == "error" for p in self.problems)

    @property
    def warnings(self) -> int:
        """Number of warnings (their examples are kept)."""
        return sum(p.severity == "warning" for p in self.problems)

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings allowed)."""
        return self.errors == 0

    def counts_by_code(self) -> dict[str, int]:
        """Return how often each problem code occurs, by code."""
        return dict(sorted(Counter(p.code for p in self.problems).items()))

    def summary(self) -> str:
        """Return the one-line summary: examples, valid, invalid, errors, warnings."""
        return (
            f"{self.total} examples: {self.valid} valid, {self.invalid} invalid; "
            f"{self.errors} errors, {self.warnings} warnings"
        )

    def to_dict(self) -> dict:
        """Return the report as plain JSON-ready values (without the examples)."""
        return {
            "source": self.source,
            "total": self.total,
            "valid": self.valid,
            "invalid": self.invalid,
            "errors": self.errors,
            "warnings": self.warnings,
            "ok": self.ok,
            "problems": [
                {"line": p.line, "code": p.code, "message": p.message, "severity": p.severity}
                for p in self.problems
            ],
            "counts_by_code": self.counts_by_code(),
        }

    def __str__(self) -> str:
        shown = 10
        text = [f"{self.source}: {self.summary()}"]
        text += [f"  {problem}" for problem in self.problems[:shown]]
        if len(self.problems) > shown:
            text.append(f"  ... and {len(self.problems) - shown} more (see .problems)")
        return "\n".join(text)

    def _repr_html_(self) -> str:
        shown = 20
        rows = "".join(
            f"<tr><td>{p.line}</td><td><code>{p.code}</code></td><td>{p.severity}</td>"
            f"<td style='text-align:left'>{html.escape(p.message)}</td></tr>"
            for p in self.problems[:shown]
        )
        more = len(self.problems) - shown
        tail = f"<p>... and {more} more (see <code>.problems</code>)</p>" if more > 0 else ""
        table = (
            "<table><tr><th>line</th><th>code</th><th>severity</th><th>message</th></tr>"
            f"{rows}</table>"
            if rows
            else ""
        )
        return (
            f"<p><b>{html.escape(self.source)}</b>: {html.escape(self.summary())}</p>{table}{tail}"
        )
