"""``ablate plan <study> [overrides]``: what a sweep would run and cost, before it is run.

Nothing is created or changed: the study file is composed and checked as ``ablate sweep`` does,
then, when the study's storage already holds it (a pilot, or a sweep stopped part-way), its
finished trials are read. The plan says:

* the design: arms and seeds (fixed, or an adaptive ``{start, step, max}`` schedule) or the
  search's trials (and its confirmation runs, ``confirm: {top, seeds}``), and the workers;
* the training time: each arm's median seconds per trial over its finished trials (a search: the
  median over all), times the trials still to run, over the workers; with no earlier trials, how to
  get a figure (a pilot of 2 seeds);
* after a pilot of an ablation (at least 2 seeds in an arm pair): each trick's effect, spread,
  verdict at the study's margin and confidence, and for an unresolved one the seeds per arm that
  would resolve it at the spread seen so far (:func:`ablate.analysis.verdicts`, or the adaptive
  rule's :func:`ablate.analysis.sequential_verdicts` for an adaptive study), with what those seeds
  would cost.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from ablate import records as R
from ablate.errors import AblateError
from ablate.secrets import redact
from ablate.sweep.rounds import pair_values
from ablate.sweep.spec import StudySpec, compose_study, differ_text, load_spec, recipe_differences
from ablate.sweep.storage import confirm_of, is_finished, open_storage, retry_params
from ablate.sweep.supervisor import worker_devices

__all__ = ["plan_text", "run_plan"]


def _clock(seconds: float) -> str:
    """``1 h 05 min``, ``12 min 30 s``, ``40 s``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def _trials(spec: StudySpec) -> list[FrozenTrial] | None:
    """The study's trials when its storage holds it, else None (nothing is created).

    Raises:
        AblateError: the storage holds a study of that name with another recipe (as ``ablate sweep``).
    """
    if "://" not in spec.storage and not Path(spec.storage).is_file():
        return None
    storage = open_storage(spec.storage, heartbeat_interval=None)
    try:
        study_id = storage.get_study_id_from_name(spec.name)
    except KeyError:
        return None
    differ = recipe_differences(load_spec(storage, spec.name, spec.storage).recipe, spec.recipe)
    if differ:
        raise AblateError(f"study: {spec.name!r} already exists in {redact(spec.storage)} with another "
                          f"recipe ({differ_text(differ)}): ablate sweep would refuse it; plan a new name=")
    return list(storage.get_all_trials(study_id, deepcopy=False))


def _seconds(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def _per_arm_seconds(trials: Sequence[FrozenTrial]) -> dict[str, float]:
    """Median seconds of a finished trial, per arm (``""``: every trial, for a search)."""
    times: dict[str, list[float]] = {}
    for t in trials:
        seconds = _seconds(t) if is_finished(t) else None
        if seconds is None:
            continue
        times.setdefault("", []).append(seconds)
        if "arm" in t.params:
            times.setdefault(str(t.params["arm"]), []).append(seconds)
    return {arm: statistics.median(values) for arm, values in times.items()}


class _Units:
    """Accuracies in points (x100), other metrics as they are."""

    def __init__(self, metric: str) -> None:
        self.scale, self.unit = (100.0, " pts") if "acc" in metric else (1.0, "")

    def __call__(self, value: float, sign: bool = True) -> str:
        if not math.isfinite(value):
            return "-"
        v = value * self.scale
        text = f"{v:+.2f}" if sign else f"{v:.2f}"
        return text + self.unit


def _design_lines(spec: StudySpec, workers: int) -> list[str]:
    if not spec.design:
        budget = f"{spec.n_trials} trials" if spec.n_trials else "trials until the timeout"
        if spec.confirm is not None:
            top, more = spec.confirm["top"], spec.confirm["seeds"]
            budget += (f", then the best {top} confirmed on {more} more seeds each ({top * more} runs, "
                       f"{(spec.n_trials or 0) + top * more} in all)")
        return [(f"Study {spec.name}: search, {budget}, sampler {spec.sampler['name']}, pruner "
                f"{spec.pruner['name']}, {workers} worker{'s' if workers != 1 else ''}")]
    arms = len(spec.arms)
    if spec.adaptive is not None:
        s = spec.adaptive
        seeds = (f"adaptive seeds: {s['start']} per arm first, then {s['step']} more per round where a "
                 f"verdict is open, at most {s['max']} ({arms * s['start']} to {arms * s['max']} runs)")
    else:
        seeds = f"{len(spec.seeds)} seeds per arm ({arms * len(spec.seeds)} runs)"
    lines = [(f"Study {spec.name}: {spec.design}, {arms} arms, {seeds}, {workers} worker"
             f"{'s' if workers != 1 else ''}")]
    lines += [f"  arm {arm}" for arm in spec.arms]
    return lines


def _to_run(spec: StudySpec, trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """Trials still to run per arm (``""`` for a search) at the design's first budget."""
    if not spec.design:
        done = sum(is_finished(t) for t in trials if confirm_of(t) is None)
        left = max(0, (spec.n_trials or 0) - done)
        if spec.confirm is not None:  # a confirmation run that ended (failed ones are not redone)
            ended = {(confirm_of(t), retry_params(t).get("seed")) for t in trials if confirm_of(t) is not None
                     and (is_finished(t) or t.user_attrs.get(R.ATTR_OUTCOME) == R.FAILED)}
            left += max(0, spec.confirm["top"] * spec.confirm["seeds"] - len(ended))
        return {"": left}
    per_arm = spec.adaptive["start"] if spec.adaptive is not None else len(spec.seeds)
    held = {key for key, t in pair_values(trials).items() if is_finished(t)}
    return {arm: sum((arm, seed) not in held for seed in range(per_arm)) for arm in spec.arms}


def _cost(runs: dict[str, int], seconds: dict[str, float], workers: int) -> float | None:
    """Wall seconds of ``runs`` (per arm) at each arm's median (the overall one for an arm without)."""
    total = 0.0
    for arm, n in runs.items():
        if n == 0:
            continue
        each = seconds.get(arm, seconds.get(""))
        if each is None:
            return None
        total += n * each
    return total / max(1, workers)


def _time_lines(spec: StudySpec, trials: Sequence[FrozenTrial] | None, workers: int) -> list[str]:
    if not trials or not any(map(is_finished, trials)):
        pilot = f"ablate sweep {spec.name} seeds=2" if spec.design else f"ablate sweep {spec.name} n_trials=4"
        return ["Time: no finished trials of this study yet, so no estimate; a pilot (" + pilot +
                f", then ablate plan {spec.name}) gives one"]
    seconds = _per_arm_seconds(trials)
    finished = sum(map(is_finished, trials))
    left = _to_run(spec, trials)
    cost = _cost(left, seconds, workers)
    arms = [v for k, v in seconds.items() if k]
    spread = f" (arms {min(arms):.1f}-{max(arms):.1f} s)" if len(arms) > 1 else ""
    lines = [f"Earlier trials: {finished} finished, median {seconds[''] :.1f} s each{spread}"]
    n_left = sum(left.values())
    if n_left == 0:
        lines.append("Time: nothing left to run at this budget")
    elif cost is not None:
        lines.append(f"Time: {n_left} trials left, about {_clock(cost)} of training with {workers} worker"
                     f"{'s' if workers != 1 else ''} (medians of the finished trials)")
    return lines


def verdict_table(spec: StudySpec, trials: Sequence[FrozenTrial]) -> Any:
    """An ablation's verdicts from its trials' told values: each contrast's effect, spread, pairs,
    verdict and seeds needed, with the margin used, as ``(table, margin)``; None before 2 paired seeds.
    (``ablate plan`` after a pilot, ``ablate studies``.)"""
    import pandas as pd  # the analysis stack, only when there are runs to analyse

    from ablate import analysis as A

    rows = [{"arm": arm, "seed": seed, "value": value} for (arm, seed), value in
            ((key, t.value if t.state == TrialState.COMPLETE and t.value is not None else math.nan)
             for key, t in pair_values(trials).items() if is_finished(t))]
    runs = pd.DataFrame(rows, columns=["arm", "seed", "value"]).astype({"value": float})
    runs = runs.dropna(subset=["value"])
    if runs.empty or runs.groupby("arm")["seed"].nunique().max() < 2:
        return None
    confidence = float(spec.resolve.get("confidence", 0.95))
    margin = spec.resolve.get("margin")
    margin = A.default_margin(spec.metric) if margin is None else float(margin)
    if spec.comparisons:
        table = A.compare(runs, "value", [A.Comparison(c["label"], c["with_arm"], c["without_arm"])
                                          for c in spec.comparisons], ci=confidence)
    elif spec.factors:
        frame = runs.copy()
        for label, on in spec.factors.items():
            frame[label] = frame["arm"].map(lambda a, on=on: on.get(a))
        frame = frame.dropna(subset=list(spec.factors)).astype(dict.fromkeys(spec.factors, bool))
        table = A.factorial_effects(frame, "value", list(spec.factors), ci=confidence, method="t")
        table = table.rename(columns={"term": "label"}) if "term" in table.columns else table
    else:
        return None
    table = table[table["n_pairs" if "n_pairs" in table.columns else "n_seeds"] >= 2]
    if table.empty:
        return None
    alpha = 1.0 - confidence
    if spec.adaptive is not None and "p_value" in table.columns:
        s = spec.adaptive
        return A.sequential_verdicts(table, start=s["start"], step=s["step"], max_seeds=s["max"],
                                     margin=margin, alpha=alpha, direction=spec.direction), margin
    return A.verdicts(table, margin=margin, alpha=alpha, direction=spec.direction), margin


def _pilot_lines(spec: StudySpec, trials: Sequence[FrozenTrial], workers: int) -> list[str]:
    judged = verdict_table(spec, trials)
    if judged is None:
        return []
    table, margin = judged
    units = _Units(spec.metric)
    n_column = "n_pairs" if "n_pairs" in table.columns else "n_seeds"
    margin_text = (f"margin ±{units(margin, sign=False)}" if margin is not None
                   else "no margin (no 'no effect')")
    lines = [f"After the pilot ({margin_text}, confidence {spec.resolve.get('confidence', 0.95)}):",
             f"  {'trick':<28} {'effect':>11} {'sd':>10} {'seeds':>5}  verdict"]
    most = 0
    for _, row in table.iterrows():
        n = int(row[n_column])
        verdict = str(row["verdict"])
        if verdict == "unresolved":
            needed = row["seeds_needed"]
            if isinstance(needed, float) and math.isinf(needed):
                verdict += ": more than 100 more seeds per arm at this spread"
            elif isinstance(needed, (int, float)) and math.isfinite(needed):
                total = n + int(needed)
                most = max(most, total)
                verdict += f": about {int(needed)} more seeds per arm ({total} in all) at this spread"
        lines.append(f"  {row['label']!s:<28} {units(float(row['effect'])):>11} "
                     f"{units(float(row['sd']), sign=False):>10} {n:>5}  {verdict}")
    if most:
        lines.append(_advice(spec, trials, most, workers))
    return lines


def _advice(spec: StudySpec, trials: Sequence[FrozenTrial], most: int, workers: int) -> str:
    """How to get ``most`` seeds per arm: a new fixed study (its seeds are part of its recipe), or
    adaptive rounds (this study's, up to its ``seeds.max``; past it a new study's)."""
    seconds = _per_arm_seconds(trials)
    held = {arm: sum(1 for (a, _), t in pair_values(trials).items() if a == arm and is_finished(t))
            for arm in spec.arms}
    s = spec.adaptive
    if s is not None and most <= s["max"]:
        more = {arm: max(0, most - n) for arm, n in held.items()}
        cost = _cost(more, seconds, workers)
        when = f", about {_clock(cost)}" if cost is not None else ""
        return (f"To resolve every trick at this spread: {most} seeds per arm, {sum(more.values())} more "
                f"runs{when}; this study's rounds add them (up to seeds.max={s['max']}): "
                f"ablate sweep {spec.name}")
    runs = dict.fromkeys(spec.arms, most)
    cost = _cost(runs, seconds, workers)
    plural = "s" if workers != 1 else ""
    when = f", about {_clock(cost)} with {workers} worker{plural}" if cost is not None else ""
    start = s["start"] if s is not None else 3
    adaptive = f"'seeds={{start: {start}, step: 2, max: {2 * most}}}'"
    return (f"To resolve every trick at this spread: {most} seeds per arm ({most * len(spec.arms)} "
            f"runs{when}), a new study as the seeds are part of a study's recipe: ablate sweep "
            f"{spec.name} seeds={most} name={spec.name}_{most}; or seeds only where a trick is open: "
            f"ablate sweep {spec.name} {adaptive} name={spec.name}_adaptive")


def plan_text(spec: StudySpec) -> str:
    """The plan of ``spec`` (see the module docstring); reads the storage, writes nothing."""
    workers = len(worker_devices(spec))
    trials = _trials(spec)
    lines = _design_lines(spec, workers)
    lines.append(f"Storage: {redact(spec.storage)}" + ("" if trials is not None else " (no such study yet)"))
    lines += _time_lines(spec, trials, workers)
    if trials and spec.design:
        lines += _pilot_lines(spec, trials, workers)
    return "\n".join(lines)


def run_plan(name: str, overrides: Sequence[str] = ()) -> int:
    """``ablate plan <study> [overrides]``: print the plan; the process exit code."""
    print(plan_text(compose_study(name, overrides)), flush=True)
    return 0
