"""Per-arm tables of a run table: a metric's distribution, the generalisation gap, divergences, cost.

Also :func:`check_single`, the guard that a table of runs holds one dataset (or one of any column).
Tables are indexed by ``arm`` in order of first appearance in ``runs``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ablate.analysis._checks import check_ci, check_method, numeric, one_line, require_frame
from ablate.analysis.intervals import ci_ragged
from ablate.errors import AblateError


def arm_summary(runs: pd.DataFrame, metric: str, *, ci: float = 0.95, n_boot: int = 2000,
                seed: int = 0, method: str = "expanded") -> pd.DataFrame:
    """Per-arm distribution of a metric with a bootstrap CI of its mean.

    Args:
        runs: One row per run with ``arm`` and the metric column.
        metric: Numeric column to summarise; NaN (diverged / unknown) runs are left out of
            every statistic but counted in ``n_runs``.
        ci: Confidence level of the interval.
        n_boot: Bootstrap resamples.
        seed: Resampling seed (each arm's interval equals ``bootstrap_ci`` of its values).
        method: ``"expanded"`` or ``"percentile"``, see :func:`bootstrap_ci`.

    Returns:
        Indexed by ``arm`` (order of first appearance), columns ``n`` (non-NaN values),
        ``n_runs``, ``mean``, ``std`` (ddof=1), ``median``, ``ci_low``, ``ci_high``.
    """
    require_frame(runs, "runs", ["arm", metric])
    check_ci(ci, n_boot)
    check_method(method)
    values = numeric(runs, metric)
    grouped = values.groupby(runs["arm"], sort=False)
    out = pd.DataFrame({
        "n": grouped.count(),
        "n_runs": grouped.size(),
        "mean": grouped.mean(),
        "std": grouped.std(ddof=1),
        "median": grouped.median(),
    })
    out.index.name = "arm"
    kept = values.notna()
    samples = {arm: v.to_numpy() for arm, v in values[kept].groupby(runs["arm"][kept], sort=False)}
    groups = [samples.get(arm, np.empty(0)) for arm in out.index]
    out["ci_low"], out["ci_high"] = ci_ragged(groups, ci=ci, n_boot=n_boot, seed=seed, method=method)
    return out


def overfitting(runs: pd.DataFrame, *, ci: float = 0.95, n_boot: int = 2000, seed: int = 0,
                method: str = "expanded") -> pd.DataFrame:
    """Per-arm generalisation gap: ``train_acc - val_acc`` at the last epoch.

    Args:
        runs: One row per run with ``arm``, ``train_acc`` and ``val_acc``.
        ci: Confidence level of the interval.
        n_boot: Bootstrap resamples.
        seed: Resampling seed.
        method: ``"expanded"`` or ``"percentile"``, see :func:`bootstrap_ci`.

    Returns:
        Indexed by ``arm``, columns ``n`` (runs with both accuracies), ``mean_gap``,
        ``ci_low``, ``ci_high`` (bootstrap CI of the mean gap). A positive gap means the
        model fits its training data better than held-out data.
    """
    require_frame(runs, "runs", ["arm", "train_acc", "val_acc"])
    gap = numeric(runs, "train_acc") - numeric(runs, "val_acc")
    table = pd.DataFrame({"arm": runs["arm"].to_numpy(), "gap": gap.to_numpy()})
    summary = arm_summary(table, "gap", ci=ci, n_boot=n_boot, seed=seed, method=method)
    return summary[["n", "mean", "ci_low", "ci_high"]].rename(columns={"mean": "mean_gap"})


def stability(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-arm divergence counts.

    Args:
        runs: One row per run with ``arm`` and ``stop_reason``.

    Returns:
        Indexed by ``arm``, columns ``n_runs``, ``n_diverged`` (``stop_reason ==
        "diverged"``), ``share_diverged``.
    """
    require_frame(runs, "runs", ["arm", "stop_reason"])
    diverged = (runs["stop_reason"] == "diverged").astype("int64")
    grouped = diverged.groupby(runs["arm"], sort=False)
    out = pd.DataFrame({"n_runs": grouped.size(), "n_diverged": grouped.sum()})
    out["share_diverged"] = out["n_diverged"] / out["n_runs"]
    out.index.name = "arm"
    return out


def cost(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-arm compute cost.

    Args:
        runs: One row per run with ``arm``, ``train_time`` (seconds) and ``epochs_run``.

    Returns:
        Indexed by ``arm``, columns ``n_runs``, ``mean_train_time``, ``total_train_time``
        (seconds; NaN times are skipped) and ``mean_epochs_run``.
    """
    require_frame(runs, "runs", ["arm", "train_time", "epochs_run"])
    time = numeric(runs, "train_time").groupby(runs["arm"], sort=False)
    epochs = numeric(runs, "epochs_run").groupby(runs["arm"], sort=False)
    out = pd.DataFrame({
        "n_runs": time.size(),
        "mean_train_time": time.mean(),
        "total_train_time": time.sum(),
        "mean_epochs_run": epochs.mean(),
    })
    out.index.name = "arm"
    return out


def check_single(runs: pd.DataFrame, column: str) -> Any:
    """The one value a column holds, refusing tables that mix several (datasets, metrics).

    Args:
        runs: Any table of runs.
        column: Column that must be constant (``"dataset"``).

    Returns:
        The single non-null value, or None when the column is all null.

    Raises:
        AblateError: The column is absent or holds more than one distinct non-null value.
    """
    require_frame(runs, "runs", [column])
    values = pd.unique(runs[column].dropna())
    if len(values) > 1:
        shown = sorted(one_line(v) for v in values)
        listed = ", ".join(shown[:6]) + (f", ... ({len(shown)} in all)" if len(shown) > 6 else "")
        raise AblateError(f"runs: mixed {column} ({listed}) in one table; select runs of one {column}")
    if len(values) == 0:
        return None
    value = values[0]
    return value.item() if isinstance(value, np.generic) else value
