"""Learning curves: the epoch at which each run reaches a target, and each arm's speed to reach it.

``history`` is long format, one row per (run, metric, epoch): ``run_id``, ``metric``, ``step``
(1-based epoch), ``value``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ablate.analysis._checks import numeric, require_frame
from ablate.errors import AblateError


def epochs_to_target(history: pd.DataFrame, target: float, *, metric: str = "val_acc",
                     maximize: bool = True) -> pd.Series:
    """First epoch at which each run's curve reaches a target.

    Args:
        history: Long table with ``run_id``, ``metric``, ``step``, ``value``.
        target: Threshold on the metric.
        metric: Which curve (``"val_acc"``).
        maximize: True: reached when value >= target; False (losses): value <= target.

    Returns:
        Float series indexed by ``run_id`` (every run with that metric in ``history``, in order
        of first appearance), named ``epochs_to_target``: the smallest ``step`` reaching the
        target, NaN if never.

    Raises:
        AblateError: ``history`` has no row for ``metric`` (a misspelt name would otherwise
            read as "no run ever converged").
    """
    require_frame(history, "history", ["run_id", "metric", "step", "value"])
    if isinstance(target, bool) or not isinstance(target, (int, float, np.number)) \
            or not math.isfinite(target):
        raise AblateError(f"target: {target!r} is not allowed; expected a finite number")
    curve = history[history["metric"] == metric]
    if curve.empty:
        known = sorted(map(str, pd.unique(history["metric"].dropna())))
        raise AblateError(f"metric: no {metric!r} rows in history; metrics are "
                          f"{', '.join(known[:8]) + (', ...' if len(known) > 8 else '') or 'none'}")
    values = numeric(curve, "value", "history")
    hit = values >= target if maximize else values <= target
    first = numeric(curve, "step", "history")[hit].groupby(curve["run_id"][hit]).min()
    out = first.reindex(pd.unique(curve["run_id"])).astype("float64")
    out.index.name = "run_id"
    out.name = "epochs_to_target"
    return out


def convergence(runs: pd.DataFrame, history: pd.DataFrame, target: float, *,
                metric: str = "val_acc", maximize: bool = True) -> pd.DataFrame:
    """Per-arm speed of reaching a target on a learning curve.

    A run without a curve for ``metric`` in ``history`` counts as not reaching the target.

    Args:
        runs: One row per run with ``run_id`` and ``arm``.
        history: Long table, see :func:`epochs_to_target`.
        target: Threshold on the metric.
        metric: Which curve.
        maximize: See :func:`epochs_to_target`.

    Returns:
        Indexed by ``arm``, columns ``n_runs``, ``n_reached``, ``share_reached``,
        ``median_epochs`` and ``mean_epochs``. ``median_epochs`` is over *all* runs of the arm
        with never-reaching runs counted as infinitely slow (NaN when half or more never reach
        it), so diverged runs cannot make an arm look fast; ``mean_epochs`` is the mean over
        the runs that reached the target only.
    """
    require_frame(runs, "runs", ["run_id", "arm"])
    epochs = epochs_to_target(history, target, metric=metric, maximize=maximize)
    per_run = pd.Series(epochs.reindex(runs["run_id"]).to_numpy(), index=runs.index)
    grouped = per_run.groupby(runs["arm"], sort=False)
    # A never-reached run is censored at +inf: it still counts in the median's denominator.
    median = per_run.fillna(np.inf).groupby(runs["arm"], sort=False).median()
    out = pd.DataFrame({"n_runs": grouped.size(), "n_reached": grouped.count()})
    out["share_reached"] = out["n_reached"] / out["n_runs"]
    out["median_epochs"] = median.replace([np.inf, -np.inf], np.nan)
    out["mean_epochs"] = grouped.mean()
    out.index.name = "arm"
    return out
