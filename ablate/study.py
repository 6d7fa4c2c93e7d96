"""Study files: schema, composition from ``sweeps/``, samplers, pruners and storages.

A study file (``sweeps/<name>.yaml``) names its sampler and pruner in its defaults list; every
field can be overridden from the command line (``ablate sweep tricks_digits n_trials=40
pruner=hyperband workers=2``). A ``sweeps/`` folder in the working directory is searched before the
shipped one, so users keep their own studies beside their data.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from ablate.errors import AblateError, ConfigError

__all__ = [
    "SWEEPS_DIR",
    "StudySpec",
    "build_pruner",
    "build_sampler",
    "compose_study",
    "open_storage",
    "study_search_path",
]

SWEEPS_DIR = Path(__file__).resolve().parent.parent / "sweeps"
SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "gp", "bruteforce")
PRUNERS = ("none", "median", "percentile", "successive_halving", "hyperband", "patient", "threshold")
DIRECTIONS = ("maximize", "minimize")


# --- schemas: field names are the Optuna constructors' keyword arguments ---------------------------


@dataclass
class SamplerConfig:
    name: str = MISSING
    seed: Optional[int] = 0  # worker i uses seed + i, so parallel workers do not draw alike


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
    lower: Optional[float] = None
    upper: Optional[float] = None
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class LauncherConfig:
    name: str = MISSING  # local | slurm


@dataclass
class SlurmLauncherConfig(LauncherConfig):
    cluster: Optional[str] = None  # None = auto; "local" runs the jobs on this machine
    partition: Optional[str] = None
    timeout_min: int = 60
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: float = 8.0
    additional: dict[str, Any] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)


@dataclass
class StudyConfig:
    name: Optional[str] = None  # default: the study file's name
    metric: str = "val_acc"  # reported every epoch (pruning) and optimised (its best epoch)
    direction: str = "maximize"
    fixed: dict[str, Any] = field(default_factory=dict)  # overrides shared by every trial
    params: dict[str, Any] = field(default_factory=dict)  # the search space (sweeper grammar)
    sampler: SamplerConfig = MISSING
    pruner: PrunerConfig = MISSING
    n_trials: Optional[int] = 20  # finished trials (complete, pruned or diverged) to reach
    timeout: Optional[float] = None  # seconds; no new trial starts after it
    workers: int = 1
    storage: Optional[str] = None  # Optuna storage URL or journal file; null = <out_dir>/journal.log
    out_dir: Optional[str] = None  # null = runs/<name>
    devices: list[int] = field(default_factory=list)  # CUDA device ids; empty = no pinning
    trials_per_device: int = 1
    experiment: Optional[str] = None  # MLflow experiment; null = the study name
    # RDB storages: a running trial whose worker (on any machine) has not heart-beaten for
    # grace_period seconds is failed and queued again by the next worker that asks.
    heartbeat_interval: int = 60
    grace_period: int = 180
    launcher: Any = None  # local worker processes (null) or slurm (submitit)
    # Ablations (design set): arms x seeds instead of a search over params.
    design: Optional[str] = None  # leave_one_out | add_one_in | cumulative | factorial
    reference: Any = None  # the full recipe {config path: value}, or best_of:<study>
    tricks: Any = None  # [config path, ...] or {config path: off value}; null = the menu's off value
    seeds: int = 5  # per arm; the same seeds 0..n-1 in every arm, so comparisons are paired


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
    from ablate.config import store_schemas

    store_schemas("base_study", StudyConfig, _SCHEMAS)


# --- the resolved study ----------------------------------------------------------------------------


def _flat(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"epochs": 3}}`` and ``{"trainer.epochs": 3}`` both become the dotted form."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@dataclass(frozen=True)
class StudySpec:
    """A composed, validated study: what to search, how, and where results go."""

    name: str
    metric: str
    direction: str
    fixed: dict[str, Any]
    params: dict[str, Any]
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    n_trials: int | None
    timeout: float | None
    workers: int
    storage: str
    out_dir: str
    devices: list[int]
    trials_per_device: int
    experiment: str
    tracking_uri: str = ""  # the trials' MLflow store, made absolute when the study starts
    heartbeat_interval: int = 60
    grace_period: int = 180
    launcher: dict[str, Any] = field(default_factory=lambda: {"name": "local"})
    design: str | None = None
    arms: dict[str, list[str]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    comparisons: list[dict[str, str]] = field(default_factory=list)
    factors: dict[str, dict[str, bool]] = field(default_factory=dict)

    @property
    def recipe(self) -> dict[str, Any]:
        """What defines the study's trials; a resumed or joined study must match it exactly."""
        return {"metric": self.metric, "direction": self.direction, "fixed": self.fixed,
                "params": self.params, "design": self.design, "arms": self.arms, "seeds": self.seeds}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StudySpec:
        return cls(**json.loads(text))

    def space(self) -> Any:
        """A :class:`~ablate.space.SearchSpace`, or an :class:`~ablate.space.AblationSpace`."""
        from ablate.space import AblationSpace, fixed_overrides, parse_space

        if self.design:
            return AblationSpace(self.arms, self.seeds, fixed_overrides(self.fixed))
        return parse_space(self.params, self.fixed)


def study_search_path(cwd: str | Path | None = None) -> list[Path]:
    """Folders searched for study files, first match wins: ``./sweeps`` then the shipped one."""
    local = Path(cwd or os.getcwd()).resolve() / "sweeps"
    return [p for p in dict.fromkeys([local, SWEEPS_DIR]) if p.is_dir()]


def available_studies(cwd: str | Path | None = None) -> list[str]:
    names: set[str] = set()
    for folder in study_search_path(cwd):
        names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)


def _check(spec: StudySpec) -> None:
    if spec.direction not in DIRECTIONS:
        raise ConfigError("direction", spec.direction, "one of: " + ", ".join(DIRECTIONS))
    if spec.sampler["name"] not in SAMPLERS:
        raise ConfigError("sampler", spec.sampler["name"], "one of: " + ", ".join(SAMPLERS))
    if spec.pruner["name"] not in PRUNERS:
        raise ConfigError("pruner", spec.pruner["name"], "one of: " + ", ".join(PRUNERS))
    if spec.n_trials is None and spec.timeout is None:
        raise ConfigError("n_trials", None, "a number >= 1 (or set timeout)")
    if spec.n_trials is not None and spec.n_trials < 1:
        raise ConfigError("n_trials", spec.n_trials, "a number >= 1")
    if spec.timeout is not None and spec.timeout <= 0:
        raise ConfigError("timeout", spec.timeout, "a number of seconds > 0")
    if spec.launcher.get("name") not in ("local", "slurm"):
        raise ConfigError("launcher", spec.launcher.get("name"), "one of: local, slurm")
    if not isinstance(spec.heartbeat_interval, int) or spec.heartbeat_interval < 1:
        raise ConfigError("heartbeat_interval", spec.heartbeat_interval, "a whole number of seconds >= 1")
    if not isinstance(spec.grace_period, int) or spec.grace_period <= spec.heartbeat_interval:
        raise ConfigError("grace_period", spec.grace_period,
                          f"a whole number of seconds > heartbeat_interval ({spec.heartbeat_interval})")
    if spec.workers < 1:
        raise ConfigError("workers", spec.workers, "a number >= 1")
    if spec.trials_per_device < 1:
        raise ConfigError("trials_per_device", spec.trials_per_device, "a number >= 1")
    if any(not isinstance(d, int) or d < 0 for d in spec.devices):
        raise ConfigError("devices", spec.devices, "a list of CUDA device indices like [0,1]")
    if not spec.metric:
        raise ConfigError("metric", spec.metric, "a per-epoch metric such as val_acc or val_loss")


def compose_study(name: str, overrides: Sequence[str] = (), *, cwd: str | Path | None = None) -> StudySpec:
    """Compose ``sweeps/<name>.yaml`` with CLI overrides into a validated :class:`StudySpec`.

    Raises:
        ConfigError: unknown study, unknown sampler / pruner, wrong types or values.
    """
    from hydra import compose as hydra_compose

    from ablate.config import hydra_at, translate_compose_error

    folders = study_search_path(cwd)
    home = next((f for f in folders if (f / f"{name}.yaml").is_file()), None)
    if home is None:
        raise ConfigError("study", name, "one of: " + ", ".join(available_studies(cwd))
                          + " (files in ./sweeps or the shipped sweeps/)")
    register_study_configs()
    others = ",".join(f"file://{f}" for f in folders if f != home)
    extra = [f"hydra.searchpath=[{others}]"] if others else []
    study_overrides, fixed, params = split_overrides(overrides)
    try:
        hydra_at(home)
        cfg = hydra_compose(config_name=name, overrides=[*extra, *study_overrides])
    except Exception as exc:
        translated = translate_compose_error(exc)
        if translated is None:
            raise
        raise translated from exc
    return _spec_from(cfg, name, cwd, fixed=fixed, params=params)


_STUDY_FIELDS = {f.name for f in dataclasses.fields(StudyConfig)}


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Sort command-line overrides into study fields, trial overrides and search-space entries.

    ``n_trials=40``, ``pruner=hyperband``, ``sampler.seed=1`` set study fields;
    ``params.optimizer.lr='interval(1e-3, 0.1)'`` sets a searched parameter (its key may contain
    dots, which Hydra's own syntax cannot address); ``fixed.K=V`` and any other ``K=V`` fix a trial
    field for every trial (``trainer.epochs=5``), replacing a searched parameter of that name.
    """
    study, fixed, params = [], {}, {}
    for override in overrides:
        key, sep, value = override.partition("=")
        bare = key.lstrip("+~")
        head = bare.split(".", 1)[0]
        if not sep or head not in ("fixed", "params") and head in _STUDY_FIELDS:
            study.append(override)
        elif head == "params" and "." in bare:
            params[bare.split(".", 1)[1]] = value
        else:
            fixed[bare.split(".", 1)[1] if head == "fixed" and "." in bare else bare] = value
    return study, fixed, params


def _spec_from(cfg: DictConfig, file_name: str, cwd: str | Path | None, *,
               fixed: Mapping[str, str], params: Mapping[str, str]) -> StudySpec:
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    raw["params"] = {k: v for k, v in _flat(raw["params"]).items() if k not in fixed}
    raw["params"].update(params)
    raw["fixed"] = {k: v for k, v in _flat(raw["fixed"]).items() if k not in params}
    raw["fixed"].update(fixed)
    name = raw.get("name") or file_name
    base = Path(cwd or os.getcwd()).resolve()
    out_dir = Path(raw.get("out_dir") or f"runs/{name}")
    out_dir = out_dir if out_dir.is_absolute() else base / out_dir
    design = _ablation(raw, base)
    storage = raw.get("storage") or str(out_dir / "journal.log")
    if "://" not in storage and not Path(storage).is_absolute():
        storage = str(base / storage)
    spec = StudySpec(
        name=name, metric=raw["metric"], direction=raw["direction"], fixed=raw["fixed"],
        params=raw["params"], sampler=raw["sampler"], pruner=raw["pruner"],
        n_trials=raw["n_trials"], timeout=raw["timeout"], workers=raw["workers"], storage=storage,
        out_dir=str(out_dir), devices=list(raw["devices"]), trials_per_device=raw["trials_per_device"],
        experiment=raw.get("experiment") or name, launcher=raw.get("launcher") or {"name": "local"},
        heartbeat_interval=raw["heartbeat_interval"], grace_period=raw["grace_period"],
        **design)
    _check(spec)
    return spec


def _ablation(raw: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """The arms, seeds and comparisons of an ablation study (nothing for a search)."""
    from ablate.ablation import build_design, resolve_reference

    if not raw.get("design"):
        return {}
    seeds = raw.get("seeds")
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError("seeds", seeds, "a number of seeds per arm >= 1")
    reference = _flat(resolve_reference(raw.get("reference"), cwd=cwd))
    design = build_design(raw["design"], reference=reference, tricks=raw.get("tricks"))
    raw["n_trials"] = len(design.arms) * seeds  # the design is the budget
    raw["params"] = {}
    return {"design": raw["design"], "arms": design.arms, "seeds": list(range(seeds)),
            "comparisons": design.comparisons, "factors": design.factors}


# --- Optuna objects ------------------------------------------------------------------------------


def _kwargs(node: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k != "name"}


def build_sampler(spec: StudySpec, *, worker_index: int = 0) -> Any:
    """The study's sampler; each worker offsets the seed by its index."""
    import optuna

    opts = _kwargs(spec.sampler)
    if opts.get("seed") is not None:
        opts["seed"] = int(opts["seed"]) + worker_index
    name = spec.sampler["name"]
    if name == "grid":
        return optuna.samplers.GridSampler(_grid(spec), seed=opts.get("seed"))
    classes = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
               "cmaes": optuna.samplers.CmaEsSampler, "qmc": optuna.samplers.QMCSampler,
               "gp": optuna.samplers.GPSampler, "bruteforce": optuna.samplers.BruteForceSampler}
    return classes[name](**opts)


def _grid(spec: StudySpec) -> dict[str, list[Any]]:
    from optuna.distributions import CategoricalDistribution

    grid: dict[str, list[Any]] = {}
    for key, dist in spec.space().distributions.items():
        if isinstance(dist, CategoricalDistribution):
            grid[key] = list(dist.choices)
        elif getattr(dist, "step", None) is not None:
            n = round((dist.high - dist.low) / dist.step) + 1
            grid[key] = [dist.low + i * dist.step for i in range(n)]
        else:
            raise ConfigError(f"params.{key}", spec.params[key],
                              "choice(...) or range(...) with the grid sampler (an interval has no grid)")
    return grid


def build_pruner(spec: StudySpec, *, epochs: int) -> Any:
    """The study's pruner. Pruners are not stored with a study: every worker builds the same one."""
    import optuna

    name, opts = spec.pruner["name"], _kwargs(spec.pruner)
    p = optuna.pruners
    if name == "none":
        return p.NopPruner()
    if name == "median":
        return p.MedianPruner(**opts)
    if name == "percentile":
        return p.PercentilePruner(**opts)
    if name == "successive_halving":
        return p.SuccessiveHalvingPruner(**opts)
    if name == "hyperband":
        if opts.get("max_resource") == "auto":
            opts["max_resource"] = epochs  # explicit, so every worker agrees on the brackets
        return p.HyperbandPruner(**opts)
    if name == "patient":
        return p.PatientPruner(None, **opts)
    if name == "threshold":
        return p.ThresholdPruner(**opts)
    raise ConfigError("pruner", name, "one of: " + ", ".join(PRUNERS))


def open_storage(url: str, *, create_dirs: bool = False, heartbeat_interval: int | None = 60,
                 grace_period: int | None = 180) -> Any:
    """An Optuna storage: a JournalStorage file (a path) or an RDB URL (``postgresql://...``).

    An RDB storage records each running trial's heartbeat every ``heartbeat_interval`` seconds; a
    trial silent for ``grace_period`` seconds (its worker died, on whatever machine) is failed and
    queued again by Optuna's retry callback (:func:`ablate.worker.stale_trial_callback`). A journal
    file has no heartbeats (the supervisor of the machine that ran the trial retries it).

    Raises:
        AblateError: the storage cannot be reached (one line; the password is never shown).
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" not in url:
        path = Path(url)
        if not path.parent.is_dir():
            if not create_dirs:
                raise AblateError(f"storage: {url!r} does not exist (no study has been run there)")
            path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if not heartbeat_interval:
                return optuna.storages.RDBStorage(url)
            from ablate.worker import stale_trial_callback

            keyword, callback = stale_trial_callback()
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval,
                                              grace_period=grace_period, **{keyword: callback})
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        raise AblateError(f"storage: cannot reach {redact(url)} ({redact_text(reason, url)})") from None


def redact(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def redact_text(text: str, url: str) -> str:
    from urllib.parse import urlsplit

    password = urlsplit(url).password if "://" in url else None
    return text.replace(password, "***") if password else text
