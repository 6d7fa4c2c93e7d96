"""How numbers read in the report: metric levels and differences, p-values, seconds, seeds, dates.

Also the two checks of the report's own options (``--format``, ``--target``), so the CLI and
:func:`~ablate.report.write.write_report` refuse a bad value before any MLflow read.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ablate.analysis.verdicts import SEEDS_CAP
from ablate.errors import AblateError

__all__ = [
    "FORMATS",
    "VERDICT_COLOURS",
    "MetricFormat",
    "check_target",
    "epochs",
    "fmt_ci",
    "g",
    "metric_format",
    "p_value",
    "parse_formats",
    "prob",
    "seconds",
    "seed_ranges",
    "verdict_class",
    "verdict_text",
    "when",
]

FORMATS = ("md", "html")
VERDICT_COLOURS = {"helps": "#2a7d46", "hurts": "#b8412c", "no effect": "#6b6b6b", "unresolved": "#b7791f"}
"""The one colour of each verdict, in the effect chart and the HTML tables: green, red, grey, amber."""


def _missing(value: float | None) -> bool:
    return value is None or not np.isfinite(value)


@dataclass(frozen=True)
class MetricFormat:
    """How a metric reads: accuracies in % (levels) and percentage points (differences)."""

    name: str  # the column (best_val_acc)
    label: str  # in words (best val acc)
    scale: float  # 100 for accuracies
    level_unit: str  # "%" or ""
    diff_unit: str  # "pts" or ""

    def level(self, value: float | None, digits: int = 2) -> str:
        if value is None or _missing(value):
            return "—"
        v = value * self.scale
        return f"{v:.{digits}f}" if self.scale != 1 else g(v)

    def diff(self, value: float | None, digits: int = 1, sign: bool = True) -> str:
        if value is None or _missing(value):
            return "—"
        v = value * self.scale
        # ASCII signs: table cells stay numbers when pasted into a spreadsheet.
        if self.scale != 1:
            return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"
        return f"{v:+.3g}" if sign else f"{v:.3g}"

    def unit(self, *, diff: bool = False, space: bool = False) -> str:
        """`` (%)`` / `` (pts)`` after a label, ``" pts"`` after a number (``space``); "" when unitless."""
        text = self.diff_unit if diff else self.level_unit
        if not text:
            return ""
        return f" {text}" if space else f" ({text})"


def metric_format(column: str, base: str) -> MetricFormat:
    """The format of ``column`` (``best_val_acc``), the best value of per-epoch metric ``base``."""
    label = base.replace("_", " ")
    if column != base:
        label = f"best {label}"
    if "acc" in base:
        return MetricFormat(column, label, 100.0, "%", "pts")
    return MetricFormat(column, label, 1.0, "", "")


def g(value: float | np.floating[Any]) -> str:
    """Four significant digits, or a dash."""
    return f"{value:.4g}" if np.isfinite(value) else "—"


def p_value(value: float | None) -> str:
    if value is None or _missing(value):
        return "—"
    if value < 0.001:
        return "<0.001"
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def prob(value: float | None) -> str:
    return "—" if value is None or _missing(value) else f"{value:.2f}"


def epochs(value: float | None) -> str:
    return "never" if value is None or _missing(value) else f"{value:g}"


def seconds(value: float | None) -> str:
    if value is None or _missing(value):
        return "—"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"


def fmt_ci(fmt: MetricFormat, low: float, high: float, *, diff: bool) -> str:
    """``[low, high]`` as levels, or as unsigned differences (``diff``); a dash when unknown (NaN).

    An infinite bound reads ``-∞``/``+∞`` and a bound within a few ulps of 0 (a simultaneous
    interval's open bound at 0, :data:`ablate.analysis.paired.OPEN_ZERO`) reads ``0``; both get a
    round bracket: ``(0, +∞)`` = "the effect is positive".
    """
    if np.isnan(low) or np.isnan(high):
        return "—"

    def bound(value: float) -> tuple[str, bool]:
        if np.isinf(value):
            return ("+∞" if value > 0 else "-∞"), True
        if value != 0.0 and abs(value) < 1e-300:
            return "0", True
        return (fmt.diff(value, 2, sign=False) if diff else fmt.level(value)), False

    (lo, lo_open), (hi, hi_open) = bound(low), bound(high)
    return f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def verdict_text(verdict: Any, seeds_needed: Any = None) -> str:
    """``helps``, ``no effect``, ``unresolved (≈ 6 more seeds per arm)`` (:func:`ablate.analysis.verdicts`).

    Unresolved with fewer than 2 pairs (no spread to extrapolate): ``unresolved (fewer than 2
    pairs)``; past the estimate's cap: ``unresolved (> 100 more seeds per arm)``.
    """
    if not isinstance(verdict, str):
        return "—"
    if verdict != "unresolved":
        return verdict
    if seeds_needed is None or np.isnan(seeds_needed):
        return "unresolved (fewer than 2 pairs)"
    if np.isinf(seeds_needed):
        return f"unresolved (> {SEEDS_CAP} more seeds per arm)"
    n = int(seeds_needed)
    return f"unresolved (≈ {n} more seed{'s' if n != 1 else ''} per arm)"


def verdict_class(verdict: Any) -> str:
    """The HTML class of a row with this verdict (``v-helps``, ``v-no-effect``); "" for none."""
    return f"v-{verdict.replace(' ', '-')}" if isinstance(verdict, str) else ""


def seed_ranges(seeds: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"`` (with an en dash)."""
    values = sorted({int(s) for s in seeds})
    if not values:
        return "—"
    parts: list[str] = []
    start = prev = values[0]
    for v in values[1:]:
        if v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}" if start == prev else f"{start}–{prev}")
        start = prev = v
    parts.append(f"{start}" if start == prev else f"{start}–{prev}")
    return ", ".join(parts)


def when(epoch_seconds: float | None) -> str:
    if epoch_seconds is None:
        return "—"
    return _dt.datetime.fromtimestamp(epoch_seconds, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"md,html"`` or ``("md", "html")`` -> ``("md", "html")``.

    Raises:
        AblateError: an unknown or empty format.
    """
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    chosen = [str(f).strip().lower() for f in items if str(f).strip()]
    bad = [f for f in chosen if f not in FORMATS]
    if bad or not chosen:
        shown = ",".join(map(str, items)) if not isinstance(formats, str) else formats
        raise AblateError(f"--format: {shown!r} is not allowed; expected md, html or md,html")
    return tuple(dict.fromkeys(chosen))


def check_target(target: Any) -> float | None:
    """A convergence target on val_acc in (0, 1], or None (automatic).

    Raises:
        AblateError: anything else (``95`` for 95 % included).
    """
    if target is None:
        return None
    if isinstance(target, bool) or not isinstance(target, (int, float, np.number)) \
            or not (0.0 < float(target) <= 1.0):
        raise AblateError(f"--target: {target!r} is not allowed; expected a val_acc level in (0, 1], "
                          "e.g. 0.95")
    return float(target)
