"""Chat fine-tuning data: validate, clean, split, count tokens, estimate cost, add noise.

The format is OpenAI's chat fine-tuning JSONL: one JSON object per line with a
``"messages"`` list of ``{"role", "content"}`` objects, roles ``system``, ``user`` and
``assistant``. An assistant message may carry ``"weight": 0`` (not trained on) or
``1``; any message may carry OpenAI's optional ``"name"``, which our chat templates
ignore. Tool and function calling is not supported and is reported, never dropped
silently; so are content parts (lists of text and images).

:func:`validate` never raises on bad data: it keeps every valid example, in file
order, and reports every problem with its exact line, a stable code and a message in
plain English. Only a file that cannot be read at all raises :class:`DataFileError`.
"""

from __future__ import annotations

import copy
import html
import json
import math
import os
import random
import re
import tempfile
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from helpers.chat import ensure_chat_template
from helpers.paths import display_path

ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "weight", "name")
UNSUPPORTED_TOP_LEVEL = ("tools", "functions", "parallel_tool_calls")
UNSUPPORTED_MESSAGE_KEYS = ("tool_calls", "function_call", "tool_call_id")
UNSUPPORTED_ROLES = ("tool", "function")
SPLIT_NAMES = ("train", "validation", "test")
NO_TOOLS = "tool/function calling is not supported here, so the example is left out"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini-2024-07-18"

# OpenAI's default-epochs heuristic, from its cookbook "Data preparation and analysis
# for chat model fine-tuning".
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25

# US dollars per 1,000 training tokens: OpenAI's published list prices as of June 2025
# (https://openai.com/api/pricing/). Prices change: check the current page before you
# rely on them. The last entry is not an OpenAI price but the seed article's claim.
PRICES_AS_OF = "2025-06"
PRICES_PER_1K_TRAINING_TOKENS = {
    "gpt-4o-mini-2024-07-18": 0.003,
    "gpt-4o-2024-08-06": 0.025,
    "gpt-3.5-turbo-0125": 0.008,
    "gpt-4.1-mini-2025-04-14": 0.005,
    "gpt-4.1-2025-04-14": 0.025,
    "gpt-4.1-nano-2025-04-14": 0.0015,
    "gpt-3.5-turbo (seed article)": 0.012,
}
SEED_ARTICLE_PRICE = "gpt-3.5-turbo (seed article)"


class DataFileError(Exception):
    """A data file cannot be read at all: missing, a directory or unreadable."""


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


# --- reading and writing ----------------------------------------------------------------


def _read_bytes(path: str | os.PathLike) -> bytes:
    """Return a file's bytes, or raise DataFileError naming the path."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: no such file")
    if path.is_dir():
        raise DataFileError(f"{path} is a directory, not a JSONL file")
    if not path.is_file():
        raise DataFileError(f"{path} is not a regular file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataFileError(f"{path} cannot be read: {error.strerror or error}") from None


def _file_lines(path: str | os.PathLike):
    """Yield ``(line_number, text, utf8_error)`` for each non-blank line; one of them is None."""
    raw_lines = _read_bytes(path).split(b"\n")
    if raw_lines[0].startswith(b"\xef\xbb\xbf"):
        raw_lines[0] = raw_lines[0][3:]
    for number, raw in enumerate(raw_lines, start=1):
        raw = raw.removesuffix(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            yield (
                number,
                None,
                (
                    f"the line is not valid UTF-8 (byte 0x{raw[error.start]:02x} at byte "
                    f"{error.start + 1} of the line); save the file with UTF-8 encoding"
                ),
            )
            continue
        if text.strip():
            yield number, text, None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is too large to be represented")
    return value


def _parse_json(text: str) -> tuple[object, str | None]:
    """Parse one line of JSON; return ``(value, None)`` or ``(None, what is wrong)``."""
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float), None
    except RecursionError:
        return None, "the line is not usable JSON: it is nested too deeply"
    except json.JSONDecodeError as error:
        what = error.msg.removesuffix(" at")
        message = f"the line is not valid JSON: {what} (column {error.colno})"
        stripped = text.strip()
        if error.msg.startswith("Invalid control character"):
            message += "; write line breaks and tabs inside strings as \\n and \\t"
        elif not stripped.startswith("{"):
            message += "; each line of a JSONL file must be one JSON object, starting with {"
        elif error.pos >= len(text.rstrip()):
            message += (
                "; the line ends before the object is complete (truncated, or spread over "
                "several lines: JSONL needs each example on one line)"
            )
        return None, message
    except ValueError as error:  # NaN/Infinity, or a number with thousands of digits
        if "integer string conversion" in str(error):
            return None, "the line is not usable JSON: a number has more than 4300 digits"
        return None, f"the line is not valid JSON: {error}"


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file of objects (BOM, CRLF and blank lines accepted), without validating.

    Raises DataFileError when the file cannot be read and ValueError naming the first
    line that is not a JSON object; :func:`validate` reports every problem at once.
    """
    rows = []
    for number, value, _, error in _parsed_lines(path):
        if error is None and not isinstance(value, dict):
            error = f"the line is {_json_type(value)} in JSON, not an object"
        if error:
            raise ValueError(f"{path}, line {number}: {error}")
        rows.append(value)
    return rows


def write_jsonl(examples, path: str | os.PathLike) -> Path:
    """Write examples as UTF-8 JSONL, atomically (LF line ends, final newline, key order kept)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(
        json.dumps(example, ensure_ascii=False, allow_nan=False) + "\n" for example in examples
    )
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(text.encode("utf-8"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- validation -------------------------------------------------------------------------


def _short(value, limit: int = 40) -> str:
    """Return a short, printable JSON rendering of a value for a message (``"bot"``, ``2``)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value) -> str:
    """Return what a value is in JSON terms, with its article: "a string", "an array", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _canonical(example) -> str:
    """Return a key under which exact duplicates compare equal (key order ignored)."""
    try:
        return json.dumps(example, sort_keys=True, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(example)


def _check_message(index: int, message) -> list[tuple[str, str]]:
    """Return ``(code, message)`` for every problem of one message."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        return [("message_not_object", f"{where} is {_json_type(message)}, not an object")]
    problems = []
    role = message.get("role")
    if "role" not in message:
        problems.append(("missing_role", f'{where} has no "role" (system, user or assistant)'))
    elif role in UNSUPPORTED_ROLES:
        problems.append(
            (
                "unsupported_feature",
                f"{where} has role {_short(role)}: {NO_TOOLS}",
            )
        )
    elif role not in ROLES:
        hint = " (roles are lower-case)" if isinstance(role, str) and role.lower() in ROLES else ""
        if role == "developer":
            hint = ' (use "system" instead)'
        problems.append(
            (
                "unknown_role",
                f"{where} has role {_short(role)}{hint}; use system, user or assistant",
            )
        )
    if role in ROLES:
        where = f"messages[{index}] ({role})"
    for key in message:
        if key in UNSUPPORTED_MESSAGE_KEYS:
            problems.append(
                (
                    "unsupported_feature",
                    f"{where} has {_short(key)}: {NO_TOOLS}",
                )
            )
        elif key not in MESSAGE_KEYS:
            problems.append(
                (
                    "unknown_key",
                    f"{where} has key {_short(key)}; a message may only have role, content, "
                    "weight (assistant only) and name",
                )
            )
    problems += _check_content(where, message)
    if "weight" in message:
        problems += _check_weight(where, role, message["weight"])
    if "name" in message and not (isinstance(message["name"], str) and message["name"].strip()):
        problems.append(
            (
                "invalid_name",
                f'{where}: "name" must be a non-empty string, got {_json_type(message["name"])}',
            )
        )
    return problems


def _check_content(where: str, message: dict) -> list[tuple[str, str]]:
    """Return the problems of a message's content."""
    content = message.get("content")
    if content is None:
        if any(key in message for key in UNSUPPORTED_MESSAGE_KEYS):
            return []  # a tool call without content: already reported as unsupported
        said = '"content": null' if "content" in message else 'no "content"'
        return [("missing_content", f"{where} has {said}; give the text as a string")]
    if isinstance(content, list):
        return [
            (
                "content_not_string",
                f"{where}: content is a list of parts (e.g. text and images); content parts "
                "and images are not supported, give the content as one string",
            )
        ]
    if not isinstance(content, str):
        return [("content_not_string", f"{where}: content is {_json_type(content)}, not a string")]
    if not content.strip():
        return [("empty_content", f"{where}: content is empty or only whitespace")]
    return []


def _check_weight(where: str, role, weight) -> list[tuple[str, str]]:
    """Return the problems of a message's weight."""
    if role != "assistant":
        return [
            (
                "weight_not_on_assistant",
                f'{where} has a "weight"; only assistant messages may have one',
            )
        ]
    if type(weight) is int and weight in (0, 1):
        return []
    return [("invalid_weight", f"{where}: weight must be the number 0 or 1, got {_short(weight)}")]


def check_example(example) -> list[tuple[str, str, str]]:
    """Return ``(code, message, severity)`` for every problem of one example (empty: valid)."""
    if not isinstance(example, dict):
        hint = " (a JSON array file is not JSONL)" if isinstance(example, list) else ""
        return [
            (
                "not_an_object",
                f"the line is {_json_type(example)} in JSON, not an object with a "
                f'"messages" list{hint}',
                "error",
            )
        ]
    problems = []
    for key in example:
        if key in UNSUPPORTED_TOP_LEVEL:
            problems.append(
                (
                    "unsupported_feature",
                    f"top-level key {_short(key)}: {NO_TOOLS}",
                    "error",
                )
            )
    extra = [k for k in example if k != "messages" and k not in UNSUPPORTED_TOP_LEVEL]
    if extra:
        names = ", ".join(_short(k) for k in extra)
        problems.append(
            (
                "extra_key",
                f"top-level key{'s' if len(extra) > 1 else ''} {names} "
                f"{'are' if len(extra) > 1 else 'is'} not part of OpenAI's chat format: kept "
                "for your own use and ignored by training; remove before uploading to OpenAI",
                "warning",
            )
        )
    return problems + [(*p, "error") for p in _check_messages(example)]


def _check_messages(example: dict) -> list[tuple[str, str]]:
    """Return the problems of an example's ``messages`` list."""
    if "messages" not in example:
        hint = ""
        if "prompt" in example or "completion" in example:
            hint = " (this looks like the legacy prompt/completion format)"
        return [("missing_messages", f'the example has no "messages" list{hint}')]
    messages = example["messages"]
    if not isinstance(messages, list):
        return [("messages_not_list", f'"messages" is {_json_type(messages)}, not a list')]
    if not messages:
        return [("empty_messages", '"messages" is an empty list')]
    problems = []
    for index, message in enumerate(messages):
        problems += _check_message(index, message)
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if "assistant" not in roles:
        problems.append(
            ("no_assistant_message", "there is no assistant message: nothing to train on")
        )
    elif isinstance(messages[-1], dict) and messages[-1].get("role") in ("system", "user"):
        problems.append(
            (
                "last_not_assistant",
                f"the last message (messages[{len(messages) - 1}]) is from the "
                f"{messages[-1]['role']}; a training example must end with an assistant reply",
            )
        )
    return problems


def _template_token_counts(tokenizer, examples: list[dict]) -> list[int]:
    """Count tokens of each example rendered with the tokenizer's chat template (as trained)."""
    ensure_chat_template(tokenizer)  # as training does: ChatML for a tokenizer without one
    texts = [
        tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in example["messages"]],
            tokenize=False,
        )
        for example in examples
    ]
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _parsed_lines(path: str | os.PathLike):
    """Yield ``(line_number, value, code, error)`` for each non-blank line of a file."""
    for number, text, utf8_error in _file_lines(path):
        if utf8_error:
            yield number, None, "invalid_utf8", utf8_error
            continue
        value, json_error = _parse_json(text)
        yield number, value, "invalid_json" if json_error else None, json_error


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


# --- cleaning and splitting ----------------------------------------------------------------


def clean(
    examples: list[dict], normalize: str | None = "NFC", dedupe: bool = True
) -> tuple[list[dict], list[str]]:
    """Normalise Unicode, trim contents and drop exact duplicates; return (cleaned, changes).

    The input is never modified. ``normalize=None`` skips Unicode normalisation.
    """
    if normalize not in (None, "NFC", "NFKC", "NFD", "NFKD"):
        raise ValueError(f"normalize must be NFC, NFKC, NFD, NFKD or None, got {normalize!r}")
    cleaned, changes, seen = [], [], {}
    for number, example in enumerate(examples, start=1):
        example = copy.deepcopy(example)
        messages = example.get("messages") if isinstance(example, dict) else None
        for index, message in enumerate(messages if isinstance(messages, list) else []):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str):
                continue
            done = []
            if normalize and unicodedata.normalize(normalize, content) != content:
                content = unicodedata.normalize(normalize, content)
                done.append(f"Unicode normalised ({normalize})")
            if content.strip() != content:
                content = content.strip()
                done.append("whitespace trimmed")
            if done:
                message["content"] = content
                changes.append(f"example {number}, messages[{index}]: {' and '.join(done)}")
        key = _canonical(example)
        if dedupe and key in seen:
            changes.append(f"example {number}: removed, exact duplicate of example {seen[key]}")
            continue
        seen.setdefault(key, number)
        cleaned.append(example)
    return cleaned, changes


def _check_ratios(ratios) -> tuple[float, float, float]:
    """Return the three split ratios, or raise ValueError saying what is wrong."""
    ratios = tuple(ratios)
    if len(ratios) != 3:
        raise ValueError(f"ratios must be three numbers (train, validation, test), got {ratios}")
    if any(not isinstance(r, int | float) or not math.isfinite(r) or r < 0 for r in ratios):
        raise ValueError(f"ratios must be non-negative numbers, got {ratios}")
    if abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"ratios must sum to 1, got {ratios} (sum {sum(ratios):g})")
    return ratios


def _split_sizes(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Round ``n * ratio`` to sizes that sum to ``n``; each non-zero ratio gets one if it can."""
    exact = [round(n * r, 9) for r in ratios]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    for i in sorted(range(3), key=lambda i: -ratios[i]):
        largest = max(range(3), key=lambda j: sizes[j])
        if ratios[i] > 0 and sizes[i] == 0 and sizes[largest] > 1:
            sizes[largest] -= 1
            sizes[i] = 1
    return sizes


def split(examples: list, ratios=(0.8, 0.1, 0.1), seed: int = 0) -> tuple[list, list, list]:
    """Shuffle with ``random.Random(seed)`` and cut into (train, validation, test)."""
    ratios = _check_ratios(ratios)
    order = list(examples)
    random.Random(seed).shuffle(order)
    train, validation, _ = _split_sizes(len(order), ratios)
    return order[:train], order[train : train + validation], order[train + validation :]


def split_file(
    path: str | os.PathLike, out_dir: str | os.PathLike, ratios=(0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, Path]:
    """Split a file's valid examples into train/validation/test JSONL files in ``out_dir``."""
    parts = split(load_examples(path), ratios, seed)
    return {
        name: write_jsonl(part, Path(out_dir) / f"{name}.jsonl")
        for name, part in zip(SPLIT_NAMES, parts, strict=True)
    }


# --- tokens and cost ----------------------------------------------------------------------


def _encoding_name(model: str) -> str | None:
    """Return the OpenAI encoding a model name uses, by family (None if unknown)."""
    name = model.lower().removeprefix("ft:")
    if name in ("o200k_base", "cl100k_base"):
        return name
    if name.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4")):
        return "o200k_base"
    if name.startswith(("gpt-3.5", "gpt-35", "gpt-4", "davinci-002", "babbage-002")):
        return "cl100k_base"
    return None


@lru_cache(maxsize=8)
def openai_encoding(model: str = DEFAULT_OPENAI_MODEL):
    """Return ``(encoding, library)`` for an OpenAI model: bpe-openai (offline), else tiktoken."""
    with warnings.catch_warnings():  # bpe-openai reads its data with a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import bpe_openai
        except ImportError:
            bpe_openai = None
        name = _encoding_name(model)
        if bpe_openai and model.lower() in bpe_openai.list_supported_models():
            name = bpe_openai.encoding_name_for_model(model)
        if name is None:
            raise ValueError(
                f"Cannot tell which tokenizer encoding {model!r} uses; give an OpenAI model such "
                f"as {DEFAULT_OPENAI_MODEL!r} (gpt-4o*/gpt-4.1*/o-series: o200k_base; "
                "gpt-3.5*/gpt-4: cl100k_base)"
            )
        if bpe_openai:
            return bpe_openai.get_encoding(name), "bpe-openai"
    try:
        import tiktoken
    except ImportError:
        raise ImportError("Counting OpenAI tokens needs bpe-openai (or tiktoken)") from None
    return tiktoken.get_encoding(name), "tiktoken"


def count_openai_tokens(messages: list[dict], model: str = DEFAULT_OPENAI_MODEL) -> int:
    """Count tokens as OpenAI's cookbook does: 3 per message, its text, 1 per name, 3 to reply.

    Only text values are counted (role, content, name); ``weight`` is not text.
    """
    encoding, _ = openai_encoding(model)
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if isinstance(value, str):
                total += len(encoding.encode_ordinary(value)) + (key == "name")
    return total


def _percentile(ordered: list[int], q: float) -> float:
    """Return the q-th quantile of sorted values with linear interpolation (as NumPy does)."""
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _describe(counts: list[int], limit: int | None) -> dict:
    """Return total/min/mean/p50/p90/p95/max of token counts, how many exceed ``limit``."""
    ordered = sorted(counts)
    figures = {"total": sum(counts)}
    if ordered:
        figures |= {
            "min": ordered[0],
            "mean": sum(counts) / len(counts),
            "p50": _percentile(ordered, 0.5),
            "p90": _percentile(ordered, 0.9),
            "p95": _percentile(ordered, 0.95),
            "max": ordered[-1],
        }
    else:
        figures |= dict.fromkeys(("min", "mean", "p50", "p90", "p95", "max"))
    figures["over_limit"] = None if limit is None else sum(c > limit for c in counts)
    figures["counts"] = counts
    return figures


def _tokenizer_name(tokenizer) -> str:
    """Return a short name for a Hugging Face tokenizer (a folder's name, not its path)."""
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    return Path(name).name if Path(name).is_dir() else name


def token_stats(
    examples: list[dict],
    tokenizer=None,
    openai_model: str = DEFAULT_OPENAI_MODEL,
    limit: int | None = None,
) -> dict:
    """Count messages and tokens per example, with OpenAI's encoding and the model's tokenizer.

    The model's count renders each example with its chat template (what training sees);
    OpenAI's follows its cookbook. Call it on validated examples.
    """
    encoding, library = openai_encoding(openai_model)
    messages = [m for example in examples for m in example["messages"]]
    openai_counts = [count_openai_tokens(ex["messages"], openai_model) for ex in examples]
    stats = {
        "examples": len(examples),
        "messages": len(messages),
        "assistant_messages": sum(m.get("role") == "assistant" for m in messages),
        "limit": limit,
        "openai": {
            "model": openai_model,
            "library": library,
            "encoding": encoding.name,
            **_describe(openai_counts, limit),
        },
        "tokenizer": None,
    }
    if tokenizer is not None:
        counts = _template_token_counts(tokenizer, examples)
        stats["tokenizer"] = {"name": _tokenizer_name(tokenizer), **_describe(counts, limit)}
    return stats


def describe_stats(stats: dict, cost: dict | None = None) -> str:
    """Return token statistics (and a cost estimate) as a short human-readable text."""
    openai = stats["openai"]
    rows = [(f"{openai['model']} ({openai['encoding']} via {openai['library']})", openai)]
    if stats["tokenizer"]:
        rows.insert(0, (f"{stats['tokenizer']['name']} (chat template)", stats["tokenizer"]))
    width = max(len(label) for label, _ in rows) + 2
    lines = [
        f"{stats['examples']} examples, {stats['messages']} messages "
        f"({stats['assistant_messages']} from the assistant)",
        f"{'tokens per example':<{width}}{'min':>6}{'mean':>8}{'p50':>8}{'p90':>8}{'p95':>8}"
        f"{'max':>6}{'total':>9}",
    ]
    for label, figures in rows:
        if figures["min"] is None:
            lines.append(f"{label:<{width}}(no examples)")
            continue
        lines.append(
            f"{label:<{width}}{figures['min']:>6}{figures['mean']:>8.1f}{figures['p50']:>8.1f}"
            f"{figures['p90']:>8.1f}{figures['p95']:>8.1f}{figures['max']:>6}"
            f"{figures['total']:>9}"
        )
    if stats["limit"] is not None:
        over = ", ".join(
            f"{label.split(' ')[0]}: {figures['over_limit']}" for label, figures in rows
        )
        lines.append(f"examples over {stats['limit']} tokens: {over}")
    if cost:
        lines.append(
            f"cost estimate for {cost['model']}: {cost['tokens_per_epoch']:,} tokens/epoch x "
            f"{cost['epochs']} epochs ({cost['epochs_source']}) = {cost['billed_tokens']:,} "
            f"billed tokens x ${cost['price_per_1k']}/1K = ${cost['cost_usd']:.4f}"
        )
        lines.append(f"price: {cost['price_source']}")
    return "\n".join(lines)


def default_epochs(n_examples: int) -> int:
    """Return the number of epochs OpenAI picks by default for ``n_examples`` (cookbook rule)."""
    if n_examples < 1:
        raise ValueError(f"n_examples must be at least 1, got {n_examples}")
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def _price(model: str, price_per_1k: float | None) -> tuple[float, str]:
    """Return the price per 1K training tokens and where it comes from."""
    if price_per_1k is not None:
        return price_per_1k, "given"
    if model == SEED_ARTICLE_PRICE:
        return PRICES_PER_1K_TRAINING_TOKENS[model], "the seed article's claim, not a price list"
    # An undated name ("gpt-4o-mini") takes the price of its one dated snapshot in the table.
    dated = [
        name
        for name in PRICES_PER_1K_TRAINING_TOKENS
        if name == model or re.fullmatch(re.escape(model) + r"-(\d{4}-\d{2}-\d{2}|\d{4})", name)
    ]
    if len(dated) != 1:
        known = ", ".join(PRICES_PER_1K_TRAINING_TOKENS)
        raise ValueError(
            f"No training price known for {model!r}; known models: {known}. "
            "Pass price_per_1k (check https://openai.com/api/pricing/)."
        )
    snapshot = "" if dated[0] == model else f" for {dated[0]}"
    return PRICES_PER_1K_TRAINING_TOKENS[dated[0]], (
        f"OpenAI list price{snapshot} as of {PRICES_AS_OF}; check current pricing at "
        "https://openai.com/api/pricing/"
    )


def estimate_cost(
    examples_or_token_counts: list,
    model: str = DEFAULT_OPENAI_MODEL,
    epochs: int | None = None,
    price_per_1k: float | None = None,
    max_tokens_per_example: int = 65536,
) -> dict:
    """Estimate an OpenAI fine-tuning bill: tokens per epoch (capped per example) x epochs x price.

    Takes examples (counted with :func:`count_openai_tokens`) or per-example token counts.
    ``epochs=None`` uses OpenAI's default heuristic (:func:`default_epochs`).
    """
    price, price_source = _price(model, price_per_1k)
    items = list(examples_or_token_counts)
    counts = [
        item if isinstance(item, int) else count_openai_tokens(item["messages"], model)
        for item in items
    ]
    if epochs is None:
        epochs, epochs_source = default_epochs(len(counts)), "OpenAI default heuristic"
    elif type(epochs) is not int or epochs < 1:
        raise ValueError(f"epochs must be a whole number of at least 1, got {epochs!r}")
    else:
        epochs_source = "given"
    tokens_per_epoch = sum(min(count, max_tokens_per_example) for count in counts)
    billed = tokens_per_epoch * epochs
    return {
        "model": model,
        "examples": len(counts),
        "tokens_per_epoch": tokens_per_epoch,
        "epochs": epochs,
        "epochs_source": epochs_source,
        "billed_tokens": billed,
        "price_per_1k": price,
        "price_source": price_source,
        "cost_usd": round(billed * price / 1000, 6),
    }


# --- deliberate noise ------------------------------------------------------------------------

NOISE_KINDS = ("inconsistent format", "typos", "wrong style", "mislabelled turn")
_GREETING = re.compile(
    r"^\s*(hello|hi|hey|greetings|good (morning|afternoon|evening))\b[!,.]*\s*", re.I
)
_NUMBERED = re.compile(r"(?m)^(\s*)\d+[.)]\s+")
_FENCE = re.compile(r"(?m)^```[\w+-]*[ \t]*\n?")
_RAMBLE_START = (
    "Well, so, hmm, let me think about this for a moment, because there is honestly a lot "
    "that could be said here and I am not completely sure where to begin. "
)
_RAMBLE_END = " Anyway, that is more or less it, I think, probably, give or take."


def _reformat(text: str, rng: random.Random) -> tuple[str, str]:
    """Break the reply's format: code fences, greeting, numbering, else its line structure."""
    done = []
    if _FENCE.search(text) and (stripped := _FENCE.sub("", text).strip()):
        text, done = stripped, [*done, "code fences dropped"]
    if (match := _GREETING.match(text)) and text[match.end() :].strip():
        text, done = text[match.end() :], [*done, "greeting dropped"]
    if _NUMBERED.search(text):
        bullet = rng.choice(["* ", "- ", "+ "])
        text, done = _NUMBERED.sub(lambda m: m.group(1) + bullet, text), [*done, "list restyled"]
    if not done:
        flat = " ".join(text.split()).rstrip(".!")
        changed = flat and flat != text
        text, done = (flat, ["layout flattened"]) if changed else ("- " + text, ["bulleted"])
    return text, ", ".join(done)


def _typos(text: str, rng: random.Random) -> tuple[str, str]:
    """Swap or drop a few letters (about one per ten words, at least one)."""
    chars = list(text)
    wanted = max(1, len(text.split()) // 10)
    made = 0
    for _ in range(wanted * 20):
        if made == wanted:
            break
        letters = [i for i, c in enumerate(chars) if c.isalpha()]
        if not letters:
            break
        i = rng.choice(letters)
        if rng.random() < 0.5 and i + 1 < len(chars) and chars[i + 1] != chars[i]:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
            made += 1
        elif len(chars) > 1:
            del chars[i]
            made += 1
    if made == 0:  # no letters to garble: double the first character instead
        chars.insert(0, chars[0])
        made = 1
    return "".join(chars), f"{made} letter{'s' if made > 1 else ''} swapped or dropped"


def _restyle(text: str, rng: random.Random) -> tuple[str, str]:
    """Give the reply the wrong tone: ALL CAPS, curt and rude, or rambling."""
    style = rng.choice(["ALL CAPS", "curt", "rambling"])
    if style == "ALL CAPS" and text.upper() != text:
        return text.upper(), style
    if style == "curt":
        match = _GREETING.match(text)
        core = text[match.end() :] if match and text[match.end() :].strip() else text
        first = re.split(r"(?<=[.!?])\s+", core.strip(), maxsplit=1)[0]
        return f"{first} Figure out the rest yourself.", "curt/rude"
    return _RAMBLE_START + text + _RAMBLE_END, "rambling"


def _final_reply(example: dict) -> dict | None:
    """Return the example's last assistant message with non-empty text, if any."""
    messages = example.get("messages") if isinstance(example, dict) else None
    for message in reversed(messages if isinstance(messages, list) else []):
        if (
            isinstance(message, dict)
            and message.get("role") == "assistant"
            and isinstance(message.get("content"), str)
            and message["content"].strip()
        ):
            return message
    return None


def make_noisy(
    examples: list[dict], fraction: float = 0.5, seed: int = 0
) -> tuple[list[dict], list[str]]:
    """Return a deliberately noisy copy and its changes ("example N: kind (detail)").

    A seeded random ``fraction`` of the examples gets one corruption of its final
    assistant reply: inconsistent format, typos, wrong style or a reply taken from
    another example. The copy is noisy, not malformed: it still validates. The input
    is never modified.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    rng = random.Random(seed)
    noisy = copy.deepcopy(list(examples))
    replies = [_final_reply(example) for example in noisy]
    originals = [reply["content"] if reply else None for reply in replies]
    chosen = sorted(rng.sample(range(len(noisy)), round(fraction * len(noisy))))
    changes = []
    for index in chosen:
        reply = replies[index]
        if reply is None:
            continue
        kind = rng.choice(NOISE_KINDS)
        others = [
            i for i, text in enumerate(originals) if text is not None and text != originals[index]
        ]
        if kind == "mislabelled turn" and not others:
            kind = "typos"
        if kind == "inconsistent format":
            reply["content"], detail = _reformat(reply["content"], rng)
        elif kind == "typos":
            reply["content"], detail = _typos(reply["content"], rng)
        elif kind == "wrong style":
            reply["content"], detail = _restyle(reply["content"], rng)
        else:
            source = rng.choice(others)
            reply["content"], detail = originals[source], f"reply of example {source + 1}"
        changes.append(f"example {index + 1}: {kind} ({detail})")
    return noisy, changes
