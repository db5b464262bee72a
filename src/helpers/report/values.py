"""Figures as a document writes them: ``91 %``, ``3 min 41 s``, ``3,729 MiB``, ``1.2x``.

:class:`Figures` reads one run's metrics by key. A figure the run did not record (a key
renamed or dropped in a notebook) reads ``n/a`` in the document and is noted, so that
``python -m helpers report`` can name it instead of failing on one missing number.
"""

from __future__ import annotations

import math

from helpers.report.collect import Run

MISSING = "n/a"


def percent(value: float) -> str:
    """Format a rate: ``0.909`` -> ``91 %``."""
    return f"{value * 100:.0f} %"


def duration(seconds: float) -> str:
    """Format a run time: ``221.0`` -> ``3 min 41 s``; under a minute ``51 s``."""
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s" if whole >= 60 else f"{whole} s"


def mib(value: float) -> str:
    """Format a memory size: ``3728.8`` -> ``3,729 MiB``."""
    return f"{value:,.0f} MiB"


def listed(items: list[str]) -> str:
    """Join words as a sentence does: ``01, 02 and 03``."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _number(value) -> float | None:
    """Return a metric as a float, or None where it is no number (text, null, NaN)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and not math.isnan(value):
        return float(value)
    return None


class Figures:
    """One run's metrics, formatted by key; what is missing is kept in ``missing``."""

    def __init__(self, run: Run, avx2: Run | None = None):
        self.run = run
        self.missing: list[str] = []
        # The same notebook's run on the fp32 path (AVX2 only, size="small"), if collected.
        self.avx2 = Figures(avx2) if avx2 else None

    def get(self, key: str) -> float | None:
        """Return a number the run recorded under ``key``, or None (and note it)."""
        value = _number(self.run.metrics.get(key))
        if value is None:
            self.missing.append(key)
        return value

    def _show(self, key: str, form) -> str:
        value = self.get(key)
        return MISSING if value is None else form(value)

    def pct(self, key: str) -> str:
        """A rate in percent."""
        return self._show(key, percent)

    def num(self, key: str, spec: str = ",.0f") -> str:
        """A number in a format spec (``.3f``, ``,.0f``)."""
        return self._show(key, lambda value: format(value, spec))

    def mib(self, key: str) -> str:
        """A memory size in MiB."""
        return self._show(key, mib)

    def secs(self, key: str) -> str:
        """A time in seconds or minutes and seconds."""
        return self._show(key, duration)

    def times(self, key: str) -> str:
        """A ratio: ``1.2x``."""
        return self._show(key, lambda value: f"{value:.1f}x")

    def yes_no(self, key: str, yes: str, no: str) -> str:
        """One of two words for a flag recorded as 1/0 or true/false."""
        return self._show(key, lambda value: yes if value else no)

    def text(self, key: str) -> str:
        """A value as recorded (text such as ``improved``)."""
        value = self.run.metrics.get(key)
        if value is None:
            self.missing.append(key)
            return MISSING
        return str(value)

    def mean_pct(self, keys: list[str]) -> str:
        """The mean of several rates, in percent (n/a if any is missing)."""
        values = [self.get(key) for key in keys]
        return MISSING if None in values else percent(sum(values) / len(values))

    def change(self, new: str, old: str) -> str:
        """The relative change from ``old`` to ``new``: ``+4.2 %``."""
        a, b = self.get(new), self.get(old)
        return MISSING if a is None or b is None or b == 0 else f"{(a / b - 1) * 100:+.1f} %"
