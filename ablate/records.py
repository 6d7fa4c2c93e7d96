"""What a run and a trial record: the names a writer and a reader share, defined once.

MLflow runs are written by :mod:`ablate.tracking` (driven by :mod:`ablate.sweep`) and read back by
:mod:`ablate.report.collect`; Optuna trials are written and read by :mod:`ablate.sweep`. Every tag,
param prefix, metric name, artifact name, trial attribute and outcome state they exchange is a
constant here, so renaming one is a one-line change that every writer and reader follows, and
:mod:`tests.test_layout` refuses the literal anywhere else. This module imports neither Optuna nor
MLflow (nor torch): it is plain names and one pure function, :func:`best_value`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = [
    "ARTIFACT_CONFIG",
    "ARTIFACT_STUDY",
    "ATTR_CONFIRMED",
    "ATTR_CONFIRM_OF",
    "ATTR_DEVICE",
    "ATTR_EPOCHS_RUN",
    "ATTR_ERROR",
    "ATTR_HEARTBEAT",
    "ATTR_OUTCOME",
    "ATTR_PARENT",
    "ATTR_RETRY_OF",
    "ATTR_RUN",
    "ATTR_SEARCH_EXHAUSTED",
    "ATTR_SEEDS_STOP",
    "ATTR_SESSION_START",
    "ATTR_SPEC",
    "ATTR_TRAIN_TIME",
    "ATTR_WORKER",
    "BEST_PARAM_PREFIX",
    "COMPLETED",
    "DIRECTIONS",
    "DIVERGED",
    "EXPERIMENT_KIND_TRAINING",
    "FAILED",
    "FINISHED",
    "KEPT_STATES",
    "KILLED",
    "KIND_STUDY",
    "MARKED_STATES",
    "MLFLOW_STATUSES",
    "OUTCOMES",
    "PARAM_SAMPLED",
    "PRUNED",
    "RUNNING",
    "RUN_STATES",
    "SURPLUS",
    "TAGS",
    "TAG_ARM",
    "TAG_BEST_RUN",
    "TAG_BEST_TRIAL",
    "TAG_COMMIT",
    "TAG_CONFIRMED",
    "TAG_CONFIRM_OF",
    "TAG_DATASET",
    "TAG_DESIGN",
    "TAG_DEVICE",
    "TAG_ERROR",
    "TAG_EXPERIMENT_KIND",
    "TAG_FUSED",
    "TAG_HARDWARE",
    "TAG_KIND",
    "TAG_OPTUNA_STATE",
    "TAG_PARENT",
    "TAG_PRUNED_AT",
    "TAG_PYTHON",
    "TAG_REPEATS",
    "TAG_SEEDS_PER_ARM",
    "TAG_SEEDS_STOP",
    "TAG_STATUS",
    "TAG_STOP_REASON",
    "TAG_STORAGE",
    "TAG_STUDY",
    "TAG_TRIAL_NUMBER",
    "TAG_TRICKS",
    "TAG_VERSIONS",
    "TAG_WORKER",
    "best_metric",
    "best_value",
    "count_metric",
    "marked_run_name",
    "run_state",
]

# --- MLflow tags ----------------------------------------------------------------------------------
# Every run (ablate train, a sweep's trial):
TAG_DATASET: Final = "dataset"  # data.name of the run's config
TAG_TRICKS: Final = "tricks"  # the recipe in one line (config.trick_summary)
TAG_STATUS: Final = "status"  # ablate's own state of the run, one of RUN_STATES (MLflow's is coarser)
TAG_STOP_REASON: Final = "stop_reason"  # why fit stopped: train.STOP_REASONS, or "pruned"
TAG_ERROR: Final = "error"  # a failed or killed run: the exception, one line
TAG_VERSIONS: Final = "ablate.versions"  # "ablate 0.1.0, torch 2.14.1, ..."
TAG_HARDWARE: Final = "ablate.hardware"  # "CPU: ... (2 cores)", with the GPU first when one trained
TAG_PYTHON: Final = "ablate.python"
TAG_COMMIT: Final = "mlflow.source.git.commit"  # MLflow's own name, so its UI shows it
TAG_PARENT: Final = "mlflow.parentRunId"  # MLflow's own name: a trial's study run
# A sweep's trial run:
TAG_STUDY: Final = "optuna.study"  # the study name (also on the study's parent run)
TAG_TRIAL_NUMBER: Final = "optuna.trial_number"
TAG_OPTUNA_STATE: Final = "optuna.state"  # COMPLETE | PRUNED | FAIL, as Optuna was told
TAG_WORKER: Final = "worker"  # host:pid of the worker that trained it
TAG_DEVICE: Final = "device"
TAG_ARM: Final = "ablate.arm"  # an ablation's arm (also the report's grouping)
TAG_DESIGN: Final = "ablate.design"  # leave_one_out | ... on trials; also "search" on a parent run
TAG_PRUNED_AT: Final = "pruned_at_epoch"
TAG_CONFIRM_OF: Final = "ablate.confirm_of"  # a confirmation run: the search trial it trains again
TAG_FUSED: Final = "ablate.fused"  # seeds trained together as one fused model with this run's (fuse_seeds)
TAG_REPEATS: Final = "ablate.repeats"  # a search trial's seeds (repeats): its run holds their mean
# A study's parent run:
TAG_KIND: Final = "ablate.kind"  # KIND_STUDY marks a parent run
TAG_STORAGE: Final = "optuna.storage"  # the Optuna storage, password redacted
TAG_BEST_TRIAL: Final = "best_trial"
TAG_BEST_RUN: Final = "best_run_id"
BEST_PARAM_PREFIX: Final = "best."  # best.<param> = value of the best trial
TAG_SEEDS_PER_ARM: Final = "seeds_per_arm"  # JSON {arm: seeds with a finished run}
TAG_SEEDS_STOP: Final = "seeds_stop"  # adaptive seeds: why the study stopped adding seeds
TAG_CONFIRMED: Final = "confirmed"  # confirm: JSON [{trial, n, mean, ci_low, ci_high}], best first
KIND_STUDY: Final = "study"
# An MLflow experiment:
TAG_EXPERIMENT_KIND: Final = "mlflow.experimentKind"  # MLflow 3's; without it the UI opens on GenAI traces
EXPERIMENT_KIND_TRAINING: Final = "custom_model_development"  # the UI's "model training": the runs table

TAGS: Final = (TAG_DATASET, TAG_TRICKS, TAG_STATUS, TAG_STOP_REASON, TAG_ERROR, TAG_VERSIONS,
               TAG_HARDWARE, TAG_PYTHON, TAG_COMMIT, TAG_PARENT, TAG_STUDY, TAG_TRIAL_NUMBER,
               TAG_OPTUNA_STATE, TAG_WORKER, TAG_DEVICE, TAG_ARM, TAG_DESIGN, TAG_PRUNED_AT, TAG_KIND,
               TAG_STORAGE, TAG_BEST_TRIAL, TAG_BEST_RUN, TAG_SEEDS_PER_ARM, TAG_SEEDS_STOP,
               TAG_CONFIRM_OF, TAG_CONFIRMED, TAG_EXPERIMENT_KIND, TAG_FUSED, TAG_REPEATS)
"""Every tag name above (tests/test_layout.py refuses these literals outside this module)."""

# --- MLflow params and artifacts -----------------------------------------------------------------
PARAM_SAMPLED: Final = "sampled."  # sampled.<key>: a trial's searched values as the sampler drew them
ARTIFACT_CONFIG: Final = "config.yaml"  # the run's resolved config
ARTIFACT_STUDY: Final = "study.json"  # on the parent run: the study spec (StudySpec.to_json + distributions)


# --- metrics ----------------------------------------------------------------------------------------
def best_metric(metric: str) -> str:
    """The name of a run's best value of a per-epoch metric: ``val_loss`` -> ``best_val_loss``.

    Logged on every trial of a study for the study's metric (the value told to Optuna), and by
    ``fit`` for ``val_acc``; the report reads the same column.
    """
    return f"best_{metric}"


def count_metric(state: str) -> str:
    """The parent run's count of trials in ``state``: ``complete`` -> ``n_complete``."""
    return f"n_{state}"


def best_value(history: Iterable[Mapping[str, float]], metric: str, direction: str = "maximize") -> float:
    """The best finite value of ``metric`` over a run's per-epoch ``history``; NaN when none is.

    This is the value a study optimises and tells Optuna for a trial, the ``best_<metric>`` the
    trial's MLflow run records, and what the report compares.

    Args:
        history: One mapping per epoch (``RunResult.history``).
        metric: A per-epoch metric (``val_acc``, ``val_loss``, ...).
        direction: ``maximize`` or ``minimize``.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: {direction!r}; expected one of {', '.join(DIRECTIONS)}")
    values = [float(h[metric]) for h in history if metric in h and math.isfinite(float(h[metric]))]
    if not values:
        return math.nan
    return max(values) if direction == "maximize" else min(values)


DIRECTIONS: Final = ("maximize", "minimize")

# --- states ---------------------------------------------------------------------------------------
# A trial's outcome (Optuna user attribute ATTR_OUTCOME; the TAG_STATUS of its run once it ends):
COMPLETED: Final = "completed"
PRUNED: Final = "pruned"
DIVERGED: Final = "diverged"
FAILED: Final = "failed"
KILLED: Final = "killed"  # its worker died or was interrupted; queued again
SURPLUS: Final = "surplus"  # asked near the end by a worker that found the budget met: never ran
OUTCOMES: Final = (COMPLETED, PRUNED, DIVERGED, FAILED, KILLED, SURPLUS)
# TAG_STATUS values of a run; "finished" is a plain run's (ablate train) success.
RUNNING: Final = "running"
FINISHED: Final = "finished"
RUN_STATES: Final = (RUNNING, FINISHED, COMPLETED, PRUNED, DIVERGED, FAILED, KILLED)
KEPT_STATES: Final = (FINISHED, DIVERGED)
"""Run states the report's tables keep (a diverged run finished; stability counts it)."""
MLFLOW_STATUSES: Final = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")


def run_state(mlflow_status: str, tags: Mapping[str, str]) -> str:
    """finished | diverged | pruned | failed | killed | running, from MLflow's status and our tags.

    A FINISHED run is ``pruned`` or ``diverged`` when its status tag (or, for older stores, its
    Optuna state) says so; a trial's ``completed`` and a plain run's ``finished`` both read
    ``finished``.
    """
    status = mlflow_status.lower()
    tag = (tags.get(TAG_STATUS) or "").lower()
    if status == "finished":
        if tag in (PRUNED, DIVERGED):
            return tag
        if tags.get(TAG_OPTUNA_STATE) == "PRUNED":
            return PRUNED
        return FINISHED
    if status == "scheduled":
        return RUNNING
    return status  # failed | killed | running


MARKED_STATES: Final = (PRUNED, DIVERGED, FAILED, KILLED)
"""Run states a run's name shows: MLflow's own status (an icon beside the name) tells FINISHED,
FAILED and KILLED apart, but a pruned or diverged trial ends FINISHED like a completed one, and
tags are hidden columns in the runs table's default view. The name is its first column."""


def marked_run_name(name: str, state: str) -> str:
    """``tricks_digits-t0007 (pruned)``: a run's name with its state when :data:`MARKED_STATES` has it."""
    state = state.lower()
    if state not in MARKED_STATES or name.endswith(f" ({state})"):
        return name
    return f"{name} ({state})"


# --- Optuna study and trial user attributes ---------------------------------------------------------
ATTR_SEEDS_STOP: Final = "ablate.seeds_stop"  # on an adaptive study: why it added no more seeds
# On a search with confirm: {"top", "seeds", "reason"} once every confirmation run of that confirm finished
ATTR_CONFIRMED: Final = "ablate.confirmed"
# On a search whose sampler ran out of points (grid, brute force): its search is over
ATTR_SEARCH_EXHAUSTED: Final = "ablate.search_exhausted"
# A confirmation trial's queued value (Study.enqueue_trial, with "seed"), so a retry keeps it; also a
# user attribute of the trial: the number of the search trial whose parameters it trains again
ATTR_CONFIRM_OF: Final = "ablate.confirm_of"
ATTR_SPEC: Final = "ablate.spec"  # on the study: StudySpec.to_json(), so every worker runs the same recipe
ATTR_PARENT: Final = "ablate.mlflow_parent_run_id"  # on the study: its MLflow parent run
ATTR_SESSION_START: Final = "ablate.session_start"  # on the study: trials when this `ablate sweep` started
# (max_failures, and the summary's worker count, count trials from here)
ATTR_WORKER: Final = "ablate.worker"  # host:pid of the process that holds the trial
ATTR_OUTCOME: Final = "ablate.outcome"  # one of OUTCOMES
ATTR_RUN: Final = "ablate.mlflow_run_id"  # the trial's MLflow run
ATTR_RETRY_OF: Final = "ablate.retry_of"  # on a queued trial: the number of the killed trial it reruns
ATTR_HEARTBEAT: Final = "ablate.heartbeat_interval"  # on a trial whose worker records heartbeats (RDB)
ATTR_DEVICE: Final = "ablate.device"
ATTR_ERROR: Final = "ablate.error"  # a failed trial: the exception, as its run's TAG_ERROR
ATTR_EPOCHS_RUN: Final = "ablate.epochs_run"
ATTR_TRAIN_TIME: Final = "ablate.train_time"
