"""Sweeps: a study file composed into a spec, run by worker processes sharing one Optuna storage.

=========================  =========================================================================
module                     its one job
=========================  =========================================================================
``schema``                 the study file's dataclasses (study, sampler, pruner, launcher, confirm)
``spec``                   compose ``sweeps/<name>.yaml`` + overrides into a validated ``StudySpec``
``storage``                open a storage; trial states and counts; heartbeats; stale-trial retry
``samplers``               samplers and pruners from plain keyword arguments
``composer``               trial configs composed once per study; the study's check before it starts
``runs``                   a trial's MLflow run: its tags, and what a killed trial's run gets
``worker``                 ask -> compose -> fit -> tell, as a class of named steps; joining a study
``supervisor``             create or resume a study, start / watch / restart workers, the parent run
``rounds``                 adaptive seeds: the next round of an ablation, queued between rounds
``confirm``                a search's best trials queued again on more seeds, and their means
``plan``                   ``ablate plan``: what a sweep would run and cost
``progress``               the live display and the closing summary
``launchers``              SLURM jobs (submitit) seen as worker processes
=========================  =========================================================================

The worker (which imports torch) is not imported here: ``from ablate.sweep.worker import run_worker``.
"""

from __future__ import annotations

from ablate.sweep.composer import TrialComposer, check_trial_configs
from ablate.sweep.schema import PRUNERS, SAMPLERS, register_study_configs
from ablate.sweep.spec import StudySpec, available_studies, compose_study, load_spec
from ablate.sweep.storage import count_states, open_storage, redact
from ablate.sweep.supervisor import finish_parent, prepare_study, run_sweep, worker_threads

__all__ = [
    "PRUNERS",
    "SAMPLERS",
    "StudySpec",
    "TrialComposer",
    "available_studies",
    "check_trial_configs",
    "compose_study",
    "count_states",
    "finish_parent",
    "load_spec",
    "open_storage",
    "prepare_study",
    "redact",
    "register_study_configs",
    "run_sweep",
    "worker_threads",
]
