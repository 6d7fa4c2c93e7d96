"""Checks shared by the analysis modules: frames, numeric columns, CI and method arguments.

Every refusal is an :class:`~ablate.errors.AblateError` with a one-line message naming the argument.
The module is private to :mod:`ablate.analysis`; its names carry no underscore so that the other
modules of the package import no private names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ablate.errors import AblateError

METHODS = ("t", "expanded", "percentile")


def require_frame(frame: Any, name: str, columns: Iterable[str]) -> None:
    """Refuse anything but a DataFrame holding every one of ``columns``."""
    if not isinstance(frame, pd.DataFrame):
        raise AblateError(f"{name}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AblateError(f"{name}: missing column(s) {', '.join(map(repr, missing))}; "
                          f"columns are {', '.join(map(str, frame.columns))}")


def numeric(frame: pd.DataFrame, column: str, name: str = "runs") -> pd.Series:
    """The column as float64; strings are refused rather than silently turned into NaN."""
    series = frame[column]
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return series.astype("float64")
    try:
        return pd.to_numeric(series, errors="raise").astype("float64")
    except (TypeError, ValueError):
        raise AblateError(f"{name}: column {column!r} is not numeric; pick a metric column "
                          f"such as best_val_acc") from None


def check_ci(ci: float, n_boot: int) -> None:
    """Refuse a confidence level outside (0, 1) or a resample count below 1."""
    if not (isinstance(ci, (int, float)) and 0.0 < ci < 1.0):
        raise AblateError(f"ci: {ci!r} is not allowed; expected a level in (0, 1) such as 0.95")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise AblateError(f"n_boot: {n_boot!r} is not allowed; expected an integer >= 1")


def check_method(method: str) -> None:
    """Refuse a CI method other than ``"t"``, ``"expanded"`` or ``"percentile"``."""
    if method not in METHODS:
        raise AblateError(f"method: {method!r} is not allowed; expected one of: {', '.join(METHODS)}")


def one_line(value: Any) -> str:
    """The value's text on one line, for error messages."""
    return " ".join(str(value).split())
