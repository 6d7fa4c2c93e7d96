"""The only MLflow writer: one run per ``fit``, a study's parent run, metrics in batches.

Talks to MLflow through ``MlflowClient`` with explicit run ids (no global active run), so several
runs, threads or processes never step on each other's state. Every tag, metric and artifact name
comes from :mod:`ablate.records`, which the report's reader shares. MLflow is imported inside the
functions that write: ``import mlflow`` costs ~2 s, which ``ablate train --help`` and a bad
override should not pay.

=============  ======================================================================
module         its one job
=============  ======================================================================
``store``      the experiment, artifact location, git commit, versions and hardware
``writer``     Ctrl-C held during a write; the background writer thread
``runs``       one run per ``fit``: ``RunTracker`` and ``track_run``
``studies``    a study's parent run; a killed trial's runs ended KILLED
=============  ======================================================================
"""

from __future__ import annotations

from ablate.tracking.runs import RunTracker, track_run
from ablate.tracking.store import (
           artifact_location,
           environment,
           get_or_create_experiment,
           git_commit,
           preload,
           relocate_artifacts,
)
from ablate.tracking.studies import (
    attach_report,
    delete_study_runs,
    end_killed_runs,
    finish_study_run,
    open_study_run,
)
from ablate.tracking.writer import WRITER, signals_deferred

__all__ = ["WRITER", "RunTracker", "artifact_location", "attach_report", "delete_study_runs",
           "end_killed_runs", "environment", "finish_study_run", "get_or_create_experiment", "git_commit",
           "open_study_run", "preload", "relocate_artifacts", "signals_deferred", "track_run"]
