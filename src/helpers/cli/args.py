"""Argument types shared by the commands: each returns the value or raises ArgumentTypeError.

argparse turns the error into the command's usage and one line, exit status 2.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def _number(kind: type, text: str):
    """Parse an int or a finite float, or raise ArgumentTypeError saying what was expected."""
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port(text: str) -> int:
    """A TCP port number, 1 to 65535."""
    value = _number(int, text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port must be between 1 and 65535, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number greater than 0."""
    value = _number(float, text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def ratio(text: str) -> float:
    """A split ratio: a number from 0 to 1 (the three must sum to 1, checked by data.split)."""
    value = _number(float, text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a ratio must be between 0 and 1, got {text}")
    return value


def existing_file(text: str) -> Path:
    """A path to an existing file."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file")
    return path
