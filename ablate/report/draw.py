"""Which figures a report gets, and their captions; :mod:`ablate.report.figures` draws them.

Each figure is chosen by what the analysis holds (a curve per epoch, comparisons, gradient norms,
a search's importances), so a design that computes something gets its figure without a branch here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablate.report import figures as F
from ablate.report.format import metric_format
from ablate.report.model import CI, Analysis

__all__ = ["draw_figures"]

Figures = dict[str, tuple[bytes, str]]


def _learning_curves(result: Analysis, runs: pd.DataFrame, history: pd.DataFrame) -> Figures:
    curve_metric = "val_acc" if (history["metric"] == "val_acc").any() else result.metric
    if history.empty or not (history["metric"] == curve_metric).any():
        return {}
    shown = result.arms[:F.MAX_ARMS]
    if result.reference and result.reference not in shown and result.arms:
        shown = [*shown[:-1], result.reference]
    stats = F.curve_stats(history, runs, shown, metric=curve_metric)
    fmt = metric_format(curve_metric, curve_metric)
    target = result.target if curve_metric == "val_acc" else None
    caption = (f"{fmt.label} per epoch: mean over seeds, band = min–max over seeds"
               + (f"; dashed line = convergence target {fmt.level(target, 0)} %" if target else ""))
    hidden = len(result.arms) - len(shown)
    if hidden > 0:
        caption += (f". {hidden} more arm{'s' if hidden != 1 else ''} not drawn "
                    f"(the {F.MAX_ARMS} best are)")
    png = F.learning_curves(stats, shown, ylabel=f"{fmt.label}{fmt.unit()}", scale=fmt.scale, target=target)
    return {"learning_curves": (png, caption)}


def _effects(result: Analysis) -> Figures:
    comp = result.comparisons
    if comp is None or comp.empty:
        return {}
    fmt = result.fmt
    rows = comp.head(40)
    png = F.effect_chart(rows["label"].tolist(), rows["effect"] * fmt.scale,
                         rows["ci_low_adj"] * fmt.scale, rows["ci_high_adj"] * fmt.scale,
                         verdicts=rows["verdict"].tolist(),
                         xlabel=f"effect on {fmt.label}{fmt.unit(diff=True)}, with minus without")
    return {"effects": (png, (f"What each trick contributes to {fmt.label}: mean paired difference with its "
                              f"{CI * 100:g} % simultaneous CI over the tricks (it excludes 0 exactly when "
                              "p (Holm) < 0.05; an arrow = unbounded); colour = the verdict: green helps, "
                              "red hurts, grey no effect, amber unresolved"))}


def _grad_norms(result: Analysis, runs: pd.DataFrame, history: pd.DataFrame) -> Figures:
    grad = result.grad
    if grad is None or grad.empty:
        return {}
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
        arms = [str(ref)]
        why = (f"no arm's layer gradient norms are ≥ 10^{F.GRAD_SPREAD_DECADES:g}× apart at any epoch; "
               f"the reference arm is drawn")
    return {"grad_norms": (F.grad_norm_curves(history, runs, arms),
                           ("Per-layer gradient norm (log scale, geometric mean over seeds; dark = input "
                            f"side, light = output side). Drawn: {why}"))}


def _search(result: Analysis) -> Figures:
    search = result.search
    if search is None:
        return {}
    figs: Figures = {}
    imp = search.get("importance")
    if imp is not None and not imp.empty:
        figs["importance"] = (F.importance_chart(imp),
                              ("Hyperparameter importance: fANOVA (variance explained) and PED-ANOVA "
                               "(what it takes to reach the top 10 % of trials)"))
    expected = search["expected"]
    if len(expected) and np.isfinite(expected).any():
        fmt = result.fmt
        figs["expected_best"] = (F.expected_best_chart(expected, search["observed"],
                                                       ylabel=f"{fmt.label}{fmt.unit()}", scale=fmt.scale),
                                 ("Expected best value of n trials drawn at random from these trials "
                                  "(Dodge et al. 2019), and the best so far in the order the trials ran"))
    return figs


def draw_figures(result: Analysis, runs: pd.DataFrame, history: pd.DataFrame) -> Figures:
    """Every figure of the report: ``{name: (png, caption)}``."""
    return {**_learning_curves(result, runs, history), **_effects(result),
            **_grad_norms(result, runs, history), **_search(result)}
