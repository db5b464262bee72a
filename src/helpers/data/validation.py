"""Validation: keep every valid example, report every problem with its line and a stable code.

:func:`validate` never raises on bad data: it keeps every valid example, in file
order, and reports every problem with its exact line, a stable code and a message in
plain English. Only a file that cannot be read at all raises :class:`DataFileError`.
"""

from __future__ import annotations

import os
import warnings

from helpers.data.checks import check_example
from helpers.data.jsonl import _canonical, _parsed_lines
from helpers.data.report import Problem, ValidationReport
from helpers.data.tokens import _template_token_counts
from helpers.paths import display_path


def validate(source, tokenizer=None, max_tokens: int | None = None) -> ValidationReport:
    """Check a JSONL file (path) or a list of example dicts; keep every valid example.

    Never raises on bad data; raises DataFileError only when the file cannot be read.
    With ``tokenizer`` and ``max_tokens``, examples longer than ``max_tokens`` tokens
    (rendered with the tokenizer's chat template) get a ``too_long`` warning.
    """
    if max_tokens is not None and tokenizer is None:
        raise ValueError("max_tokens needs a tokenizer to count tokens with")
    if isinstance(source, str | os.PathLike):
        report = ValidationReport(source=display_path(source))
        items = _parsed_lines(source)
        unit = "line"
    elif isinstance(source, list | tuple):
        report = ValidationReport(source=f"list of {len(source)} examples")
        items = ((index, value, None, None) for index, value in enumerate(source, start=1))
        unit = "example"
    else:
        raise TypeError(f"validate() takes a path or a list of dicts, not {type(source).__name__}")

    seen: dict[str, int] = {}
    for number, value, code, error in items:
        report.total += 1
        if error:
            report.problems.append(Problem(number, code, error))
            continue
        found = check_example(value)
        key = _canonical(value)
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            found.append(
                (
                    "invalid_utf8",
                    "the example contains a lone surrogate escape (such as \\ud83d without "
                    "its pair), which is not valid Unicode text",
                    "error",
                )
            )
        if not any(severity == "error" for _, _, severity in found):
            if key in seen:
                found.append(
                    (
                        "duplicate_example",
                        f"exact duplicate of {unit} {seen[key]}; clean(dedupe=True) removes it",
                        "warning",
                    )
                )
            else:
                seen[key] = number
            report.examples.append(value)
            report.lines.append(number)
        report.problems += [Problem(number, c, m, s) for c, m, s in found]

    if tokenizer is not None and max_tokens is not None:
        counts = _template_token_counts(tokenizer, report.examples)
        for number, count in zip(report.lines, counts, strict=True):
            if count > max_tokens:
                report.problems.append(
                    Problem(
                        number,
                        "too_long",
                        f"the example renders to {count} tokens with the chat template, more "
                        f"than max_tokens={max_tokens}: training will truncate it",
                        "warning",
                    )
                )
    if report.total == 0:
        report.problems.append(Problem(0, "no_examples", "there are no examples at all"))
    report.problems.sort(key=lambda problem: problem.line)
    return report


def load_examples(path: str | os.PathLike, **validate_kwargs) -> list[dict]:
    """Validate a file and return its valid examples; warn with the summary if it found problems."""
    report = validate(path, **validate_kwargs)
    if report.problems:
        warnings.warn(str(report), stacklevel=2)
    return report.examples
