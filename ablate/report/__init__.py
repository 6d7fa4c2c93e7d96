"""``ablate report``: what each trick contributes, as Markdown (+ PNGs) and one self-contained HTML file.

Two layers:

- :func:`build_report` is pure: runs and histories (DataFrames), the study spec and header facts
  in, a :class:`~ablate.report.render.ReportData` out. No MLflow, no files; notebooks and the
  benchmark use it directly. :func:`~ablate.report.render.render_markdown` and
  :func:`~ablate.report.render.render_html` turn it into text.
- :func:`write_report` reads a study from MLflow (:func:`~ablate.report.collect.collect`), builds,
  renders and writes ``<out>/<name>/report.md`` (+ PNGs) and ``report.html`` atomically.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablate.errors import AblateError
from ablate.report.render import (
    Bullets,
    Figure,
    Paragraph,
    ReportData,
    Section,
    Table,
    render_html,
    render_markdown,
)

__all__ = [
    "FORMATS",
    "TARGET_LEVELS",
    "Analysis",
    "ReportData",
    "analyse",
    "assemble",
    "build_report",
    "draw_figures",
    "parse_formats",
    "render_html",
    "render_markdown",
    "write_report",
]

FORMATS = ("md", "html")
TARGET_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)
"""Candidate convergence targets on val_acc: the report takes the highest that half the runs reach."""
CI = 0.95
N_BOOT = 2000
BEST_TRIALS = 10
APPENDIX_COLLAPSE = 40  # HTML folds the run list beyond this many rows


# --- formatting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricFormat:
    """How a metric reads: accuracies in % (levels) and percentage points (differences)."""

    name: str  # the column (best_val_acc)
    label: str  # in words (best val acc)
    scale: float  # 100 for accuracies
    level_unit: str  # "%" or ""
    diff_unit: str  # "pts" or ""

    def level(self, value: float, digits: int = 2) -> str:
        if value is None or not np.isfinite(value):
            return "—"
        v = value * self.scale
        return f"{v:.{digits}f}" if self.scale != 1 else _g(v)

    def diff(self, value: float, digits: int = 1, sign: bool = True) -> str:
        if value is None or not np.isfinite(value):
            return "—"
        v = value * self.scale
        # ASCII signs: table cells stay numbers when pasted into a spreadsheet.
        if self.scale != 1:
            return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"
        return f"{v:+.3g}" if sign else f"{v:.3g}"


def _g(value: float) -> str:
    return f"{value:.4g}" if np.isfinite(value) else "—"


def _metric_format(column: str, base: str) -> MetricFormat:
    label = base.replace("_", " ")
    if column != base:
        label = f"best {label}"
    if "acc" in base:
        return MetricFormat(column, label, 100.0, "%", "pts")
    return MetricFormat(column, label, 1.0, "", "")


def _p(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    if value < 0.001:
        return "<0.001"
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def _prob(value: float) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.2f}"


def _epochs(value: float) -> str:
    return "never" if value is None or not np.isfinite(value) else f"{value:g}"


def _seconds(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"


def _seed_ranges(seeds: Sequence[int]) -> str:
    values = sorted({int(s) for s in seeds})
    if not values:
        return "—"
    parts, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:  # type: ignore[list-item]
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}" if start == prev else f"{start}–{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)


def _when(epoch_seconds: float | None) -> str:
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


def _check_target(target: Any) -> float | None:
    if target is None:
        return None
    if isinstance(target, bool) or not isinstance(target, (int, float, np.number)) \
            or not (0.0 < float(target) <= 1.0):
        raise AblateError(f"--target: {target!r} is not allowed; expected a val_acc level in (0, 1], "
                          "e.g. 0.95")
    return float(target)


# --- analysis ------------------------------------------------------------------------------------


@dataclass
class Analysis:
    """Every number the report shows, as DataFrames (see :mod:`ablate.analysis`)."""

    runs: pd.DataFrame  # the input, with the value column added when it had to be computed
    fmt: MetricFormat
    metric: str  # the study's per-epoch metric (val_acc)
    maximize: bool
    design: str | None
    is_search: bool
    arms: list[str]  # best first
    reference: str | None
    summary: pd.DataFrame
    comparisons: pd.DataFrame | None = None
    missing_comparisons: list[str] = field(default_factory=list)
    target: float | None = None
    convergence: pd.DataFrame | None = None
    overfitting: pd.DataFrame | None = None
    stability: pd.DataFrame | None = None
    cost: pd.DataFrame | None = None
    test: pd.Series | None = None
    cumulative: pd.DataFrame | None = None
    factorial: pd.DataFrame | None = None
    search: dict[str, Any] | None = None
    grad: pd.DataFrame | None = None
    notes: dict[str, str] = field(default_factory=dict)


def _value_column(runs: pd.DataFrame, history: pd.DataFrame, metric: str, maximize: bool) -> str:
    """The per-run number the study optimised: the best epoch's ``metric`` (``best_val_acc``)."""
    best = f"best_{metric}"
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


def _cumulative_order(spec: Mapping[str, Any]) -> list[str]:
    """The arms of a cumulative design in the order the tricks were added.

    Read from the comparisons' chain (baseline -> +a -> +a+b ...), since ``study.json`` is written
    with sorted keys and its ``arms`` mapping no longer says which came first.
    """
    step = {c.get("without_arm"): c.get("with_arm") for c in spec.get("comparisons") or []}
    starts = [a for a in step if a not in set(step.values())]
    if len(starts) != 1:
        return list(spec.get("arms") or {})
    order = [starts[0]]
    while order[-1] in step and step[order[-1]] not in order:
        order.append(step[order[-1]])
    return order


def _reference(spec: Mapping[str, Any], summary: pd.DataFrame, maximize: bool) -> str | None:
    arms = list(summary.index)
    design = spec.get("design")
    order = [a for a in _cumulative_order(spec) if a in arms] if design == "cumulative" else []
    if design == "cumulative" and order:
        return order[-1]  # the full recipe
    counts = Counter(a for c in spec.get("comparisons") or []
                     for a in (c.get("with_arm"), c.get("without_arm")) if a in arms)
    if counts:
        return counts.most_common(1)[0][0]
    if summary.empty:
        return None
    means = summary["mean"]
    return str(means.idxmax() if maximize else means.idxmin()) if means.notna().any() else arms[0]


def _typed_params(runs: pd.DataFrame,
                  distributions: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Searched params as Optuna values (``params.*`` are strings), and the distributions objects."""
    from optuna.distributions import CategoricalDistribution, json_to_distribution

    dists: dict[str, Any] = {}
    for key, raw in distributions.items():
        try:
            dists[key] = json_to_distribution(raw) if isinstance(raw, str) else raw
        except Exception:  # noqa: BLE001, S112 (a distribution this Optuna cannot read: leave it out)
            continue
    table = pd.DataFrame(index=runs.index)
    for key, dist in dists.items():
        column = next((c for c in (f"params.sampled.{key}", f"params.{key}", key) if c in runs.columns), None)
        if column is None:
            continue
        raw = runs[column]
        if isinstance(dist, CategoricalDistribution):
            lookup = {str(c): c for c in dist.choices}
            table[key] = [lookup.get(str(v), math.nan) if v is not None else math.nan for v in raw]
            table[key] = table[key].astype(object)
        else:
            table[key] = pd.to_numeric(raw, errors="coerce")
    return table, {k: v for k, v in dists.items() if k in table.columns}


def analyse(runs: pd.DataFrame, history: pd.DataFrame, spec: Mapping[str, Any] | None,
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
    from ablate import analysis as A

    spec = dict(spec or {})
    meta = dict(meta or {})
    target = _check_target(target)
    if not isinstance(runs, pd.DataFrame) or runs.empty:
        raise AblateError("runs: no finished runs to report; expected a DataFrame with one row per run")
    if history is None:
        history = pd.DataFrame({"run_id": [], "metric": [], "step": [], "value": []})
    runs = runs.copy()
    metric = spec.get("metric") or "val_acc"
    maximize = (spec.get("direction") or "maximize") != "minimize"
    column = _value_column(runs, history, metric, maximize)
    fmt = _metric_format(column, metric)
    design = spec.get("design")
    is_search = design is None and bool(spec.get("distributions") or spec.get("params")
                                        or meta.get("arm_source") == "trial number")

    summary = A.arm_summary(runs, column, ci=CI, n_boot=n_boot, seed=seed)
    ranked = summary["mean"].sort_values(ascending=not maximize, na_position="last", kind="stable")
    result = Analysis(runs=runs, fmt=fmt, metric=metric, maximize=maximize, design=design,
                      is_search=is_search, arms=[str(a) for a in ranked.index],
                      reference=_reference(spec, summary, maximize), summary=summary)

    # Paired comparisons need one run per (arm, seed); a rerun (a resumed study, a repeated
    # `ablate train`) would otherwise stop the whole report. Keep the latest run of each pair.
    paired = runs[pd.to_numeric(runs[column], errors="coerce").notna()]
    if "end_time" in paired.columns:
        paired = paired.sort_values("end_time", kind="stable")
    deduped = paired.drop_duplicates(["arm", "seed"], keep="last")
    if len(deduped) < len(paired):
        result.notes["duplicates"] = (f"{len(paired) - len(deduped)} run(s) repeat an (arm, seed) pair; "
                                      "paired comparisons use the latest run of each pair")
    paired = deduped

    known = set(summary.index)
    wanted = [A.Comparison(str(c["label"]), str(c["with_arm"]), str(c["without_arm"]))
              for c in spec.get("comparisons") or []]
    usable = [c for c in wanted if c.with_arm in known and c.without_arm in known]
    result.missing_comparisons = [c.label for c in wanted if c not in usable]
    if usable:
        result.comparisons = A.compare(paired, column, usable, ci=CI, n_boot=n_boot, seed=seed)

    has_acc_curve = not history.empty and (history["metric"] == "val_acc").any()
    if has_acc_curve:
        result.target = target if target is not None else choose_target(history)
        if result.target is not None:
            result.convergence = A.convergence(runs, history, result.target)
    if {"train_acc", "val_acc"} <= set(runs.columns):
        result.overfitting = A.overfitting(runs, ci=CI, n_boot=n_boot, seed=seed)
    if "stop_reason" in runs.columns:
        result.stability = A.stability(runs)
    if {"train_time", "epochs_run"} <= set(runs.columns):
        result.cost = A.cost(runs)
    if "test_acc" in runs.columns and column != "test_acc":
        result.test = pd.to_numeric(runs["test_acc"], errors="coerce").groupby(runs["arm"], sort=False).mean()

    if design == "cumulative":
        order = [a for a in _cumulative_order(spec) if a in known]
        steps = [A.Comparison(f"step {i}", order[i], order[i - 1]) for i in range(1, len(order))]
        changes = A.compare(paired, column, steps, ci=CI, n_boot=n_boot, seed=seed) if steps else None
        rows = []
        for i, arm in enumerate(order):
            row = {"step": i, "arm": arm, "mean": summary.loc[arm, "mean"],
                   "change": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_pairs": 0}
            if i and changes is not None:
                hit = changes[changes["label"] == f"step {i}"].iloc[0]
                row.update(change=hit["effect"], ci_low=hit["ci_low"], ci_high=hit["ci_high"],
                           n_pairs=int(hit["n_pairs"]))
            rows.append(row)
        result.cumulative = pd.DataFrame(rows)

    if design == "factorial" and spec.get("factors"):
        factors = {str(k): v for k, v in spec["factors"].items()}
        frame = runs[["seed", column]].copy()
        for label, on in factors.items():
            frame[label] = runs["arm"].map(lambda a, on=on: on.get(a))
        frame = frame.dropna(subset=list(factors))
        try:
            result.factorial = A.factorial_effects(frame.astype({k: bool for k in factors}), column,
                                                   list(factors), ci=CI, n_boot=n_boot, seed=seed)
        except AblateError as exc:
            result.notes["factorial"] = str(exc)

    if is_search:
        result.search = _search_analysis(runs, column, spec, maximize, result.notes)

    if not history.empty:
        from ablate.report.figures import grad_spread

        result.grad = grad_spread(history, runs)
    return result


def _search_analysis(runs: pd.DataFrame, column: str, spec: Mapping[str, Any], maximize: bool,
                     notes: dict[str, str]) -> dict[str, Any]:
    from ablate import analysis as A

    order_key = pd.to_numeric(runs.get("tags.optuna.trial_number", pd.Series(index=runs.index, dtype=float)),
                              errors="coerce")
    if order_key.isna().all() and "start_time" in runs:
        order_key = pd.to_numeric(runs["start_time"], errors="coerce")
    ordered = runs.assign(_o=order_key.to_numpy()).sort_values("_o", kind="stable", na_position="last")
    values = pd.to_numeric(ordered[column], errors="coerce").to_numpy(dtype=np.float64)
    finite = np.where(np.isfinite(values), values, -np.inf if maximize else np.inf)
    observed = np.maximum.accumulate(finite) if maximize else np.minimum.accumulate(finite)
    observed = np.where(np.isfinite(observed), observed, np.nan)
    out: dict[str, Any] = {"expected": A.expected_best(values, maximize=maximize), "observed": observed}
    params, dists = _typed_params(runs, spec.get("distributions") or {})
    out["params"] = list(dists)
    out["typed"] = params
    if dists:
        trials = params.copy()
        trials["__value"] = pd.to_numeric(runs[column], errors="coerce")
        try:
            out["importance"] = A.param_importance(trials, dists, "__value", maximize=maximize)
        except AblateError as exc:
            notes["importance"] = str(exc)
    else:
        notes["importance"] = "no search distributions recorded for this study"
    return out


# --- figures -------------------------------------------------------------------------------------


def draw_figures(result: Analysis, runs: pd.DataFrame, history: pd.DataFrame) -> dict[str, tuple[bytes, str]]:
    """Every figure of the report: ``{name: (png, caption)}``."""
    from ablate.report import figures as F

    figs: dict[str, tuple[bytes, str]] = {}
    curve_metric = "val_acc" if (history["metric"] == "val_acc").any() else result.metric
    if not history.empty and (history["metric"] == curve_metric).any():
        shown = result.arms[:F.MAX_ARMS]
        if result.reference and result.reference not in shown and result.arms:
            shown = shown[:-1] + [result.reference]
        stats = F.curve_stats(history, runs, shown, metric=curve_metric)
        fmt = _metric_format(curve_metric, curve_metric)
        unit = f" ({fmt.level_unit})" if fmt.level_unit else ""
        target = result.target if curve_metric == "val_acc" else None
        caption = (f"{fmt.label} per epoch: mean over seeds, band = min–max over seeds"
                   + (f"; dashed line = convergence target {fmt.level(target, 0)} %" if target else ""))
        hidden = len(result.arms) - len(shown)
        if hidden > 0:
            caption += (f". {hidden} more arm{'s' if hidden != 1 else ''} not drawn "
                        f"(the {F.MAX_ARMS} best are)")
        figs["learning_curves"] = (F.learning_curves(stats, shown, ylabel=f"{fmt.label}{unit}",
                                                     scale=fmt.scale, target=target), caption)

    comp = result.comparisons
    if comp is not None and not comp.empty:
        fmt = result.fmt
        unit = f" ({fmt.diff_unit})" if fmt.diff_unit else ""
        rows = comp.head(40)
        figs["effects"] = (F.effect_chart(rows["label"].tolist(), rows["effect"] * fmt.scale,
                                          rows["ci_low"] * fmt.scale, rows["ci_high"] * fmt.scale,
                                          xlabel=f"effect on {fmt.label}{unit}, with minus without",
                                          higher_is_better=result.maximize),
                           (f"What each trick contributes to {fmt.label}: mean paired difference with its "
                            f"{CI * 100:g} % bootstrap CI; green = CI wholly on the better side of 0, "
                            "red = wholly on the worse side, grey = includes 0"))

    grad = result.grad
    if grad is not None and not grad.empty:
        flagged = grad[grad["flagged"]].sort_values("spread", ascending=False)
        if not flagged.empty:
            arms = [str(a) for a in flagged.index[:F.MAX_GRAD_PANELS]]
            why = ("arms whose largest and smallest layer gradient norms are "
                   f"≥ 10^{F.GRAD_SPREAD_DECADES:g}× apart at some epoch (vanishing or exploding "
                   f"gradients): {len(flagged)} of {len(grad)}")
            if len(flagged) > len(arms):
                why += f", the {len(arms)} most extreme drawn"
        else:
            ref = result.reference if result.reference in grad.index else str(grad.index[0])
            arms = [ref]
            why = (f"no arm's layer gradient norms are ≥ 10^{F.GRAD_SPREAD_DECADES:g}× apart at any epoch; "
                   f"the reference arm is drawn")
        figs["grad_norms"] = (F.grad_norm_curves(history, runs, arms),
                              ("Per-layer gradient norm (log scale, geometric mean over seeds; dark = input "
                               f"side, light = output side). Drawn: {why}"))

    search = result.search
    if search is not None:
        imp = search.get("importance")
        if imp is not None and not imp.empty:
            figs["importance"] = (F.importance_chart(imp),
                                  ("Hyperparameter importance: fANOVA (variance explained) and PED-ANOVA "
                                   "(what it takes to reach the top 10 % of trials)"))
        expected = search["expected"]
        if len(expected) and np.isfinite(expected).any():
            fmt = result.fmt
            unit = f" ({fmt.level_unit})" if fmt.level_unit else ""
            figs["expected_best"] = (F.expected_best_chart(expected, search["observed"],
                                                           ylabel=f"{fmt.label}{unit}", scale=fmt.scale),
                                     ("Expected best value of n trials drawn at random from these trials "
                                      "(Dodge et al. 2019), and the best so far in the order the trials ran"))
    return figs


# --- assembly ------------------------------------------------------------------------------------


def _fmt_ci(fmt: MetricFormat, low: float, high: float, *, diff: bool) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "—"
    f = (lambda v: fmt.diff(v, 2, sign=False)) if diff else (lambda v: fmt.level(v))
    return f"[{f(low)}, {f(high)}]"


def _effect_line(row: pd.Series, result: Analysis) -> list[tuple[str, str]]:
    fmt = result.fmt
    unit = f" {fmt.diff_unit}" if fmt.diff_unit else ""
    ci = (f"[95 % CI {fmt.diff(row['ci_low'], sign=False)}, {fmt.diff(row['ci_high'], sign=False)}]"
          if np.isfinite(row["ci_low"]) else "[95 % CI n/a: fewer than 2 pairs]")
    p_better = row["p_better"] if result.maximize else 1.0 - row["p_better"]
    text = f": {fmt.diff(row['effect'])}{unit} {fmt.label} {ci}, P(better) = {_prob(p_better)}"
    conv = result.convergence
    if conv is not None and result.target is not None:
        a = conv["median_epochs"].get(row["with_arm"], math.nan)
        b = conv["median_epochs"].get(row["without_arm"], math.nan)
        level = f"{result.target * 100:g} %"
        if np.isfinite(a) and np.isfinite(b):
            text += f", reaches {level} in {a:g} vs {b:g} epochs"
        elif np.isfinite(a):
            text += f", reaches {level} in {a:g} epochs (without it, most runs never do)"
        elif np.isfinite(b):
            text += f", most runs never reach {level} (without it: {b:g} epochs)"
    stab = result.stability
    if stab is not None and row["with_arm"] in stab.index and stab.loc[row["with_arm"], "n_diverged"] > 0:
        s = stab.loc[row["with_arm"]]
        text += f", diverged in {int(s['n_diverged'])}/{int(s['n_runs'])} runs"
    return [("b", str(row["label"])), ("", text)]


def _header(runs: pd.DataFrame, spec: Mapping[str, Any], meta: Mapping[str, Any],
            result: Analysis) -> list[tuple[str, str]]:
    def listed(values: Any, empty: str = "not recorded") -> str:
        items = [str(v) for v in values if v is not None and str(v) not in ("", "nan", "None")]
        return ", ".join(dict.fromkeys(items)) or empty

    name = meta.get("name") or spec.get("name") or "runs"
    design = result.design or ("search" if result.is_search else None)
    if design is None:
        source = meta.get("source")
        design_text = (f"runs selected by {source}; arms = params that differ between runs"
                       if source in ("experiment", "tag") else "runs")
    else:
        design_text = design.replace("_", "-")
        if result.comparisons is not None:
            n_tricks, n_arms = len(result.comparisons), len(result.summary)
            design_text += (f" ({n_tricks} trick{'s' if n_tricks != 1 else ''}, "
                            f"{n_arms} arm{'s' if n_arms != 1 else ''})")
        elif result.is_search:
            design_text += f" ({len(result.summary)} trials)"
    datasets = runs["dataset"].dropna().unique() if "dataset" in runs else []
    models = runs["params.model.name"].dropna().unique() if "params.model.name" in runs else \
        (runs["model"].dropna().unique() if "model" in runs else [])
    seeds = runs["seed"].tolist() if "seed" in runs else []
    per_arm = runs.groupby("arm")["seed"].nunique() if "seed" in runs else pd.Series(dtype=int)
    seeds_text = _seed_ranges(seeds)
    if len(per_arm):
        lo, hi = int(per_arm.min()), int(per_arm.max())
        seeds_text += f" ({lo} per arm)" if lo == hi else f" ({lo}–{hi} per arm)"
    counts = dict(meta.get("counts") or {})
    if not counts:
        counts = dict(Counter(runs["state"])) if "state" in runs else {"finished": len(runs)}
    order = ["finished", "diverged", "pruned", "failed", "killed", "running"]
    ranked = sorted(counts, key=lambda k: (order.index(k) if k in order else 99, k))
    runs_text = ", ".join(f"{counts[k]} {k}" for k in ranked)
    total = sum(counts.values())
    runs_text = f"{total} ({runs_text}); pruned, failed and killed runs are left out of the tables"
    dates = f"report {_when(meta.get('collected') or time.time())}"
    if meta.get("started"):
        start, end = _when(meta.get("started")), _when(meta.get("ended"))
        if end[:10] == start[:10]:
            end = end[11:]  # same day: the time is enough
        dates += f"; runs {start} – {end}"
    commits = [c[:12] for c in meta.get("commits") or []]
    header = [
        (_SOURCE_LABEL.get(meta.get("source", "study"), "Study"), str(name)),
        ("Design", design_text),
        ("Dataset", listed(datasets)),
        ("Model", listed(models)),
        ("Metric", f"{result.fmt.label} ({'maximize' if result.maximize else 'minimize'})"
                   + (f"; per-epoch metric {result.metric}" if result.fmt.name != result.metric else "")),
        ("Seeds", seeds_text),
        ("Runs", runs_text),
        ("Date", dates),
        ("Versions", listed(meta.get("versions") or [])),
        ("Hardware", listed(meta.get("hardware") or [])),
        ("Git commit", listed(commits)),
    ]
    where = [f"{meta['tracking_uri']}"] if meta.get("tracking_uri") else []
    if meta.get("experiments"):
        where.append("experiment " + ", ".join(meta["experiments"]))
    if meta.get("parent_run_id"):
        where.append(f"parent run {meta['parent_run_id']}")
    if where:
        header.append(("MLflow", "; ".join(where)))
    if meta.get("tag"):
        header.append(("Tag filter", str(meta["tag"])))
    if meta.get("arm_source") == "differing params":
        header.append(("Arms", ("the params that differ between the selected runs (seed excluded); "
                                "seed from the seed param")))
    return header


_SOURCE_LABEL = {"study": "Study", "experiment": "Experiment", "tag": "Selection"}


def _arm_table(result: Analysis) -> Table:
    fmt = result.fmt
    s = result.summary
    target = f"{result.target * 100:g} %" if result.target is not None else None
    cols = ["arm", "n", f"mean ± std{f' ({fmt.level_unit})' if fmt.level_unit else ''}", "median",
            "95 % CI", "test acc (%)",
            f"epochs to {target} (share reached)" if target else "epochs to target",
            "train − val gap (pts)", "diverged", "mean wall time"]
    rows = []
    for arm in result.arms:
        r = s.loc[arm]
        n = f"{int(r['n'])}" if r["n"] == r["n_runs"] else f"{int(r['n'])} of {int(r['n_runs'])}"
        std = r["std"]
        mean = fmt.level(r["mean"]) + (f" ± {fmt.level(std)}" if np.isfinite(std) else "")
        test = f"{result.test.get(arm, math.nan) * 100:.2f}" if result.test is not None and \
            np.isfinite(result.test.get(arm, math.nan)) else "—"
        conv = "—"
        if result.convergence is not None and arm in result.convergence.index:
            c = result.convergence.loc[arm]
            conv = f"{_epochs(c['median_epochs'])} ({c['share_reached'] * 100:.0f} %)"
        gap = "—"
        if result.overfitting is not None and arm in result.overfitting.index:
            g = result.overfitting.loc[arm, "mean_gap"]
            gap = f"{g * 100:+.2f}" if np.isfinite(g) else "—"
        div = "—"
        if result.stability is not None and arm in result.stability.index:
            st = result.stability.loc[arm]
            div = f"{st['share_diverged'] * 100:.0f} %" + (f" ({int(st['n_diverged'])}/{int(st['n_runs'])})"
                                                   if st["n_diverged"] else "")
        wall = "—"
        if result.cost is not None and arm in result.cost.index:
            wall = _seconds(result.cost.loc[arm, "mean_train_time"])
        marked = arm == result.reference and result.comparisons is not None \
            and arm.lower() not in ("reference", "baseline")
        label = arm + (" (reference)" if marked else "")
        ci = _fmt_ci(fmt, r["ci_low"], r["ci_high"], diff=False)
        rows.append([label, n, mean, fmt.level(r["median"]), ci, test, conv, gap, div, wall])
    return Table(cols, rows, ["l"] + ["r"] * (len(cols) - 1))


def _comparison_table(result: Analysis) -> Table:
    fmt = result.fmt
    unit = f" ({fmt.diff_unit})" if fmt.diff_unit else ""
    cols = ["trick", "with", "without", "n pairs", f"effect{unit}", "95 % CI", "P(better)", "p (Holm)"]
    rows = []
    for _, r in result.comparisons.iterrows():  # type: ignore[union-attr]
        p_better = r["p_better"] if result.maximize else 1.0 - r["p_better"]
        rows.append([str(r["label"]), str(r["with_arm"]), str(r["without_arm"]), f"{int(r['n_pairs'])}",
                     fmt.diff(r["effect"], 2), _fmt_ci(fmt, r["ci_low"], r["ci_high"], diff=True),
                     _prob(p_better), _p(r["p_holm"])])
    return Table(cols, rows, ["l", "l", "l", "r", "r", "r", "r", "r"])


def _search_tables(result: Analysis, runs: pd.DataFrame) -> list[Any]:
    search = result.search or {}
    fmt = result.fmt
    params = search.get("params") or []
    values = pd.to_numeric(runs[fmt.name], errors="coerce")
    ranked = values.sort_values(ascending=not result.maximize, na_position="last", kind="stable")
    order = ranked.index[:BEST_TRIALS]
    value_label = fmt.label + (f" ({fmt.level_unit})" if fmt.level_unit else "")
    cols = ["rank", "trial", value_label, "epochs", *params, "run id"]
    typed = search.get("typed")
    rows = []
    for rank, i in enumerate(order, 1):
        r = runs.loc[i]
        cells = [str(rank), str(r["arm"]), fmt.level(values[i]),
                 _g(float(r["epochs_run"])) if "epochs_run" in runs and pd.notna(r["epochs_run"]) else "—"]
        for p in params:
            v = typed.loc[i, p] if typed is not None and p in typed else None
            cells.append(_g(v) if isinstance(v, (float, np.floating)) else ("—" if v is None else str(v)))
        cells.append(str(r["run_id"]))
        rows.append(cells)
    return [Table(cols, rows, ["r", "l", "r", "r", *(["l"] * len(params)), "l"])]


def assemble(runs: pd.DataFrame, spec: Mapping[str, Any] | None, meta: Mapping[str, Any] | None,
             result: Analysis, figs: Mapping[str, tuple[bytes, str]]) -> ReportData:
    """Lay the analysis and figures out as titled sections (no rendering yet)."""
    spec = dict(spec or {})
    meta = dict(meta or {})
    fmt = result.fmt
    name = str(meta.get("name") or spec.get("name") or "runs")
    sections: list[Section] = []

    def figure(key: str) -> list[Figure]:
        return [Figure(key, figs[key][1], figs[key][0])] if key in figs else []

    if not result.is_search:
        contrib = Section("What each trick contributes")
        if result.comparisons is not None and not result.comparisons.empty:
            better = "higher" if result.maximize else "lower"
            contrib.blocks.append(Paragraph(
                f"Each line: the trick's effect on {fmt.label} (with minus without, paired by seed, "
                f"mean over pairs{'; pts = percentage points' if fmt.diff_unit == 'pts' else ''}), "
                "its 95 % bootstrap CI, and P(better) = the share of seeds where the run with the trick "
                f"is {better}"
                + (f"; epochs = median epochs to reach {result.target * 100:g} % val acc"
                   if result.target is not None else "") + ".", note=True))
            lines = [_effect_line(r, result) for _, r in result.comparisons.iterrows()]
            contrib.blocks.append(Bullets(lines))
            contrib.blocks.append(Paragraph("Ablation table, sorted by effect:", note=True))
            contrib.blocks.append(_comparison_table(result))
            contrib.blocks += figure("effects")
        else:
            contrib.blocks.append(Paragraph(
                "No comparisons are defined for these runs (only ablation studies define them); "
                "the per-arm table below compares the arms side by side.", note=True))
        if "duplicates" in result.notes:
            contrib.blocks.append(Paragraph(result.notes["duplicates"] + ".", note=True))
        if result.missing_comparisons:
            contrib.blocks.append(Paragraph(
                "Not computed (an arm has no finished run): " + ", ".join(result.missing_comparisons),
                note=True))
        sections.append(contrib)

        arms = Section("Per arm")
        arms.blocks.append(Paragraph(
            f"Arms sorted by mean {fmt.label}, best first. n = runs (seeds) with a value; "
            "95 % CI = bootstrap CI of the mean; train − val gap = last-epoch train acc minus val acc; "
            "wall time = mean training time per run.", note=True))
        arms.blocks.append(_arm_table(result))
        sections.append(arms)

        if result.cumulative is not None:
            cum = Section("Cumulative: adding one trick at a time")
            unit = f" ({fmt.diff_unit})" if fmt.diff_unit else ""
            rows = []
            for _, r in result.cumulative.iterrows():
                change = "—" if r["step"] == 0 else fmt.diff(r["change"], 2)
                ci = "—" if r["step"] == 0 else _fmt_ci(fmt, r["ci_low"], r["ci_high"], diff=True)
                rows.append([str(int(r["step"])), str(r["arm"]), fmt.level(r["mean"]), change, ci])
            mean_label = f"mean ({fmt.level_unit})" if fmt.level_unit else "mean"
            cum.blocks.append(Table(["step", "arm", mean_label, f"change vs previous{unit}", "95 % CI"], rows,
                                    ["r", "l", "r", "r", "r"]))
            sections.append(cum)

        if result.design == "factorial":
            fac = Section("Factorial: main effects and interactions")
            if result.factorial is not None:
                unit = f" ({fmt.diff_unit})" if fmt.diff_unit else ""
                fac.blocks.append(Paragraph(
                    "Main effect = mean with the trick minus mean without, over all other combinations; "
                    "interaction a:b = half the difference between a's effect with b on and with b off. "
                    "CIs bootstrap over seeds.", note=True))
                rows = [[str(r["term"]), str(r["kind"]), fmt.diff(r["effect"], 2),
                         _fmt_ci(fmt, r["ci_low"], r["ci_high"], diff=True), str(int(r["n_seeds"]))]
                        for _, r in result.factorial.iterrows()]
                fac.blocks.append(Table(["term", "kind", f"effect{unit}", "95 % CI", "seeds"], rows,
                                        ["l", "l", "r", "r", "r"]))
            else:
                why = result.notes.get("factorial", "no factors")
                fac.blocks.append(Paragraph(f"Not computed: {why}", note=True))
            sections.append(fac)
    else:
        search = Section("Search")
        search.blocks.append(Paragraph(f"The {min(BEST_TRIALS, len(runs))} best of {len(runs)} finished "
                                       f"trials by {fmt.label}:", note=True))
        search.blocks += _search_tables(result, runs)
        search.blocks += figure("importance")
        if "importance" in result.notes:
            why = result.notes["importance"]
            search.blocks.append(Paragraph(f"Importances not computed: {why}", note=True))
        search.blocks += figure("expected_best")
        sections.append(search)

    fig_section = Section("Figures")
    fig_section.blocks += figure("learning_curves") + figure("grad_norms")
    if fig_section.blocks:
        sections.append(fig_section)

    # Appendix: every run, finished or not, so each number can be traced to its MLflow run.
    appendix = Section("Appendix: runs")
    value = pd.to_numeric(runs[fmt.name], errors="coerce").to_numpy(dtype=np.float64)
    states = runs["state"].astype(str).to_numpy() if "state" in runs else np.full(len(runs), "finished")
    seeds = runs["seed"].to_numpy() if "seed" in runs else np.full(len(runs), "")
    names = (runs["run_name"].fillna("").astype(str).to_numpy() if "run_name" in runs
             else np.full(len(runs), ""))
    frame = pd.DataFrame({"run_id": runs["run_id"].astype(str).to_numpy(), "run_name": names,
                          "arm": runs["arm"].astype(str).to_numpy(),
                          "seed": seeds, "state": states,
                          "value": [fmt.level(v) for v in value]})
    excluded = meta.get("excluded_runs") or []
    if excluded:
        extra = pd.DataFrame([{"run_id": str(e.get("run_id")), "run_name": str(e.get("run_name") or ""),
                               "arm": str(e.get("arm") or "—"),
                               "seed": e.get("seed", ""), "state": str(e.get("state")), "value": "—"}
                              for e in excluded])
        frame = pd.concat([frame, extra], ignore_index=True)
    frame = frame.sort_values(["arm", "seed", "run_id"], kind="stable", key=lambda s: s.astype(str))
    seeds_text = frame["seed"].map(lambda s: "—" if s is None or s == "" or (isinstance(s, (int, np.integer))
                                                                             and s < 0) else str(s))
    columns = [frame["run_id"], frame["run_name"], frame["arm"], seeds_text, frame["state"], frame["value"]]
    rows = np.column_stack([c.to_numpy() for c in columns]).tolist()
    label = fmt.label + (f" ({fmt.level_unit})" if fmt.level_unit else "")
    appendix.blocks.append(Table(["MLflow run id", "run name", "arm", "seed", "state", label], rows,
                                 ["l", "l", "l", "r", "l", "r"], collapsed=len(rows) > APPENDIX_COLLAPSE,
                                 summary=f"{len(rows)} runs"))
    sections.append(appendix)

    title = f"Ablation report: {name}" if result.design else (f"Search report: {name}" if result.is_search
                                                              else f"Report: {name}")
    frames = {"arms": result.summary, "comparisons": result.comparisons, "convergence": result.convergence,
              "overfitting": result.overfitting, "stability": result.stability, "cost": result.cost,
              "cumulative": result.cumulative, "factorial": result.factorial, "grad_spread": result.grad}
    if result.search is not None and "importance" in result.search:
        frames["importance"] = result.search["importance"]
    return ReportData(title=title, header=_header(runs, spec, meta, result), sections=sections,
                      frames={k: v for k, v in frames.items() if v is not None})


def build_report(runs: pd.DataFrame, history: pd.DataFrame | None, spec: Mapping[str, Any] | None,
                 meta: Mapping[str, Any] | None = None, *, target: float | None = None,
                 figures: bool = True, n_boot: int = N_BOOT) -> ReportData:
    """The whole report from in-memory tables: analysis, figures and layout (no MLflow, no files).

    Args:
        runs: One row per finished run: ``run_id``, ``arm``, ``seed``, metric columns
            (``best_val_acc``, ``test_acc``, ``val_acc``, ``train_acc``), ``epochs_run``,
            ``train_time``, ``stop_reason``; optional ``state``, ``dataset``, ``params.*``, ``tags.*``.
        history: Long per-epoch history ``run_id, metric, step, value`` (None: no curves).
        spec: The study spec (see :func:`ablate.report.collect.normalise_spec`), or None.
        meta: Header facts (name, counts, versions, hardware, commits, tracking_uri...).
        target: Convergence target on val_acc in (0, 1]; None = the highest of
            :data:`TARGET_LEVELS` that at least half of all runs reach.
        figures: False skips the figures.
        n_boot: Bootstrap resamples.

    Returns:
        The laid-out report; ``timings`` holds seconds for analysis, figures and assembly.
    """
    if history is None:
        history = pd.DataFrame({"run_id": pd.Series([], dtype=object),
                                "metric": pd.Series([], dtype=object),
                                "step": pd.Series([], dtype=np.int64),
                                "value": pd.Series([], dtype=np.float64)})
    t0 = time.perf_counter()
    result = analyse(runs, history, spec, meta, target=target, n_boot=n_boot)
    t1 = time.perf_counter()
    figs = draw_figures(result, result.runs, history) if figures else {}
    t2 = time.perf_counter()
    report = assemble(result.runs, spec, meta, result, figs)
    t3 = time.perf_counter()
    report.timings = {"analysis": t1 - t0, "figures": t2 - t1, "assemble": t3 - t2}
    return report


# --- writing -------------------------------------------------------------------------------------


def _folder_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "report"
    return safe[:120]


def write_report(study: str | None, *, out: str | os.PathLike[str] = "reports",
                 formats: str | Sequence[str] = FORMATS, tracking_uri: str, experiment: str | None = None,
                 tag: str | None = None, target: float | None = None) -> list[Path]:
    """Read a study (or plain runs) from MLflow and write its report.

    Writes ``<out>/<name>/report.md`` with its PNGs beside it and/or ``report.html`` (figures
    inline), where ``name`` is the study, else the experiment, else the tag filter. Everything is
    built in memory, written to a temporary folder inside ``out`` and moved into place only when
    complete: a failure leaves no file behind and an earlier report untouched.

    Args:
        study: Study name; None selects runs by ``experiment`` and/or ``tag``.
        out: Folder holding the reports.
        formats: ``("md", "html")``, a subset, or ``"md,html"``.
        tracking_uri: The MLflow store.
        experiment: MLflow experiment to read from.
        tag: ``KEY=VALUE`` tag filter.
        target: Convergence target on val_acc in (0, 1]; None = automatic.

    Returns:
        The written report files (``report.md`` and/or ``report.html``), in ``formats`` order.

    Raises:
        AblateError: an unknown format, study or experiment, no finished runs, mixed datasets or
            metrics, a bad target.
    """
    from ablate.report.collect import collect

    chosen = parse_formats(formats)
    target = _check_target(target)
    collected = collect(study, tracking_uri=tracking_uri, experiment=experiment, tag=tag)
    meta = dict(collected.meta, parent_run_id=collected.parent_run_id)
    report = build_report(collected.runs, collected.history, collected.spec, meta, target=target)
    files: dict[str, bytes] = {}
    if "md" in chosen:
        text, images = render_markdown(report)
        files["report.md"] = text.encode("utf-8")
        files.update(images)
    if "html" in chosen:
        files["report.html"] = render_html(report).encode("utf-8")

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    final = root / _folder_name(str(meta.get("name") or study or "report"))
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.new-", dir=root))
    try:
        for file, data in files.items():
            (staging / file).write_bytes(data)
        _swap_into_place(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    names = {"md": "report.md", "html": "report.html"}
    return [final / names[f] for f in chosen]


def _swap_into_place(staging: Path, final: Path) -> None:
    """Replace ``final`` by ``staging``: the old report is removed only once the new one is in place."""
    if not final.exists():
        staging.chmod(0o755)  # mkdtemp makes it private; a report folder is as readable as its parent
        os.replace(staging, final)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    backup.rmdir()  # only the unique name is wanted: rename needs it free
    os.replace(final, backup)
    try:
        staging.chmod(0o755)
        os.replace(staging, final)
    except BaseException:
        os.replace(backup, final)  # put the previous report back
        raise
    shutil.rmtree(backup, ignore_errors=True)
