"""Reading and writing JSONL: exact line numbers, strict JSON, atomic writes."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


class DataFileError(Exception):
    """A data file cannot be read at all: missing, a directory or unreadable."""


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


def _parsed_lines(path: str | os.PathLike):
    """Yield ``(line_number, value, code, error)`` for each non-blank line of a file."""
    for number, text, utf8_error in _file_lines(path):
        if utf8_error:
            yield number, None, "invalid_utf8", utf8_error
            continue
        value, json_error = _parse_json(text)
        yield number, value, "invalid_json" if json_error else None, json_error


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


def _short(value, limit: int = 40) -> str:
    """Return a short, printable JSON rendering of a value for a message (``"bot"``, ``2``)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _canonical(example) -> str:
    """Return a key under which exact duplicates compare equal (key order ignored)."""
    try:
        return json.dumps(example, sort_keys=True, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(example)


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
