"""The report's figures: matplotlib (Agg, no pyplot state), returned as PNG bytes.

Every figure shares one small style (9 pt text, light grid, no top/right spines, 110 dpi) so the
report reads as one document. Aggregation is vectorised (one groupby per figure) and the number of
lines drawn is capped, so 10,000 runs plot as fast as 100.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ablate.report.format import VERDICT_COLOURS

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn, not at import time
    from matplotlib.typing import RcKeyType

__all__ = [
    "DPI",
    "GRAD_SPREAD_DECADES",
    "MAX_ARMS",
    "MAX_LAYERS",
    "curve_stats",
    "effect_chart",
    "expected_best_chart",
    "grad_norm_curves",
    "grad_spread",
    "importance_chart",
    "layer_key",
    "learning_curves",
    "natural_key",
]

DPI = 110
MAX_ARMS = 12  # lines on one learning-curve plot before it stops being readable
MAX_LAYERS = 12  # lines on one gradient-norm panel
MAX_GRAD_PANELS = 4
GRAD_SPREAD_DECADES = 2.0
"""An arm's gradients are flagged when, at some epoch, its largest and smallest per-layer gradient
norm (each the geometric mean over seeds) are 10**2 = 100x apart or more: the signature of vanishing
(early layers starved) or exploding (late or early layers blowing up) gradients. Using the spread
between all layers rather than a first/last ratio needs no knowledge of which logged layer comes
first, which names alone do not tell (``stem``, ``head``, ``blocks.10``)."""

_STYLE: dict[RcKeyType, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.6,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
}
_NEUTRAL = VERDICT_COLOURS["no effect"]


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``layers.2`` before ``layers.10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def layer_key(name: str) -> tuple[int, list[Any]]:
    """Input-to-output order of ablate's layer names: ``stem``, ``blocks.<i>`` (numerically), ``head``."""
    bare = name.split("/", 1)[1] if name.startswith(("grad_norm/", "act_std/")) else name
    rank = 0 if bare.startswith("stem") else 2 if bare.startswith("head") else 1
    return rank, natural_key(bare)


def _short(text: str, width: int = 42) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


@contextmanager
def _figure(width: float, height: float, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(**subplots)
        yield fig, axes


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    # No "Software" stamp: the same data gives byte-identical PNGs across matplotlib patch releases.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _integer_x(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _colours(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# --- learning curves -----------------------------------------------------------------------------


def curve_stats(history: pd.DataFrame, runs: pd.DataFrame, arms: Sequence[str], *,
                metric: str = "val_acc") -> pd.DataFrame:
    """Per arm and epoch: mean, min and max of ``metric`` over the arm's runs (its seeds).

    Returns:
        Columns ``arm, step, mean, low, high, n`` for the arms in ``arms`` (their order kept).
    """
    curve = history[history["metric"] == metric]
    arm_of = pd.Series(runs["arm"].to_numpy(), index=runs["run_id"].to_numpy())
    arm_of = arm_of[arm_of.isin(arms)]
    arm = curve["run_id"].map(arm_of)
    keep = arm.notna().to_numpy()
    frame = pd.DataFrame({"arm": arm.to_numpy()[keep], "step": curve["step"].to_numpy()[keep],
                          "value": curve["value"].to_numpy(dtype=np.float64)[keep]})
    stats = frame.groupby(["arm", "step"], sort=False)["value"].agg(["mean", "min", "max", "count"])
    stats = stats.reset_index().rename(columns={"min": "low", "max": "high", "count": "n"})
    order = {a: i for i, a in enumerate(arms)}
    stats["_o"] = stats["arm"].map(order)
    return stats.sort_values(["_o", "step"]).drop(columns="_o").reset_index(drop=True)


def learning_curves(stats: pd.DataFrame, arms: Sequence[str], *, ylabel: str, scale: float = 1.0,
                    target: float | None = None, title: str | None = None) -> bytes:
    """Mean curve per arm with a min-max band over seeds.

    Args:
        stats: From :func:`curve_stats`.
        arms: Arms to draw, in legend order (at most :data:`MAX_ARMS` are drawn).
        ylabel: Axis label (``"val acc (%)"``).
        scale: Multiplies values (100 for accuracies shown in %).
        target: Draws the convergence target as a dashed line (unscaled).
        title: Optional title.
    """
    arms = list(arms)[:MAX_ARMS]
    # tab10 pairs no two similar hues; past ten arms the colours repeat with dashed lines.
    palette = _colours(10)
    with _figure(7.6, 3.8) as (fig, ax):
        for i, arm in enumerate(arms):
            colour = palette[i % 10]
            s = stats[stats["arm"] == arm]
            if s.empty:
                continue
            x = s["step"].to_numpy()
            ax.plot(x, s["mean"].to_numpy() * scale, color=colour, label=_short(arm),
                    linestyle="-" if i < 10 else "--")
            if (s["n"] > 1).any():
                ax.fill_between(x, s["low"].to_numpy() * scale, s["high"].to_numpy() * scale,
                                color=colour, alpha=0.15, linewidth=0)
        if target is not None:
            ax.axhline(target * scale, color=_NEUTRAL, linestyle="--", linewidth=0.9,
                       label=f"target {target * scale:g}{' %' if scale == 100 else ''}")
        ax.set_xlabel("epoch")
        _integer_x(ax)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
        return _png(fig)


# --- effects -------------------------------------------------------------------------------------


def effect_chart(labels: Sequence[str], effect: Sequence[float], low: Sequence[float],
                 high: Sequence[float], *, verdicts: Sequence[str], xlabel: str,
                 title: str | None = None) -> bytes:
    """One point per trick with its CI as whiskers, and a zero line.

    Colours follow each row's verdict only (:data:`~ablate.report.format.VERDICT_COLOURS`: helps
    green, hurts red, no effect grey, unresolved amber). An infinite bound is drawn to the plot's
    edge with an arrow. Rows are drawn top to bottom in the order given.
    """
    n = len(labels)
    effect_a = np.asarray(effect, dtype=np.float64)
    low_a = np.asarray(low, dtype=np.float64)
    high_a = np.asarray(high, dtype=np.float64)
    with _figure(7.0, max(1.6, 0.36 * n + 0.9)) as (fig, ax):
        y = np.arange(n)[::-1]
        colours = [VERDICT_COLOURS.get(v, _NEUTRAL) for v in verdicts]
        has_ci = ~(np.isnan(low_a) | np.isnan(high_a))
        # An unbounded side (a simultaneous CI that only gives the sign) runs to the edge of the
        # finite values' span and ends in an arrow.
        finite = np.concatenate([effect_a, low_a, high_a, [0.0]])
        finite = finite[np.isfinite(finite)]
        span = max(float(np.ptp(finite)), 1e-12)
        edge_lo, edge_hi = float(finite.min()) - 0.15 * span, float(finite.max()) + 0.15 * span
        for j in np.flatnonzero(has_ci & np.isinf(low_a)):
            ax.plot([edge_lo], [y[j]], marker="<", color=colours[j], markersize=5)
        for j in np.flatnonzero(has_ci & np.isinf(high_a)):
            ax.plot([edge_hi], [y[j]], marker=">", color=colours[j], markersize=5)
        low_a = np.where(np.isneginf(low_a), edge_lo, low_a)
        high_a = np.where(np.isposinf(high_a), edge_hi, high_a)
        err = np.vstack([effect_a - low_a, high_a - effect_a])
        for i in range(n):
            if has_ci[i]:
                ax.errorbar(effect_a[i], y[i], xerr=err[:, i:i + 1], fmt="none", ecolor=colours[i],
                            elinewidth=1.4, capsize=3)
        ax.scatter(effect_a, y, color=colours, zorder=3, s=22)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(y, [_short(lbl, 36) for lbl in labels])
        ax.set_ylim(-0.7, n - 0.3)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(xlabel)
        if title:
            ax.set_title(title)
        return _png(fig)


# --- gradient norms ------------------------------------------------------------------------------


def _grad_frame(history: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """log10 of each layer's gradient norm, geometric-meaned over the runs of an arm."""
    grads = history[history["metric"].str.startswith("grad_norm/")]
    if grads.empty:
        return pd.DataFrame(columns=["arm", "step", "layer", "log10"])
    arm_of = pd.Series(runs["arm"].to_numpy(), index=runs["run_id"].to_numpy())
    arm = grads["run_id"].map(arm_of)
    keep = arm.notna().to_numpy()
    value = grads["value"].to_numpy(dtype=np.float64)[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        # A zero norm is a dead layer: floor it at 1e-30 so it shows as an extreme spread, not -inf.
        logv = np.log10(np.maximum(value, 1e-30))
    frame = pd.DataFrame({"arm": arm.to_numpy()[keep], "step": grads["step"].to_numpy()[keep],
                          "layer": grads["metric"].to_numpy()[keep], "log10": logv})
    frame = frame[np.isfinite(frame["log10"])]  # a diverged run's NaN gradients carry no direction
    return frame.groupby(["arm", "step", "layer"], sort=False)["log10"].mean().reset_index()


def grad_spread(history: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm: the largest spread (in decades) between its layers' gradient norms at any epoch.

    Returns:
        Indexed by arm, columns ``spread`` (decades, max over epochs), ``epoch`` (where it is
        largest) and ``flagged`` (``spread >= GRAD_SPREAD_DECADES``); empty without gradient norms.
    """
    frame = _grad_frame(history, runs)
    if frame.empty:
        return pd.DataFrame(columns=["spread", "epoch", "flagged"])
    per_epoch = frame.groupby(["arm", "step"], sort=False)["log10"].agg(["max", "min"])
    per_epoch = (per_epoch["max"] - per_epoch["min"]).rename("spread").reset_index()
    idx = per_epoch.groupby("arm", sort=False)["spread"].idxmax()
    out = per_epoch.loc[idx].set_index("arm").rename(columns={"step": "epoch"})
    out["flagged"] = out["spread"] >= GRAD_SPREAD_DECADES
    return out[["spread", "epoch", "flagged"]]


def grad_norm_curves(history: pd.DataFrame, runs: pd.DataFrame, arms: Sequence[str]) -> bytes:
    """Per-layer gradient norm (log y, geometric mean over seeds), one panel per arm.

    Layers are coloured from dark (input side) to light (output side), see :func:`layer_key`; at most
    :data:`MAX_LAYERS` layers (evenly spaced, first and last kept) and :data:`MAX_GRAD_PANELS`
    panels are drawn.
    """
    import matplotlib

    arms = list(arms)[:MAX_GRAD_PANELS]
    sub = runs[runs["arm"].isin(arms)]
    frame = _grad_frame(history[history["run_id"].isin(sub["run_id"])], sub)
    ncols = min(2, len(arms))
    nrows = math.ceil(len(arms) / ncols)
    with _figure(3.8 * ncols + 1.6, 2.7 * nrows + 0.3, nrows=nrows, ncols=ncols, squeeze=False,
                 sharey=True) as (fig, axes):
        cmap = matplotlib.colormaps["viridis"]
        legend_done = False
        for k, arm in enumerate(arms):
            ax = axes[k // ncols][k % ncols]
            part = frame[frame["arm"] == arm]
            layers = sorted(part["layer"].unique(), key=layer_key)
            if len(layers) > MAX_LAYERS:
                pick = np.unique(np.linspace(0, len(layers) - 1, MAX_LAYERS).round().astype(int))
                layers = [layers[i] for i in pick]
            for j, layer in enumerate(layers):
                s = part[part["layer"] == layer].sort_values("step")
                colour = cmap(0.9 * j / max(1, len(layers) - 1))
                ax.plot(s["step"].to_numpy(), 10 ** s["log10"].to_numpy(), color=colour,
                        label=_short(layer[len("grad_norm/"):], 24))
            ax.set_yscale("log")
            ax.set_title(_short(arm, 48))
            ax.set_xlabel("epoch")
            _integer_x(ax)
            if k % ncols == 0:
                ax.set_ylabel("gradient norm")
            if layers and not legend_done:
                fig.legend(*ax.get_legend_handles_labels(), loc="outside right center", title="layer")
                legend_done = True
        for k in range(len(arms), nrows * ncols):
            axes[k // ncols][k % ncols].set_visible(False)
        return _png(fig)


# --- searches ------------------------------------------------------------------------------------


def importance_chart(table: pd.DataFrame, *, max_params: int = 15) -> bytes:
    """Horizontal bars of each parameter's importance, one bar per evaluator column.

    Args:
        table: ``param`` and one column per evaluator (``fanova``, ``ped_anova``), values in [0, 1].
        max_params: Parameters shown (the most important first).
    """
    table = table.head(max_params)
    evaluators = [c for c in table.columns if c != "param"]
    n = len(table)
    with _figure(6.8, max(1.6, 0.34 * n * max(1, len(evaluators)) ** 0.5 + 0.9)) as (fig, ax):
        y = np.arange(n)[::-1].astype(float)
        height = 0.8 / max(1, len(evaluators))
        for i, (name, colour) in enumerate(zip(evaluators, _colours(len(evaluators)), strict=True)):
            values = table[name].to_numpy(dtype=np.float64)
            offset = (len(evaluators) - 1) / 2 * height - i * height
            ax.barh(y + offset, np.nan_to_num(values), height=height, color=colour,
                    label=name if not np.isnan(values).all() else f"{name} (not enough trials)")
        ax.set_yticks(y, [_short(p, 32) for p in table["param"]])
        ax.set_xlim(0, 1)
        ax.set_xlabel("importance (share, sums to 1 per evaluator)")
        ax.grid(axis="y", visible=False)
        ax.legend(loc="lower right")
        return _png(fig)


def expected_best_chart(expected: np.ndarray, observed: np.ndarray, *, ylabel: str,
                        scale: float = 1.0) -> bytes:
    """Expected best value of n random trials (Dodge et al. 2019) against n, with the best so far.

    Args:
        expected: ``expected_best(values)``: entry n-1 is the expected best of n trials.
        observed: The running best of the trials in the order they ran.
        ylabel: Axis label.
        scale: Multiplies values (100 for accuracies in %).
    """
    with _figure(6.4, 3.4) as (fig, ax):
        n = np.arange(1, len(expected) + 1)
        ax.plot(n, np.asarray(expected) * scale, color=_colours(1)[0],
                label="expected best of n random trials")
        m = np.arange(1, len(observed) + 1)
        ax.step(m, np.asarray(observed) * scale, where="post", color=_NEUTRAL, linewidth=1.0,
                label="best so far (trial order)")
        ax.set_xlabel("number of trials")
        _integer_x(ax)
        ax.set_ylabel(ylabel)
        ax.legend(loc="lower right")
        return _png(fig)
