"""Every number the report shows, computed as a list of named steps over the runs and histories.

:func:`analyse` prepares the inputs (the value column, its format, the study's design), then runs
:data:`STEPS` in order and finally the design's own step
(:attr:`~ablate.report.model.ReportDesign.step`). A step fills its part of the
:class:`~ablate.report.model.Analysis`; a part that cannot be computed is left None or becomes a
note, never an error, so one missing metric does not stop the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ablate import analysis as A
from ablate import records
from ablate.errors import AblateError
from ablate.report.designs import SEARCH, choose_design, judge, reference_arm
from ablate.report.figures import grad_spread
from ablate.report.format import check_target, metric_format
from ablate.report.model import CI, N_BOOT, Analysis, Inputs, Step

__all__ = ["STEPS", "TARGET_LEVELS", "Analysis", "analyse", "choose_target", "resolve_settings",
           "value_column"]

TARGET_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)
"""Candidate convergence targets on val_acc: the report takes the highest that half the runs reach."""


def value_column(runs: pd.DataFrame, history: pd.DataFrame, metric: str, maximize: bool) -> str:
    """The per-run number the study optimised: the best epoch's ``metric`` (``best_val_acc``).

    Added to ``runs`` from ``history`` when the runs do not carry it.

    Raises:
        AblateError: ``metric`` is neither in the history nor a column of ``runs``.
    """
    best = records.best_metric(metric)
    if best in runs.columns:
        return best
    if not history.empty and (history["metric"] == metric).any():
        curve = history[history["metric"] == metric]
        finite = curve[np.isfinite(curve["value"].to_numpy(dtype=np.float64))]
        grouped = finite.groupby("run_id")["value"]
        per_run = grouped.max() if maximize else grouped.min()
        runs[best] = runs["run_id"].map(per_run).astype("float64")
        return best
    if metric in runs.columns:
        return metric
    raise AblateError(f"metric: {metric!r} is not recorded for these runs; expected a per-epoch metric "
                      "such as val_acc or val_loss, or a column of runs")


def choose_target(history: pd.DataFrame, metric: str = "val_acc") -> float | None:
    """The highest of :data:`TARGET_LEVELS` that at least half of all runs reach on ``metric``."""
    curve = history[history["metric"] == metric]
    if curve.empty:
        return None
    best = curve.groupby("run_id")["value"].max().to_numpy(dtype=np.float64)
    best = np.where(np.isfinite(best), best, -np.inf)
    reached = [t for t in TARGET_LEVELS if np.mean(best >= t) >= 0.5]
    return max(reached) if reached else None


def resolve_settings(spec: Mapping[str, Any], metric: str) -> tuple[float | None, float]:
    """``(margin, alpha)`` of the verdicts: the study's ``resolve`` block.

    Where it is silent (an older study, plain runs): an accuracy's 0.5 points
    (:func:`ablate.analysis.default_margin`; None for another metric) and alpha 0.05.
    """
    resolve = spec.get("resolve") or {}
    margin = resolve.get("margin")
    confidence = resolve.get("confidence")
    return (A.default_margin(metric) if margin is None else float(margin),
            1.0 - (CI if confidence is None else float(confidence)))


# --- the steps ---------------------------------------------------------------------------------------


def pair_runs(inputs: Inputs, result: Analysis) -> None:
    """One run per (arm, seed) for the paired comparisons: the latest, with a note when any repeat.

    A rerun (a resumed study, a repeated ``ablate train``) would otherwise stop the whole report.
    """
    column = inputs.column
    paired = inputs.runs[pd.to_numeric(inputs.runs[column], errors="coerce").notna()]
    if "end_time" in paired.columns:
        paired = paired.sort_values("end_time", kind="stable")
    deduped = paired.drop_duplicates(["arm", "seed"], keep="last")
    if len(deduped) < len(paired):
        result.notes["duplicates"] = (f"{len(paired) - len(deduped)} run(s) repeat an (arm, seed) pair; "
                                      "paired comparisons use the latest run of each pair")
    inputs.paired = deduped


def comparisons(inputs: Inputs, result: Analysis) -> None:
    """Each comparison of the spec whose two arms have runs; the others are listed as missing."""
    known = set(result.summary.index)
    wanted = [A.Comparison(str(c["label"]), str(c["with_arm"]), str(c["without_arm"]))
              for c in inputs.spec.get("comparisons") or []]
    usable = [c for c in wanted if c.with_arm in known and c.without_arm in known]
    result.missing_comparisons = [c.label for c in wanted if c not in usable]
    if usable:
        result.comparisons = judge(result, A.compare(inputs.paired, inputs.column, usable, ci=CI,
                                                     n_boot=inputs.n_boot, seed=inputs.seed))


def convergence(inputs: Inputs, result: Analysis) -> None:
    """Epochs to reach the target on val_acc (the given one, else :func:`choose_target`)."""
    history = inputs.history
    if history.empty or not (history["metric"] == "val_acc").any():
        return
    result.target = inputs.target if inputs.target is not None else choose_target(history)
    if result.target is not None:
        result.convergence = A.convergence(inputs.runs, history, result.target)


def overfitting(inputs: Inputs, result: Analysis) -> None:
    if {"train_acc", "val_acc"} <= set(inputs.runs.columns):
        result.overfitting = A.overfitting(inputs.runs, ci=CI, n_boot=inputs.n_boot, seed=inputs.seed)


def stability(inputs: Inputs, result: Analysis) -> None:
    if records.TAG_STOP_REASON in inputs.runs.columns:
        result.stability = A.stability(inputs.runs)


def cost(inputs: Inputs, result: Analysis) -> None:
    if {"train_time", "epochs_run"} <= set(inputs.runs.columns):
        result.cost = A.cost(inputs.runs)


def mean_test_accuracy(inputs: Inputs, result: Analysis) -> None:
    """Mean test accuracy per arm, unless the study optimised it."""
    runs = inputs.runs
    if "test_acc" in runs.columns and inputs.column != "test_acc":
        result.test = pd.to_numeric(runs["test_acc"], errors="coerce").groupby(runs["arm"], sort=False).mean()


def design_step(inputs: Inputs, result: Analysis) -> None:
    """The design's own analysis (cumulative steps, factorial effects, a search's importances)."""
    if result.kind.step is not None:
        result.kind.step(inputs, result)


def gradients(inputs: Inputs, result: Analysis) -> None:
    """Which arms' per-layer gradient norms spread over orders of magnitude."""
    if not inputs.history.empty:
        result.grad = grad_spread(inputs.history, inputs.runs)


STEPS: tuple[tuple[str, Step], ...] = (
    ("pair runs", pair_runs),
    ("comparisons", comparisons),
    ("convergence", convergence),
    ("overfitting", overfitting),
    ("stability", stability),
    ("cost", cost),
    ("test accuracy", mean_test_accuracy),
    ("design", design_step),
    ("gradients", gradients),
)
"""The analysis, in order, after the per-arm summary."""


# --- the whole analysis -----------------------------------------------------------------------------


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame({"run_id": [], "metric": [], "step": [], "value": []})


def analyse(runs: pd.DataFrame, history: pd.DataFrame | None, spec: Mapping[str, Any] | None,
            meta: Mapping[str, Any] | None = None, *, target: float | None = None,
            n_boot: int = N_BOOT, seed: int = 0) -> Analysis:
    """Run every analysis the report needs; optional parts that cannot be computed become notes.

    Args:
        runs: One row per finished run (see :mod:`ablate.analysis`).
        history: Long per-epoch history (``run_id, metric, step, value``).
        spec: The study spec (``metric``, ``direction``, ``design``, ``arms``, ``comparisons``,
            ``factors``, ``distributions``...); None for plain runs.
        meta: Header facts (only ``arm_source`` is read here).
        target: Convergence target on val_acc; None = :func:`choose_target`.
        n_boot: Bootstrap resamples for every CI.
        seed: Bootstrap seed.

    Raises:
        AblateError: missing columns, an unknown metric or a bad target.
    """
    spec = dict(spec or {})
    meta = dict(meta or {})
    target = check_target(target)
    if not isinstance(runs, pd.DataFrame) or runs.empty:
        raise AblateError("runs: no finished runs to report; expected a DataFrame with one row per run")
    history = _empty_history() if history is None else history
    runs = runs.copy()
    metric = spec.get("metric") or "val_acc"
    maximize = (spec.get("direction") or "maximize") != "minimize"
    column = value_column(runs, history, metric, maximize)
    kind = choose_design(spec, meta)

    summary = A.arm_summary(runs, column, ci=CI, n_boot=n_boot, seed=seed)
    ranked = summary["mean"].sort_values(ascending=not maximize, na_position="last", kind="stable")
    result = Analysis(runs=runs, fmt=metric_format(column, metric), metric=metric, maximize=maximize,
                      design=spec.get("design"), is_search=kind is SEARCH,
                      arms=[str(a) for a in ranked.index],
                      reference=reference_arm(kind, spec, summary, maximize), summary=summary, kind=kind)
    result.margin, result.alpha = resolve_settings(spec, metric)
    result.adaptive = dict(spec["adaptive"]) if spec.get("adaptive") else None
    inputs = Inputs(runs=runs, history=history, spec=spec, meta=meta, column=column, target=target,
                    n_boot=n_boot, seed=seed)
    for _name, step in STEPS:
        step(inputs, result)
    return result
