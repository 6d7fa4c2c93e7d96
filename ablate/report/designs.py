"""Every design the report knows, described once: its reference arm, its extra analysis, its sections.

A study's ``design`` (``study.json``) picks one :class:`~ablate.report.model.ReportDesign` from
:data:`DESIGNS`; :func:`~ablate.report.analyse.analyse` runs the common steps and then the design's
``step``, and :func:`~ablate.report.layout.assemble` lays out the design's ``sections``. A study
without a design is a ``search`` when it searched a space, else plain ``runs``.

A new design is one entry here (with its step and sections beside it) plus its tests; the arms
and comparisons it runs are built by :func:`ablate.ablation.build_design`.

=================  ==================================  ==========================  ===================
design             reference arm                       extra analysis              extra sections
=================  ==================================  ==========================  ===================
leave_one_out      the arm most comparisons share      —                           —
add_one_in         the arm most comparisons share      —                           —
cumulative         the last step (the full recipe)     change at each step         Cumulative
factorial          the arm most comparisons share      main effects, interactions  Factorial
search             the best trial (after confirm: the  expected best, importances, Search (replaces
                   best mean over its seeds)           confirmed means             the ablation ones)
runs               the best arm                        —                           —
=================  ==================================  ==========================  ===================
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ablate import analysis as A
from ablate import records
from ablate.errors import AblateError
from ablate.report.format import fmt_ci, g, verdict_class, verdict_text
from ablate.report.layout import contributions, per_arm
from ablate.report.model import CI, Analysis, Inputs, Page, ReportDesign
from ablate.report.render import Paragraph, Section, Table

__all__ = ["BEST_TRIALS", "DESIGNS", "RUNS", "SEARCH", "choose_design", "cumulative_order", "judge",
           "reference_arm"]

BEST_TRIALS = 10  # rows of a search's table of best trials


# --- the verdicts ---------------------------------------------------------------------------------


def judge(result: Analysis, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (one family of contrasts) with each row's verdict (:func:`ablate.analysis.verdicts`;
    after adaptive seeds :func:`ablate.analysis.sequential_verdicts`, whose p-values and intervals
    hold under the rounds' stopping).

    Every design's families are judged alike: the tricks of :func:`ablate.analysis.compare`, the
    steps of a cumulative design, the terms of a factorial one.
    """
    direction = "maximize" if result.maximize else "minimize"
    if result.adaptive is not None and "p_value" in table.columns:  # the family the rounds followed
        schedule = result.adaptive
        return A.sequential_verdicts(table, start=schedule["start"], step=schedule["step"],
                                     max_seeds=schedule["max"], margin=result.margin, alpha=result.alpha,
                                     direction=direction)
    return A.verdicts(table, margin=result.margin, alpha=result.alpha, direction=direction)


# --- the reference arm ----------------------------------------------------------------------------


def reference_arm(kind: ReportDesign, spec: Mapping[str, Any], summary: pd.DataFrame,
                  maximize: bool) -> str | None:
    """The arm the report marks as the reference.

    The last arm of the design's own order (cumulative: the full recipe), else the arm most
    comparisons share (leave-one-out's reference, add-one-in's baseline), else the best arm.
    """
    arms = list(summary.index)
    order = [a for a in kind.arm_order(spec) if a in arms] if kind.arm_order is not None else []
    if order:
        return order[-1]
    counts: Counter[str] = Counter(a for c in spec.get("comparisons") or []
                     for a in (c.get("with_arm"), c.get("without_arm")) if a in arms)
    if counts:
        return counts.most_common(1)[0][0]
    if summary.empty:
        return None
    means = summary["mean"]
    return str(means.idxmax() if maximize else means.idxmin()) if means.notna().any() else arms[0]


# --- the header's Design line -------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _describe_ablation(result: Analysis, meta: Mapping[str, Any]) -> str:
    text = result.kind.name.replace("_", "-")
    if result.comparisons is not None:
        text += f" ({_plural(len(result.comparisons), 'trick')}, {_plural(len(result.summary), 'arm')})"
    return text


def _describe_search(result: Analysis, meta: Mapping[str, Any]) -> str:
    if result.comparisons is not None:
        return _describe_ablation(result, meta)
    confirmed = (result.search or {}).get("confirmed")
    if confirmed is None:
        return f"{result.kind.name} ({len(result.summary)} trials)"
    return (f"{result.kind.name} ({len(result.summary)} trials; the best {len(confirmed)} confirmed on more "
            f"seeds, {int(confirmed['n'].max())} at most)")


def _describe_runs(result: Analysis, meta: Mapping[str, Any]) -> str:
    source = meta.get("source")
    return (f"runs selected by {source}; arms = params that differ between runs"
            if source in ("experiment", "tag") else "runs")


# --- cumulative --------------------------------------------------------------------------------------


def cumulative_order(spec: Mapping[str, Any]) -> list[str]:
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
    return [str(a) for a in order]


def _cumulative_step(inputs: Inputs, result: Analysis) -> None:
    """The change at each step against the step before, with its CI."""
    order = [a for a in cumulative_order(inputs.spec) if a in set(result.summary.index)]
    steps = [A.Comparison(f"step {i}", order[i], order[i - 1]) for i in range(1, len(order))]
    changes = (judge(result, A.compare(inputs.paired, inputs.column, steps, ci=CI, n_boot=inputs.n_boot,
                                       seed=inputs.seed)) if steps else None)
    rows = []
    for i, arm in enumerate(order):
        row = {"step": i, "arm": arm, "mean": result.summary.loc[arm, "mean"],
               "change": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_pairs": 0,
               "verdict": None, "seeds_needed": math.nan}
        if i and changes is not None:
            hit = changes[changes["label"] == f"step {i}"].iloc[0]
            row.update(change=hit["effect"], ci_low=hit["ci_low"], ci_high=hit["ci_high"],
                       n_pairs=int(hit["n_pairs"]), verdict=hit["verdict"], seeds_needed=hit["seeds_needed"])
        rows.append(row)
    result.extras["cumulative"] = pd.DataFrame(rows)


def _cumulative_section(page: Page) -> list[Section]:
    fmt, table = page.result.fmt, page.result.cumulative
    if table is None:
        return []
    rows, classes = [], []
    for _, r in table.iterrows():
        change = "—" if r["step"] == 0 else fmt.diff(r["change"], 2)
        ci = "—" if r["step"] == 0 else fmt_ci(fmt, r["ci_low"], r["ci_high"], diff=True)
        verdict = "—" if r["step"] == 0 else verdict_text(r["verdict"], r["seeds_needed"])
        rows.append([verdict, str(int(r["step"])), str(r["arm"]), fmt.level(r["mean"]), change, ci])
        classes.append(verdict_class(r["verdict"]) if r["step"] else "")
    mean_label = f"mean ({fmt.level_unit})" if fmt.level_unit else "mean"
    section = Section("Cumulative: adding one trick at a time")
    section.blocks.append(Paragraph("Verdict of each step = of its change against the step before, the "
                                    "steps judged as one family, as the tricks above.", note=True))
    section.blocks.append(Table(["verdict", "step", "arm", mean_label,
                                 f"change vs previous{fmt.unit(diff=True)}", "95 % CI"], rows,
                                ["l", "r", "l", "r", "r", "r"], row_classes=classes))
    return [section]


# --- factorial ---------------------------------------------------------------------------------------


def _factorial_step(inputs: Inputs, result: Analysis) -> None:
    """Main effects and interactions over every on/off combination (a note when it cannot be done)."""
    if not inputs.spec.get("factors"):
        return
    runs, column = inputs.runs, inputs.column
    factors = {str(k): v for k, v in inputs.spec["factors"].items()}
    frame = runs[["seed", column]].copy()
    for label, on in factors.items():
        frame[label] = runs["arm"].map(lambda a, on=on: on.get(a))
    frame = frame.dropna(subset=list(factors))
    try:
        effects = A.factorial_effects(frame.astype(dict.fromkeys(factors, bool)), column, list(factors),
                                      ci=CI, n_boot=inputs.n_boot, seed=inputs.seed, method="t")
        result.extras["factorial"] = judge(result, effects)
    except AblateError as exc:
        result.notes["factorial"] = str(exc)


def _factorial_section(page: Page) -> list[Section]:
    result, fmt = page.result, page.result.fmt
    section = Section("Factorial: main effects and interactions")
    if result.factorial is not None:
        section.blocks.append(Paragraph(
            "Main effect = mean with the trick minus mean without, over all other combinations; "
            "interaction a:b = half the difference between a's effect with b on and with b off. "
            "CIs: t-intervals of the per-seed effects. Verdicts as for the tricks above, every term "
            "(main effects and interactions) in one family.", note=True))
        rows = [[verdict_text(r["verdict"], r["seeds_needed"]), str(r["term"]), str(r["kind"]),
                 fmt.diff(r["effect"], 2), fmt_ci(fmt, r["ci_low"], r["ci_high"], diff=True),
                 fmt_ci(fmt, r["ci_low_adj"], r["ci_high_adj"], diff=True), str(int(r["n_seeds"]))]
                for _, r in result.factorial.iterrows()]
        cols = ["verdict", "term", "kind", f"effect{fmt.unit(diff=True)}", "95 % CI",
                "95 % simultaneous CI", "seeds"]
        section.blocks.append(Table(cols, rows, ["l", "l", "l", "r", "r", "r", "r"],
                                    row_classes=[verdict_class(v) for v in result.factorial["verdict"]]))
    else:
        why = result.notes.get("factorial", "no factors")
        section.blocks.append(Paragraph(f"Not computed: {why}", note=True))
    return [section]


# --- search --------------------------------------------------------------------------------------------


def _trial_order(runs: pd.DataFrame) -> pd.Series:
    """The order the trials ran: their trial number, else their start time."""
    number = runs.get(f"tags.{records.TAG_TRIAL_NUMBER}", pd.Series(index=runs.index, dtype=float))
    order_key = pd.to_numeric(number, errors="coerce")
    if order_key.isna().all() and "start_time" in runs:
        order_key = pd.to_numeric(runs["start_time"], errors="coerce")
    return order_key


def confirmation_runs(runs: pd.DataFrame) -> pd.Series:
    """True for a search's confirmation runs (another seed of a trial's recipe, ``confirm:``)."""
    tag = f"tags.{records.TAG_CONFIRM_OF}"
    if tag not in runs:
        return pd.Series(False, index=runs.index)
    return runs[tag].notna()


def _confirmed(inputs: Inputs, result: Analysis) -> pd.DataFrame | None:
    """Each confirmed trial's mean over its seeds (its own run and its confirmation runs) with the
    t-interval of that mean, best first; the best becomes the report's reference (its best)."""
    runs = inputs.runs
    confirming = confirmation_runs(runs)
    if not confirming.any():
        return None
    candidates = set(runs.loc[confirming, "arm"])
    table = A.confirmed_means(runs[runs["arm"].isin(candidates)], inputs.column, group="arm", ci=CI,
                              maximize=result.maximize)
    if table["mean"].notna().any():
        result.reference = str(table["arm"].iloc[0])
    return table


def _search_step(inputs: Inputs, result: Analysis) -> None:
    """Expected best of n trials, the best so far in trial order, and hyperparameter importances
    (over the search's own trials, one seed each); after ``confirm:``, the confirmed means."""
    column, maximize, notes = inputs.column, result.maximize, result.notes
    runs = inputs.runs[~confirmation_runs(inputs.runs)]
    ordered = runs.assign(_o=_trial_order(runs).to_numpy())
    ordered = ordered.sort_values("_o", kind="stable", na_position="last")
    values = pd.to_numeric(ordered[column], errors="coerce").to_numpy(dtype=np.float64)
    finite = np.where(np.isfinite(values), values, -np.inf if maximize else np.inf)
    observed = np.maximum.accumulate(finite) if maximize else np.minimum.accumulate(finite)
    observed = np.where(np.isfinite(observed), observed, np.nan)
    out: dict[str, Any] = {"expected": A.expected_best(values, maximize=maximize), "observed": observed}
    params, dists = A.typed_params(runs, inputs.spec.get("distributions") or {})
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
    confirmed = _confirmed(inputs, result)
    if confirmed is not None:
        out["confirmed"] = confirmed
    result.extras["search"] = out


def _best_trials(result: Analysis, runs: pd.DataFrame) -> Table:
    search = result.search or {}
    fmt = result.fmt
    params = search.get("params") or []
    values = pd.to_numeric(runs[fmt.name], errors="coerce")
    ranked = values.sort_values(ascending=not result.maximize, na_position="last", kind="stable")
    cols = ["rank", "trial", f"{fmt.label}{fmt.unit()}", "epochs", *params, "run id"]
    typed = search.get("typed")
    rows = []
    for rank, i in enumerate(ranked.index[:BEST_TRIALS], 1):
        r = runs.loc[i]
        cells = [str(rank), str(r["arm"]), fmt.level(values[i]),
                 g(float(r["epochs_run"])) if "epochs_run" in runs and pd.notna(r["epochs_run"]) else "—"]
        for p in params:
            v = typed.loc[i, p] if typed is not None and p in typed else None
            cells.append(g(v) if isinstance(v, (float, np.floating)) else ("—" if v is None else str(v)))
        cells.append(str(r["run_id"]))
        rows.append(cells)
    return Table(cols, rows, ["r", "l", "r", "r", *(["l"] * len(params)), "l"])


def _confirmed_table(result: Analysis, runs: pd.DataFrame, confirmed: pd.DataFrame) -> Table:
    """One row per confirmed trial, best mean first: seeds, mean, its interval, spread, parameters."""
    search = result.search or {}
    fmt = result.fmt
    params = search.get("params") or []
    typed = search.get("typed")
    own = runs[~confirmation_runs(runs)]
    cols = ["rank", "trial", "seeds", f"mean {fmt.label}{fmt.unit()}", "95 % CI", "std", "its search run",
            *params]
    rows = []
    for rank, r in enumerate(confirmed.itertuples(index=False), 1):
        first = own.index[own["arm"] == r.arm]
        value = pd.to_numeric(own.loc[first, fmt.name], errors="coerce").iloc[0] if len(first) else math.nan
        cells = [str(rank), str(r.arm), str(int(r.n)), fmt.level(r.mean),
                 fmt_ci(fmt, r.ci_low, r.ci_high, diff=False), fmt.diff(r.std, 2, sign=False),
                 fmt.level(value)]
        for p in params:
            v = typed.loc[first[0], p] if typed is not None and len(first) and p in typed else None
            cells.append(g(v) if isinstance(v, (float, np.floating)) else ("—" if v is None else str(v)))
        rows.append(cells)
    return Table(cols, rows, ["r", "l", "r", "r", "r", "r", "r", *(["l"] * len(params))])


def _confirmed_blocks(result: Analysis, runs: pd.DataFrame) -> list[Any]:
    """The confirmed best in one sentence, then every confirmed trial's row."""
    confirmed = (result.search or {}).get("confirmed")
    if confirmed is None:
        return []
    fmt = result.fmt
    best = confirmed.iloc[0]
    extra = int(confirmation_runs(runs).sum())
    lead = (f"Best: {best['arm']}, mean {fmt.label} {fmt.level(best['mean'])}{fmt.unit(space=True)} "
            f"{fmt_ci(fmt, best['ci_low'], best['ci_high'], diff=False)} (95 % t-interval) over "
            f"{int(best['n'])} seeds. The search's {len(confirmed)} best trials were each trained again on "
            f"more seeds ({extra} confirmation runs), so the best is the best mean over seeds, not one "
            "lucky seed:")
    return [Paragraph(lead), _confirmed_table(result, runs, confirmed)]


def _search_section(page: Page) -> list[Section]:
    result = page.result
    runs = page.runs[~confirmation_runs(page.runs)]
    section = Section("Search")
    section.blocks += _confirmed_blocks(result, page.runs)
    section.blocks.append(Paragraph(f"The {min(BEST_TRIALS, len(runs))} best of {len(runs)} finished "
                                    f"trials by {result.fmt.label}" + (" (one seed each)" if len(runs) <
                                                                       len(page.runs) else "") + ":",
                                    note=True))
    section.blocks.append(_best_trials(result, runs))
    section.blocks += page.figure("importance")
    if "importance" in result.notes:
        section.blocks.append(Paragraph(f"Importances not computed: {result.notes['importance']}", note=True))
    section.blocks += page.figure("expected_best")
    return [section]


def _search_frames(result: Analysis) -> dict[str, Any]:
    search = result.search or {}
    return {k: search[k] for k in ("importance", "confirmed") if k in search}


# --- the registry ---------------------------------------------------------------------------------


def _ablation(name: str, **kwargs: Any) -> ReportDesign:
    """An ablation design: the trick lines and the per-arm table, then the design's own sections."""
    own = kwargs.pop("sections", ())
    return ReportDesign(name=name, title="Ablation report", sections=(contributions, per_arm, *own),
                        describe=_describe_ablation, **kwargs)


DESIGNS: dict[str, ReportDesign] = {
    "leave_one_out": _ablation("leave_one_out"),
    "add_one_in": _ablation("add_one_in"),
    "cumulative": _ablation("cumulative", arm_order=cumulative_order, step=_cumulative_step,
                            sections=(_cumulative_section,),
                            frames=lambda result: {"cumulative": result.cumulative}),
    "factorial": _ablation("factorial", step=_factorial_step, sections=(_factorial_section,),
                           frames=lambda result: {"factorial": result.factorial}),
}
"""The ablation designs, by the name ``study.json`` gives them (:data:`ablate.ablation.DESIGNS`)."""
SEARCH = ReportDesign(name="search", title="Search report", sections=(_search_section,),
                      describe=_describe_search, step=_search_step, frames=_search_frames)
"""A study that searched a space: every trial is its own arm."""
RUNS = ReportDesign(name="runs", title="Report", sections=(contributions, per_arm), describe=_describe_runs)
"""Plain runs (``ablate train -m``), or a study without a design or a space."""


def choose_design(spec: Mapping[str, Any], meta: Mapping[str, Any]) -> ReportDesign:
    """The description of a study's design: its own, ``search`` when it searched a space, else ``runs``.

    An ablation design this version does not know is reported like the others, without extras.
    """
    design = spec.get("design")
    if design in DESIGNS:
        return DESIGNS[design]
    if design:
        return _ablation(str(design))
    if design is None and (spec.get("distributions") or spec.get("params")
                           or meta.get("arm_source") == "trial number"):
        return SEARCH
    return RUNS
