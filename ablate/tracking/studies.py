"""A study's MLflow parent run: created or resumed, ended with its counts and best trial; and the
runs of a trial whose worker died, ended KILLED."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ablate import records as R
from ablate.tracking.store import create_store, get_or_create_experiment, git_commit
from ablate.tracking.writer import signals_deferred

__all__ = ["attach_report", "delete_study_runs", "end_killed_runs", "finish_study_run", "open_study_run"]


def open_study_run(*, tracking_uri: str, experiment: str, name: str, storage: str, design: str | None,
                   document: str, parent_run_id: str | None = None) -> str:
    """Create a study's MLflow parent run, or mark an existing one RUNNING again (a resume).

    Args:
        tracking_uri: The MLflow store.
        experiment: Its experiment (created, with artifacts beside a SQLite store, if absent).
        name: The study name (the run's name and its ``optuna.study`` tag).
        storage: The Optuna storage, password redacted.
        design: The ablation design, or None for a search.
        document: The study spec as :meth:`StudySpec.to_json` wrote it: the ``study.json`` artifact.
        parent_run_id: The parent run of an earlier session, if any.

    Returns:
        The parent run's id.
    """
    from mlflow.tracking import MlflowClient

    create_store(tracking_uri)  # whole or not at all: a kill while MLflow makes it must not break it
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = get_or_create_experiment(client, experiment, tracking_uri)
    if parent_run_id:
        client.update_run(parent_run_id, status="RUNNING")
        return parent_run_id
    tags = {R.TAG_KIND: R.KIND_STUDY, R.TAG_STUDY: name, R.TAG_STORAGE: storage,
            R.TAG_DESIGN: design or "search", R.TAG_STATUS: R.RUNNING}
    commit = git_commit()
    if commit:
        tags[R.TAG_COMMIT] = commit
    run_id: str = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    client.log_text(run_id, document, R.ARTIFACT_STUDY)
    return run_id


def finish_study_run(*, tracking_uri: str, parent_run_id: str, status: str, counts: Mapping[str, int],
                     metric: str, best: tuple[int, float, str, Mapping[str, Any]] | None,
                     extra_tags: Mapping[str, str] | None = None) -> None:
    """End a study's parent run: counts by state, the best value, its trial, run and params.

    Args:
        status: MLflow's end status (FINISHED, KILLED).
        counts: Trials by state (``n_<state>`` metrics).
        metric: The study's metric (``best_<metric>``).
        best: ``(trial number, value, its MLflow run id, its params)`` of the best trial, if any.
        extra_tags: More tags (an ablation's seeds per arm, why adaptive seeds stopped).
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    now = int(time.time() * 1000)
    metrics = [Metric(R.count_metric(k), float(v), now, 0) for k, v in counts.items()]
    tags = [RunTag(R.TAG_STATUS, status.lower())]
    tags += [RunTag(k, str(v)) for k, v in (extra_tags or {}).items()]
    if best is not None:
        number, value, run_id, params = best
        metrics.append(Metric(R.best_metric(metric), float(value), now, 0))
        tags += [RunTag(R.TAG_BEST_TRIAL, str(number)), RunTag(R.TAG_BEST_RUN, run_id)]
        tags += [RunTag(f"{R.BEST_PARAM_PREFIX}{k}", str(v)) for k, v in params.items()]
    with signals_deferred():  # not left RUNNING by a Ctrl-C between the two writes
        client.log_batch(parent_run_id, metrics=metrics, tags=tags)
        client.set_terminated(parent_run_id, status)


def attach_report(*, tracking_uri: str, parent_run_id: str, folder: str | os.PathLike[str]) -> None:
    """Log a written report (``report.md``, ``report.html``, the figures) as artifacts of the study's
    parent run, at the root of its artifacts beside ``study.json``: MLflow's UI lists and previews them.

    A newer report replaces the files of the same name; the parent run's status is not changed.
    """
    from mlflow.tracking import MlflowClient

    with signals_deferred():
        MlflowClient(tracking_uri=tracking_uri).log_artifacts(parent_run_id, os.fspath(folder))


def end_killed_runs(*, tracking_uri: str, parent_run_id: str | None, trial_number: int,
                    run_ids: Iterable[str] = ()) -> None:
    """End KILLED the MLflow runs of a trial whose worker died before it told Optuna.

    Its run is found by the id recorded on the trial (``run_ids``), and by the study's parent run
    and the trial's number (tags of every child run): a worker killed between creating the run and
    recording its id on the trial leaves a run that only the tags lead to.

    A still RUNNING run ends KILLED. So does a FINISHED one: its worker died after ending it and
    before the tell, so the trial is queued again and its rerun's run is the one that counts; left
    FINISHED, the report would count the trial twice. (Call this only for a trial that was never
    told: a FAILED run stays as it is.)
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = set(run_ids)
    try:
        if parent_run_id:
            experiment = client.get_run(parent_run_id).info.experiment_id
            found = client.search_runs([experiment], filter_string=(
                f"tags.`{R.TAG_PARENT}` = '{parent_run_id}' "
                f"and tags.`{R.TAG_TRIAL_NUMBER}` = '{trial_number}'"))
            runs |= {r.info.run_id for r in found}
    except Exception:  # noqa: BLE001, S110 - the store is unreachable: the id on the trial is all there is
        pass
    for run_id in runs:
        try:
            info = client.get_run(run_id).info
            status = info.status
            if status not in ("RUNNING", "FINISHED"):
                continue
            if status == "FINISHED":
                client.set_tag(run_id, R.TAG_ERROR, f"its worker died before trial {trial_number} was told "
                               "to Optuna; the trial was queued again")
            client.set_tag(run_id, R.TAG_STATUS, R.KILLED)
            if info.run_name:  # its name shows it, as every killed run's does
                client.update_run(run_id, name=R.marked_run_name(info.run_name, R.KILLED))
            client.set_terminated(run_id, "KILLED")
        except Exception:  # noqa: BLE001, S110 - the run may never have been created
            pass


def delete_study_runs(*, tracking_uri: str, parent_run_id: str) -> int:
    """Mark a study's parent run and every child run deleted (``ablate studies delete``).

    Returns:
        How many runs were marked deleted (0 when the parent run is no longer in the store).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        experiment = client.get_run(parent_run_id).info.experiment_id
    except MlflowException:
        return 0
    children = client.search_runs([experiment], filter_string=f"tags.`{R.TAG_PARENT}` = '{parent_run_id}'",
                                  max_results=50000)
    ids = [r.info.run_id for r in children] + [parent_run_id]
    for run_id in ids:
        client.delete_run(run_id)
    return len(ids)
