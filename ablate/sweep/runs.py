"""Where a trial meets its MLflow run: the tags a trial's run carries, and what a killed trial's run gets.

The worker and the supervisor both use these, so a trial's run is tagged, and a dead worker's run
ended, one way. MLflow itself is written by :mod:`ablate.tracking`.
"""

from __future__ import annotations

from optuna.study import Study
from optuna.trial import FrozenTrial

from ablate import records as R
from ablate.sweep.storage import KilledHook, fail_and_retry, retry_params
from ablate.tracking import end_killed_runs, signals_deferred

__all__ = ["fail_stale_trial", "killed_hook", "run_name", "trial_tags"]


def run_name(study: str, number: int) -> str:
    """``tricks_digits-t0007``: the MLflow run name of a study's trial."""
    return f"{study}-t{number:04d}"


def trial_tags(*, study: str, number: int, worker: str, device: str, arm: str | None = None,
               design: str | None = None, confirm_of: int | None = None, fused: int = 1) -> dict[str, str]:
    """The tags a trial's run starts with (its outcome's tags are added when it ends); a confirmation
    run names the search trial it trains again (``confirm_of``), a fused one how many seeds trained
    together (``fused``)."""
    tags = {R.TAG_STUDY: study, R.TAG_TRIAL_NUMBER: str(number), R.TAG_WORKER: worker, R.TAG_DEVICE: device}
    if design:
        tags.update({R.TAG_ARM: str(arm), R.TAG_DESIGN: design})
    if confirm_of is not None:
        tags[R.TAG_CONFIRM_OF] = str(confirm_of)
    if fused > 1:
        tags[R.TAG_FUSED] = str(fused)
    return tags


def killed_hook(tracking_uri: str) -> KilledHook:
    """What happens to the MLflow run of a trial whose worker died: it ends KILLED.

    See :func:`ablate.tracking.end_killed_runs`.
    """

    def end(study: Study, trial: FrozenTrial) -> None:
        if not tracking_uri:
            return
        run = trial.user_attrs.get(R.ATTR_RUN)
        end_killed_runs(tracking_uri=tracking_uri, parent_run_id=study.user_attrs.get(R.ATTR_PARENT),
                        trial_number=trial.number, run_ids=[run] if run else [])

    return end


def fail_stale_trial(study: Study, trial: FrozenTrial, on_killed: KilledHook) -> bool:
    """Close a RUNNING trial whose worker died (FAIL), queue a retry, then ``on_killed`` (its run KILLED).

    Ctrl-C waits until all are written: a supervisor interrupted in between left the run RUNNING
    with its trial already failed. A trial that someone else closed meanwhile (its worker told it
    after all) is left alone, and so is its run, which may be its finished result.

    Returns:
        False when the trial had already been closed.
    """
    with signals_deferred():
        if not fail_and_retry(study, trial.number, retry_params(trial)):
            return False
        on_killed(study, trial)
    return True
