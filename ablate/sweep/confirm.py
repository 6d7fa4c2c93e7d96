"""A search's confirmation: after its ``n_trials``, its best trials trained again on more seeds.

A search with ``confirm: {top, seeds}`` runs its ``n_trials`` as usual. Once they finished, the
supervisor ranks the finished search trials (:func:`~ablate.sweep.storage.ranked_trials`: complete,
never pruned, failed or diverged), and queues, in the same Optuna study, one trial per (candidate,
seed): the candidate's parameters with ``seed`` = its own seed + 1 ... + ``seeds`` and
:data:`~ablate.records.ATTR_CONFIRM_OF` = its number, as queued values (``Study.enqueue_trial``),
so a retry of a killed one keeps them. The workers run them like any queued trial (each one MLflow
child run, tagged :data:`~ablate.records.TAG_CONFIRM_OF`), outside ``n_trials`` and never pruned.
When none is queued or running, the supervisor records on the study that the confirmation is done
(:data:`~ablate.records.ATTR_CONFIRMED`) and the workers stop. Everything is read from the study,
so a supervisor started again (the same command) queues exactly the pairs still missing. Each
confirmed trial's mean over its seeds is :func:`ablate.sweep.storage.confirmed`.

What the sampler sees: a confirmation trial holds the candidate's parameters as its own (so the
intersection search space of a multivariate TPE, CMA-ES or GP sampler stays the whole space; a
trial without them would empty it) and its one seed's value. In the sweep that queues them the
sampler never samples again (the search's ``n_trials`` are done). A later sweep of the same study
with a larger ``n_trials`` lets TPE see them as what they are: repeated, noisy evaluations of good
points, which weigh its "good" density a little more towards them. ``best_trial`` and the ranking
leave them out, so one lucky seed is never the best trial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from ablate import records as R
from ablate.sweep.spec import StudySpec
from ablate.sweep.storage import confirm_of, is_finished, ranked_trials, retry_params

__all__ = ["confirmation_done", "confirmation_seeds", "next_confirmations", "search_budget", "search_done"]

_LIVE = (TrialState.RUNNING, TrialState.WAITING)


def search_budget(spec: StudySpec) -> int | None:
    """The search's own trials: ``n_trials``, or a grid's points when it has fewer (as the workers)."""
    if spec.sampler.get("name") != "grid" or spec.n_trials is None:
        return spec.n_trials
    from ablate.sweep.samplers import grid_of

    points = math.prod(len(v) for v in grid_of(spec.space.distributions, spec.params).values())
    return min(spec.n_trials, points)


def search_done(study: Study, spec: StudySpec, trials: Sequence[FrozenTrial]) -> bool:
    """The search's own trials are over: ``n_trials`` of them finished, or the sampler ran out of
    points (:data:`~ablate.records.ATTR_SEARCH_EXHAUSTED`) and none is queued or running."""
    search = [t for t in trials if confirm_of(t) is None]
    budget = search_budget(spec)
    if budget is not None and sum(map(is_finished, search)) >= budget:
        return True
    return R.ATTR_SEARCH_EXHAUSTED in study.user_attrs and not any(t.state in _LIVE for t in search)


def confirmation_seeds(base_seed: int, seeds: int) -> list[int]:
    """The seeds a candidate is confirmed on: those after its own, ``base_seed + 1 .. + seeds``."""
    return [base_seed + i for i in range(1, seeds + 1)]


def _done_mark(confirm: Mapping[str, int], trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """What a finished confirmation is recorded for: its top and seeds, and the search trials it saw
    finished (a later sweep with a larger ``n_trials`` makes it stale: its new best get confirmed)."""
    search = sum(1 for t in trials if is_finished(t) and confirm_of(t) is None)
    return {"top": int(confirm["top"]), "seeds": int(confirm["seeds"]), "search": search}


def confirmation_done(study: Study, confirm: Mapping[str, int], trials: Sequence[FrozenTrial]) -> str | None:
    """What was confirmed, when the study records this ``confirm`` done over these trials; else None."""
    mark = study.user_attrs.get(R.ATTR_CONFIRMED)
    if not isinstance(mark, Mapping):
        return None
    if {k: mark.get(k) for k in ("top", "seeds", "search")} != _done_mark(confirm, trials):
        return None
    return str(mark.get("reason", "confirmed"))


def next_confirmations(study: Study, spec: StudySpec, base_seed: int) -> str | None:
    """One look: queue the confirmation runs still missing, or say that the confirmation is done.

    Args:
        base_seed: The seed of the search's trials (the composed config's ``seed``).

    Returns:
        None while the search runs, or while confirmation runs are queued or running (or were just
        queued); else what was confirmed, also recorded on the study.
    """
    confirm = spec.confirm
    assert confirm is not None
    trials = study.get_trials(deepcopy=False)
    done = confirmation_done(study, confirm, trials)
    if done is not None:
        return done
    if not search_done(study, spec, trials):
        return None
    candidates = ranked_trials(trials, spec.direction)[:confirm["top"]]
    held = set()
    for t in trials:
        of = confirm_of(t)
        if of is not None:  # any state: a failed one is missing (as a failed seed of an ablation), not redone
            held.add((of, int(retry_params(t)["seed"])))
    queued = 0
    for seed in confirmation_seeds(base_seed, confirm["seeds"]):  # seed-major: every candidate gets its next
        for c in candidates:
            if (c.number, seed) not in held:
                study.enqueue_trial({**c.params, "seed": seed, R.ATTR_CONFIRM_OF: c.number},
                                    user_attrs={R.ATTR_CONFIRM_OF: c.number})
                queued += 1
    if queued:
        print(f"confirm: {queued} trials queued: trials {', '.join(str(c.number) for c in candidates)} "
              f"on {confirm['seeds']} more seeds each", flush=True)
        return None
    if any(t.state in _LIVE and confirm_of(t) is not None for t in trials):
        return None
    reason = (f"trials {', '.join(str(c.number) for c in candidates)} on {confirm['seeds']} more seeds each"
              if candidates else "no complete trial to confirm")
    study.set_user_attr(R.ATTR_CONFIRMED, {**_done_mark(confirm, trials), "reason": reason})
    return reason
