"""Adaptive seeds in a sweep: after each round, queue more seeds only where a verdict is still open.

A study with ``seeds: {start, step, max}`` is queued ``start`` seeds in every arm. Once no trial
is queued or running, the supervisor reads the finished trials (arm, seed and told value, a failed
one as missing), asks :func:`ablate.analysis.next_round` for each arm's target and queues the
(arm, seed) trials that are not there yet; when the rule says done it records why on the study
(:data:`~ablate.records.ATTR_SEEDS_STOP`) and the workers stop. Everything is read from the
study, so a supervisor started again mid-round (the same command) computes the same round.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from ablate import records as R
from ablate.sweep.spec import StudySpec
from ablate.sweep.storage import retry_params

__all__ = ["next_seeds", "pair_values", "seeds_per_arm"]

_PRESENT = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def pair_values(trials: Sequence[FrozenTrial]) -> dict[tuple[str, int], FrozenTrial]:
    """The trial that counts for each (arm, seed): the last one finished, queued or running."""
    held: dict[tuple[str, int], FrozenTrial] = {}
    for t in trials:
        params = retry_params(t)
        if "arm" not in params or "seed" not in params:
            continue
        key = (str(params["arm"]), int(params["seed"]))
        if t.state in _PRESENT or t.user_attrs.get(R.ATTR_OUTCOME) == R.DIVERGED:
            held[key] = t
        else:  # a failed trial: the pair is missing unless another trial holds it
            held.setdefault(key, t)
    return held


def seeds_per_arm(study: Study, spec: StudySpec) -> dict[str, int]:
    """Seeds with a finished trial, per arm (what the parent run and the report show)."""
    counts = Counter(arm for (arm, _), t in pair_values(study.get_trials(deepcopy=False)).items()
                     if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    return {arm: counts.get(arm, 0) for arm in spec.arms}


def next_seeds(study: Study, spec: StudySpec) -> str | None:
    """One step of the rule: queue the next round, or say why the study is done.

    Returns:
        None while a round is queued or running (or was just queued); else the reason the rule
        stopped, also recorded on the study.
    """
    assert spec.adaptive is not None
    stopped = study.user_attrs.get(R.ATTR_SEEDS_STOP)
    if stopped is not None:
        return str(stopped)
    trials = study.get_trials(deepcopy=False)
    if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
        return None
    import pandas as pd  # the analysis stack: only for an adaptive study, once a round is done

    from ablate.analysis import Comparison, default_margin, next_round

    pairs = pair_values(trials)
    rows: list[dict[str, Any]] = []
    for (arm, seed), t in pairs.items():
        value = t.value if t.state == TrialState.COMPLETE and t.value is not None else math.nan
        rows.append({"arm": arm, "seed": seed, "value": float(value)})
    schedule = spec.adaptive
    margin = spec.resolve.get("margin")
    decided = next_round(pd.DataFrame(rows, columns=["arm", "seed", "value"]), "value",
                         [Comparison(c["label"], c["with_arm"], c["without_arm"]) for c in spec.comparisons],
                         start=schedule["start"], step=schedule["step"], max_seeds=schedule["max"],
                         margin=default_margin(spec.metric) if margin is None else float(margin),
                         confidence=float(spec.resolve.get("confidence", 0.95)), direction=spec.direction)
    if decided.done:
        study.set_user_attr(R.ATTR_SEEDS_STOP, decided.reason)
        return decided.reason
    complete = {key for key, t in pairs.items() if t.state in _PRESENT or
                t.user_attrs.get(R.ATTR_OUTCOME) == R.DIVERGED}
    queued = 0
    for seed in range(max(decided.targets.values())):  # seed-major, as the first round
        for arm, target in decided.targets.items():
            if seed < target and (arm, seed) not in complete:
                study.enqueue_trial({"arm": arm, "seed": seed})
                queued += 1
    print(f"seeds: {queued} more trials queued ({decided.reason})", flush=True)
    return None
