"""The study file's schema: dataclasses registered with Hydra's ConfigStore.

Field names of the sampler and pruner schemas are the Optuna constructors' keyword arguments
(:mod:`ablate.sweep.samplers` passes them on as they are); a study file names its schema in its
defaults list (``base_study``, ``sampler: tpe``), so a typo fails at compose time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from ablate.config import store_schemas
from ablate.errors import ConfigError

__all__ = ["NAME_ALLOWED", "PRUNERS", "SAMPLERS", "ConfirmConfig", "LauncherConfig", "PrunerConfig",
           "ResolveConfig", "SamplerConfig", "StudyConfig", "check_name", "register_study_configs"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_ALLOWED = "a name matching [A-Za-z0-9][A-Za-z0-9._-]{0,99} without '..' (letters, digits, . _ -)"
"""What a study name (and a study file's name) may be: it names folders and files, never a path."""


def check_name(field_name: str, name: object) -> str:
    """``name`` if it is a safe study name (:data:`NAME_ALLOWED`).

    Raises:
        ConfigError: a path (``../x``, ``a/b``, ``/tmp/x``), ``..``, an empty or too long name.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ConfigError(field_name, name, NAME_ALLOWED)
    return name

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "gp", "bruteforce")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband", "patient", "threshold")


# --- schemas: field names are the Optuna constructors' keyword arguments ---------------------------


@dataclass
class SamplerConfig:
    name: str = MISSING
    seed: int | None = 0  # worker i uses seed + i, so parallel workers do not draw alike (not grid, qmc)


@dataclass
class TPESamplerConfig(SamplerConfig):
    n_startup_trials: int = 10
    multivariate: bool = True
    constant_liar: bool = True  # parallel workers avoid proposing what is already running


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    n_startup_trials: int = 1


@dataclass
class QMCSamplerConfig(SamplerConfig):
    qmc_type: str = "sobol"
    scramble: bool = True


@dataclass
class GPSamplerConfig(SamplerConfig):
    n_startup_trials: int = 10


@dataclass
class PrunerConfig:
    name: str = MISSING


@dataclass
class MedianPrunerConfig(PrunerConfig):
    n_startup_trials: int = 5  # trials that finish before any pruning
    n_warmup_steps: int = 3  # epochs of each trial before it can be pruned
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConfig(MedianPrunerConfig):
    percentile: float = 25.0  # prune below the 25th percentile (maximize)


@dataclass
class SuccessiveHalvingPrunerConfig(PrunerConfig):
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    min_resource: int = 1
    max_resource: Any = "auto"  # auto = trainer.epochs of the trials
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class PatientPrunerConfig(PrunerConfig):
    patience: int = 3  # epochs without improvement of the trial's own best
    min_delta: float = 0.0


@dataclass
class ThresholdPrunerConfig(PrunerConfig):
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class LauncherConfig:
    name: str = MISSING  # local | slurm


@dataclass
class SlurmLauncherConfig(LauncherConfig):
    cluster: str | None = None  # None = auto; "local" runs the jobs on this machine
    partition: str | None = None
    timeout_min: int = 60
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: float = 8.0
    additional: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)


@dataclass
class ResolveConfig:
    """How an ablation's report decides each trick's verdict (:func:`ablate.analysis.verdicts`)."""

    # Equivalence margin in the metric's units: |effect| within it is "no effect". None = 0.5
    # points for an accuracy (val_acc, values in [0, 1]: 0.005); required for any other metric.
    margin: float | None = None
    confidence: float = 0.95  # family-wise: helps/hurts by Holm and no effect by TOST at 1 - confidence


@dataclass
class ConfirmConfig:
    """A search's confirmation: its best trials trained again on more seeds (the Tuning Playbook's advice).

    After the search's ``n_trials``, the ``top`` best trials (complete ones, never pruned, failed or
    diverged) are each trained on ``seeds`` more seeds, the trial's own seed + 1, + 2, ...; the
    report's best is then the candidate with the best mean over its seeds, with its t-interval.
    """

    top: int = 3  # best trials to confirm
    seeds: int = 5  # more seeds per confirmed trial (its own run is one more)


@dataclass
class StudyConfig:
    name: str | None = None  # default: the study file's name
    metric: str = "val_acc"  # reported every epoch (pruning) and optimised (its best epoch)
    direction: str = "maximize"
    fixed: dict[str, Any] = field(default_factory=dict)  # overrides shared by every trial
    params: dict[str, Any] = field(default_factory=dict)  # the search space (sweeper grammar)
    sampler: SamplerConfig = MISSING
    pruner: PrunerConfig = MISSING
    n_trials: int | None = 20  # finished trials (complete, pruned or diverged) to reach
    # Trials failed by an exception (not killed ones) after which the sweep stops, exit code 2;
    # counted from each start of `ablate sweep`. null = max(5, n_trials // 10).
    max_failures: int | None = None
    timeout: float | None = None  # seconds; no new trial starts after it
    workers: int = 1
    storage: str | None = None  # Optuna storage URL or journal file; null = <out_dir>/journal.log
    out_dir: str | None = None  # null = runs/<name>
    devices: list[int] = field(default_factory=list)  # CUDA device ids; empty = no pinning
    trials_per_device: int = 1
    experiment: str | None = None  # MLflow experiment; null = the study name
    # RDB storages: a running trial whose worker (on any machine) has not heart-beaten for
    # grace_period seconds is failed and queued again by the next worker that asks.
    heartbeat_interval: int = 60
    grace_period: int = 180
    launcher: Any = None  # local worker processes (null) or slurm (submitit)
    # Ablations (design set): arms x seeds instead of a search over params.
    design: str | None = None  # leave_one_out | add_one_in | cumulative | factorial
    reference: Any = None  # the full recipe {config path: value}, or best_of:<study>
    tricks: Any = None  # [config path, ...] or {config path: off value}; null = the menu's off value
    # Per arm: N (the same seeds 0..N-1 in every arm, so comparisons are paired), or adaptive
    # {start: 3, step: 2, max: 30}: start seeds in every arm, then step more, round after round, in
    # the arms of comparisons still unresolved, until each has a verdict or max is reached.
    seeds: Any = 5
    resolve: ResolveConfig = field(default_factory=ResolveConfig)
    # A search only: {top: 3, seeds: 5} trains its 3 best trials on 5 more seeds each, after n_trials
    # (the fields of ConfirmConfig, checked by the spec; untyped here: OmegaConf cannot merge a
    # command line's confirm={...} into an optional structured node that is null).
    confirm: Any = None
    # Ablations: a worker trains up to this many queued seeds of one arm together, as one fused model
    # (ablate.fused); each stays one Optuna trial and one MLflow run. 1 = one at a time; auto = the
    # number measured best for the worker's device (FUSE_AUTO in ablate.sweep.spec: 1 on a CPU, 16 on CUDA).
    fuse_seeds: Any = 1
    # A search: each sampled configuration trains on this many seeds (seed, seed + 1, ...) as one fused
    # model; Optuna is told, and prunes on, their mean; each seed is an MLflow run under its trial's.
    repeats: Any = 1


_SCHEMAS: dict[str, dict[str, type]] = {
    "sampler": {"base_sampler": SamplerConfig, "base_tpe": TPESamplerConfig,
                "base_cmaes": CmaEsSamplerConfig, "base_qmc": QMCSamplerConfig,
                "base_gp": GPSamplerConfig},
    "launcher": {"base_launcher": LauncherConfig, "base_slurm": SlurmLauncherConfig},
    "pruner": {"base_pruner": PrunerConfig, "base_median": MedianPrunerConfig,
               "base_percentile": PercentilePrunerConfig,
               "base_successive_halving": SuccessiveHalvingPrunerConfig,
               "base_hyperband": HyperbandPrunerConfig, "base_patient": PatientPrunerConfig,
               "base_threshold": ThresholdPrunerConfig},
}


def register_study_configs() -> None:
    """Register the study schemas (study, sampler, pruner, launcher) with Hydra's ConfigStore."""
    store_schemas("base_study", StudyConfig, _SCHEMAS)
