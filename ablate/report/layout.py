"""Lay an analysis and its figures out as a titled document (no rendering yet).

:func:`assemble` puts the header first, then the sections the study's design names
(:attr:`~ablate.report.model.ReportDesign.sections`), then the figures and the run appendix. The
section builders every ablation shares live here; a design's own live in
:mod:`ablate.report.designs`.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ablate import records
from ablate.report.format import (
    epochs,
    fmt_ci,
    p_value,
    prob,
    seconds,
    seed_ranges,
    verdict_class,
    verdict_text,
    when,
)
from ablate.report.model import Analysis, Page
from ablate.report.render import Bullets, Link, Paragraph, ReportData, Section, Table

__all__ = ["APPENDIX_COLLAPSE", "appendix", "arm_table", "assemble", "contributions", "figures", "header",
           "per_arm", "verdict_rules"]

APPENDIX_COLLAPSE = 40  # HTML folds the run list beyond this many rows
_SOURCE_LABEL = {"study": "Study", "experiment": "Experiment", "tag": "Selection"}
_STATE_ORDER = [records.FINISHED, records.DIVERGED, records.PRUNED, records.FAILED, records.KILLED,
                records.RUNNING]


# --- what each trick contributes -----------------------------------------------------------------


def _reaches(row: pd.Series, result: Analysis) -> str:
    """``, reaches 95 % in 4 vs 7 epochs``: the convergence clause of an effect line."""
    conv = result.convergence
    if conv is None or result.target is None:
        return ""
    a = conv["median_epochs"].get(row["with_arm"], math.nan)
    b = conv["median_epochs"].get(row["without_arm"], math.nan)
    level = f"{result.target * 100:g} %"
    if np.isfinite(a) and np.isfinite(b):
        return f", reaches {level} in {a:g} vs {b:g} epochs"
    if np.isfinite(a):
        return f", reaches {level} in {a:g} epochs (without it, most runs never do)"
    if np.isfinite(b):
        return f", most runs never reach {level} (without it: {b:g} epochs)"
    return ""


def _effect_line(row: pd.Series, result: Analysis) -> list[tuple[str, str]]:
    fmt = result.fmt
    if np.isnan(row["ci_low"]):
        ci = "[95 % CI n/a: fewer than 2 pairs]"
    elif np.isinf(row["ci_low"]):
        ci = f"[95 % CI unbounded: all {int(row['n_pairs'])} differences equal]"
    else:
        ci = f"[95 % CI {fmt.diff(row['ci_low'], sign=False)}, {fmt.diff(row['ci_high'], sign=False)}]"
    p_better = row["p_better"] if result.maximize else 1.0 - row["p_better"]
    text = (f": {fmt.diff(row['effect'])}{fmt.unit(diff=True, space=True)} {fmt.label} {ci}, "
            f"P(better) = {prob(p_better)}")
    text += _reaches(row, result)
    stab = result.stability
    if stab is not None and row["with_arm"] in stab.index and stab.loc[row["with_arm"], "n_diverged"] > 0:
        s = stab.loc[row["with_arm"]]
        text += f", diverged in {int(s['n_diverged'])}/{int(s['n_runs'])} runs"
    verdict = verdict_text(row["verdict"], row["seeds_needed"])
    word, _, rest = verdict.partition(" (")
    lead = [("b", word)] + ([("", f" ({rest}")] if rest else [])
    return [*lead, ("", " "), ("", str(row["label"])), ("", text)]


def _comparison_table(result: Analysis, comparisons: pd.DataFrame) -> Table:
    fmt = result.fmt
    cols = ["verdict", "trick", "with", "without", "n pairs", f"effect{fmt.unit(diff=True)}", "95 % CI",
            "P(better)", "p (Holm)", "95 % simultaneous CI"]
    rows = []
    for _, r in comparisons.iterrows():
        p_better = r["p_better"] if result.maximize else 1.0 - r["p_better"]
        rows.append([verdict_text(r["verdict"], r["seeds_needed"]), str(r["label"]), str(r["with_arm"]),
                     str(r["without_arm"]), f"{int(r['n_pairs'])}",
                     fmt.diff(r["effect"], 2), fmt_ci(fmt, r["ci_low"], r["ci_high"], diff=True),
                     prob(p_better), p_value(r["p_holm"]),
                     fmt_ci(fmt, r["ci_low_adj"], r["ci_high_adj"], diff=True)])
    return Table(cols, rows, ["l", "l", "l", "l", "r", "r", "r", "r", "r", "r"],
                 row_classes=[verdict_class(v) for v in comparisons["verdict"]])


def verdict_rules(result: Analysis) -> str:
    """The verdicts' rules in words, with the study's margin and level."""
    fmt, alpha = result.fmt, result.alpha
    better = "higher" if result.maximize else "lower"
    if result.margin is not None:
        margin = f"{fmt.diff(result.margin, 2, sign=False)}{fmt.unit(diff=True, space=True)}"
        equivalence = (f"no effect = equivalent within ±{margin}: two one-sided t-tests at {alpha:g} / m "
                       f"each, m = the rows of the table (Bonferroni), i.e. the 1 − 2·{alpha:g}/m "
                       "t-interval lies inside the margin; ")
    else:
        equivalence = "no effect is not tested (no resolve.margin for this metric); "
    return (f"Verdict: helps / hurts = p (Holm) < {alpha:g} with the effect on the {better} (better) / "
            f"worse side; {equivalence}unresolved = neither, with the estimated additional seeds per "
            "arm that would resolve it if the effect and its spread stayed as observed. Colours follow "
            "the verdict only: green helps, red hurts, grey no effect, amber unresolved."
            + (" Seeds were added in rounds until each trick had a verdict, so every p-value and "
               "interval here is the repeated (group-sequential, Wang–Tsiatis) one, which holds at "
               "whichever round the study stopped; each is wider than a fixed design's at the same seeds."
               if result.adaptive else ""))


def contributions(page: Page) -> list[Section]:
    """What each trick contributes: one plain-language line per comparison, then the ablation table."""
    result, fmt = page.result, page.result.fmt
    section = Section("What each trick contributes")
    comparisons = result.comparisons
    if comparisons is not None and not comparisons.empty:
        better = "higher" if result.maximize else "lower"
        section.blocks.append(Paragraph(
            f"Each line: the trick's effect on {fmt.label} (with minus without, paired by seed, "
            f"mean over pairs{'; pts = percentage points' if fmt.diff_unit == 'pts' else ''}), "
            "its 95 % CI (t-interval of the paired differences; it excludes 0 exactly when the "
            "unadjusted paired t-test has p < 0.05), and P(better) = the share of seeds where the run "
            f"with the trick is {better}"
            + (f"; epochs = median epochs to reach {result.target * 100:g} % val acc"
               if result.target is not None else "") + ". "
            "The table's 95 % simultaneous CI holds for all tricks at once and agrees with p (Holm): "
            "it excludes 0 exactly when p (Holm) < 0.05; a trick Holm finds significant gets "
            "(0, +∞) or (-∞, 0), its sign, unless every trick is significant. "
            "The chart draws the simultaneous CI. " + verdict_rules(result), note=True))
        section.blocks.append(Bullets([_effect_line(r, result) for _, r in comparisons.iterrows()]))
        section.blocks.append(Paragraph("Ablation table, sorted by effect:", note=True))
        section.blocks.append(_comparison_table(result, comparisons))
        section.blocks += page.figure("effects")
    else:
        section.blocks.append(Paragraph(
            "No comparisons are defined for these runs (only ablation studies define them); "
            "the per-arm table below compares the arms side by side.", note=True))
    if "duplicates" in result.notes:
        section.blocks.append(Paragraph(result.notes["duplicates"] + ".", note=True))
    if result.missing_comparisons:
        section.blocks.append(Paragraph(
            "Not computed (an arm has no finished run): " + ", ".join(result.missing_comparisons),
            note=True))
    return [section]


# --- per arm -----------------------------------------------------------------------------------------


def _arm_cells(result: Analysis, arm: str) -> list[str]:
    """The test, convergence, gap, divergence and wall-time cells of one arm's row."""
    test = f"{result.test.get(arm, math.nan) * 100:.2f}" if result.test is not None and \
        np.isfinite(result.test.get(arm, math.nan)) else "—"
    conv = "—"
    if result.convergence is not None and arm in result.convergence.index:
        c = result.convergence.loc[arm]
        conv = f"{epochs(c['median_epochs'])} ({c['share_reached'] * 100:.0f} %)"
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
        wall = seconds(result.cost.loc[arm, "mean_train_time"])
    return [test, conv, gap, div, wall]


def arm_table(result: Analysis) -> Table:
    """One row per arm, best first: runs, mean ± std, median, CI and the arm's other measures."""
    fmt = result.fmt
    s = result.summary
    target = f"{result.target * 100:g} %" if result.target is not None else None
    cols = ["arm", "n", f"mean ± std{fmt.unit()}", "median", "95 % CI", "test acc (%)",
            f"epochs to {target} (share reached)" if target else "epochs to target",
            "train − val gap (pts)", "diverged", "mean wall time"]
    rows = []
    for arm in result.arms:
        r = s.loc[arm]
        n = f"{int(r['n'])}" if r["n"] == r["n_runs"] else f"{int(r['n'])} of {int(r['n_runs'])}"
        std = r["std"]
        mean = fmt.level(r["mean"]) + (f" ± {fmt.level(std)}" if np.isfinite(std) else "")
        marked = arm == result.reference and result.comparisons is not None \
            and arm.lower() not in ("reference", "baseline")
        label = arm + (" (reference)" if marked else "")
        ci = fmt_ci(fmt, r["ci_low"], r["ci_high"], diff=False)
        rows.append([label, n, mean, fmt.level(r["median"]), ci, *_arm_cells(result, arm)])
    return Table(cols, rows, ["l"] + ["r"] * (len(cols) - 1))


def per_arm(page: Page) -> list[Section]:
    """The per-arm table."""
    section = Section("Per arm")
    section.blocks.append(Paragraph(
        f"Arms sorted by mean {page.result.fmt.label}, best first. n = runs (seeds) with a value; "
        "95 % CI = bootstrap CI of the mean; train − val gap = last-epoch train acc minus val acc; "
        "wall time = mean training time per run.", note=True))
    section.blocks.append(arm_table(page.result))
    return [section]


# --- every report ----------------------------------------------------------------------------------


def figures(page: Page) -> list[Section]:
    """The learning curves and gradient norms, when drawn."""
    section = Section("Figures")
    section.blocks += page.figure("learning_curves") + page.figure("grad_norms")
    return [section] if section.blocks else []


def _run_frame(runs: pd.DataFrame, result: Analysis, excluded: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Every run, kept or left out, one row each: id, name, arm, seed, state, value."""
    fmt = result.fmt
    n = len(runs)
    value = pd.to_numeric(runs[fmt.name], errors="coerce").to_numpy(dtype=np.float64)
    states = runs["state"].astype(str).to_numpy() if "state" in runs else np.full(n, records.FINISHED)
    seeds = runs["seed"].to_numpy() if "seed" in runs else np.full(n, "")
    names = runs["run_name"].fillna("").astype(str).to_numpy() if "run_name" in runs else np.full(n, "")
    experiments = (runs["experiment_id"].astype(str).to_numpy() if "experiment_id" in runs
                   else np.full(n, ""))
    frame = pd.DataFrame({"run_id": runs["run_id"].astype(str).to_numpy(), "experiment_id": experiments,
                          "run_name": names,
                          "arm": runs["arm"].astype(str).to_numpy(),
                          "seed": seeds, "state": states,
                          "value": [fmt.level(v) for v in value]})
    extra = [{"run_id": str(e.get("run_id")), "experiment_id": str(e.get("experiment_id") or ""),
              "run_name": str(e.get("run_name") or ""),
              "arm": str(e.get("arm") or "—"), "seed": e.get("seed", ""), "state": str(e.get("state")),
              "value": "—"} for e in excluded]
    if extra:
        frame = pd.concat([frame, pd.DataFrame(extra)], ignore_index=True)
    return frame.sort_values(["arm", "seed", "run_id"], kind="stable", key=lambda s: s.astype(str))


def _seed_cell(seed: Any) -> str:
    if seed is None or seed == "" or (isinstance(seed, (int, np.integer)) and seed < 0):
        return "—"
    return str(seed)


def _run_links(frame: pd.DataFrame, tracking_uri: Any) -> pd.Series:
    """Each run id, linked to its page when the store is an MLflow server (``http(s)://``); as
    text otherwise (a file or database store has no page to link to)."""
    uri = str(tracking_uri or "")
    if not uri.lower().startswith(("http://", "https://")):
        return frame["run_id"]
    base = re.sub(r"//[^/@]*@", "//", uri).rstrip("/")  # no user:password in a link
    return pd.Series([Link(rid, f"{base}/#/experiments/{exp}/runs/{rid}") if exp else rid
                      for rid, exp in zip(frame["run_id"], frame["experiment_id"], strict=True)],
                     index=frame.index, dtype=object)


def appendix(page: Page) -> list[Section]:
    """Every run, finished or not, so each number can be traced to its MLflow run (a link to its
    page when the store is an MLflow server)."""
    fmt = page.result.fmt
    frame = _run_frame(page.runs, page.result, page.meta.get("excluded_runs") or [])
    columns = [_run_links(frame, page.meta.get("tracking_uri")), frame["run_name"], frame["arm"],
               frame["seed"].map(_seed_cell), frame["state"], frame["value"]]
    rows = np.column_stack([c.to_numpy() for c in columns]).tolist()
    section = Section("Appendix: runs")
    cols = ["MLflow run id", "run name", "arm", "seed", "state", f"{fmt.label}{fmt.unit()}"]
    section.blocks.append(Table(cols, rows, ["l", "l", "l", "r", "l", "r"],
                                collapsed=len(rows) > APPENDIX_COLLAPSE, summary=f"{len(rows)} runs"))
    return [section]


# --- header --------------------------------------------------------------------------------------------


def _listed(values: Iterable[Any], empty: str = "not recorded") -> str:
    items = [str(v) for v in values if v is not None and str(v) not in ("", "nan", "None")]
    return ", ".join(dict.fromkeys(items)) or empty


def _seeds_text(runs: pd.DataFrame, spec: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """``0-3 (4 per arm)`` (with an en dash); after adaptive seeds also each arm's count, the
    schedule and why the study stopped; a search with ``repeats`` says each trial is a mean."""
    if "seed" not in runs:
        return seed_ranges([])
    repeats = int(spec.get("repeats") or 1)
    if repeats > 1 and not spec.get("design"):
        return (f"{repeats} per trial (repeats: each trial trains its seed and the next {repeats - 1}, "
                "fused; its value is their mean, each seed a run nested under the trial's)")
    text = seed_ranges(runs["seed"].tolist())
    per_arm = runs.groupby("arm")["seed"].nunique()
    if len(per_arm):
        lo, hi = int(per_arm.min()), int(per_arm.max())
        text += f" ({lo} per arm)" if lo == hi else f" ({lo}–{hi} per arm)"
    schedule = spec.get("adaptive")
    if schedule:
        counts = ", ".join(f"{arm} {int(n)}" for arm, n in per_arm.items())
        text += (f"; adaptive: {schedule['start']} per arm, then {schedule['step']} more a round in the arms "
                 f"of unresolved tricks, up to {schedule['max']} ({counts}); stopped: "
                 f"{meta.get('stopped_because') or 'not decided yet (the sweep can be resumed)'}")
    return text


def _runs_text(runs: pd.DataFrame, meta: Mapping[str, Any]) -> str:
    """``14 (12 finished, 1 pruned, 1 failed); ...``: every run of the study by state."""
    counts = dict(meta.get("counts") or {})
    if not counts:
        counts = dict(Counter(runs["state"])) if "state" in runs else {records.FINISHED: len(runs)}
    ranked = sorted(counts, key=lambda k: (_STATE_ORDER.index(k) if k in _STATE_ORDER else 99, k))
    by_state = ", ".join(f"{counts[k]} {k}" for k in ranked)
    return f"{sum(counts.values())} ({by_state}); pruned, failed and killed runs are left out of the tables"


def _dates_text(meta: Mapping[str, Any]) -> str:
    dates = f"report {when(meta.get('collected') or time.time())}"
    if meta.get("started"):
        start, end = when(meta.get("started")), when(meta.get("ended"))
        if end[:10] == start[:10]:
            end = end[11:]  # same day: the time is enough
        dates += f"; runs {start} – {end}"
    return dates


def _where(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Where the runs came from: the MLflow store, the tag filter, how arms were named."""
    where = [f"{meta['tracking_uri']}"] if meta.get("tracking_uri") else []
    if meta.get("experiments"):
        where.append("experiment " + ", ".join(meta["experiments"]))
    if meta.get("parent_run_id"):
        where.append(f"parent run {meta['parent_run_id']}")
    rows = [("MLflow", "; ".join(where))] if where else []
    if meta.get("tag"):
        rows.append(("Tag filter", str(meta["tag"])))
    if meta.get("arm_source") == "differing params":
        rows.append(("Arms", ("the params that differ between the selected runs (seed excluded); "
                              "seed from the seed param")))
    return rows


def header(page: Page) -> list[tuple[str, str]]:
    """The report's fact sheet: study, design, data, model, metric, seeds, runs, dates, versions."""
    runs, spec, meta, result = page.runs, page.spec, page.meta, page.result
    name = meta.get("name") or spec.get("name") or "runs"
    datasets = runs[records.TAG_DATASET].dropna().unique() if records.TAG_DATASET in runs else []
    models = runs["params.model.name"].dropna().unique() if "params.model.name" in runs else \
        (runs["model"].dropna().unique() if "model" in runs else [])
    commits = [c[:12] for c in meta.get("commits") or []]
    metric = (f"{result.fmt.label} ({'maximize' if result.maximize else 'minimize'})"
              + (f"; per-epoch metric {result.metric}" if result.fmt.name != result.metric else ""))
    return [
        (_SOURCE_LABEL.get(meta.get("source", "study"), "Study"), str(name)),
        ("Design", result.kind.describe(result, meta)),
        ("Dataset", _listed(datasets)),
        ("Model", _listed(models)),
        ("Metric", metric),
        ("Seeds", _seeds_text(runs, spec, meta)),
        ("Runs", _runs_text(runs, meta)),
        ("Date", _dates_text(meta)),
        ("Versions", _listed(meta.get("versions") or [])),
        ("Hardware", _listed(meta.get("hardware") or [])),
        ("Git commit", _listed(commits)),
        *_where(meta),
    ]


# --- the document ---------------------------------------------------------------------------------------


def _frames(result: Analysis) -> dict[str, Any]:
    frames = {"arms": result.summary, "comparisons": result.comparisons, "convergence": result.convergence,
              "overfitting": result.overfitting, "stability": result.stability, "cost": result.cost,
              **result.kind.frames(result), "grad_spread": result.grad}
    return {k: v for k, v in frames.items() if v is not None}


def assemble(runs: pd.DataFrame, spec: Mapping[str, Any] | None, meta: Mapping[str, Any] | None,
             result: Analysis, figs: Mapping[str, tuple[bytes, str]]) -> ReportData:
    """Lay the analysis and figures out as titled sections (no rendering yet).

    Args:
        runs: The runs analysed (``result.runs``).
        spec: The study spec, or None.
        meta: Header facts (name, counts, versions, hardware, commits, tracking_uri...).
        result: The analysis (:func:`ablate.report.analyse.analyse`).
        figs: ``{name: (png, caption)}`` (:func:`ablate.report.draw.draw_figures`).
    """
    page = Page(result=result, runs=runs, spec=dict(spec or {}), meta=dict(meta or {}), figs=figs)
    name = str(page.meta.get("name") or page.spec.get("name") or "runs")
    sections: list[Section] = []
    for build in (*result.kind.sections, figures, appendix):
        sections += build(page)
    return ReportData(title=f"{result.kind.title}: {name}", header=header(page), sections=sections,
                      frames=_frames(result))

