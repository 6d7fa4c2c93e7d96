"""The trick menu as typed schemas, its Hydra registration, composition and validation.

Schemas are dataclasses registered with Hydra's ConfigStore by an explicit :func:`register_configs`
call; values live in ``conf/`` YAML files that name their schema in their defaults list, so a typo or
a wrong type fails when the config is composed, not at epoch 37. Ranges (``dropout < 1``,
``optimizer.lr > 0``) are checked by :func:`validate`, which reports the first bad field as one line.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from omegaconf import MISSING, DictConfig, OmegaConf

from ablate.errors import ConfigError
from ablate.menu import (
    ACTIVATIONS,
    AVERAGINGS,
    CLIPS,
    DATASETS,
    INITS,
    MODELS,
    MONITORS,
    NORMS,
    OPTIMIZERS,
    SCALINGS,
    SCHEDULES,
)

__all__ = [
    "CONF_DIR",
    "Config",
    "compose",
    "flatten",
    "register_configs",
    "trick_summary",
    "validate",
]

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"



# --- schemas -------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    name: str = MISSING
    root: str = "data"  # where torchvision files and the mnist1d cache live
    download: bool = False  # torchvision datasets only; nothing is fetched unless asked
    scaling: str = "standard"  # none | unit [0,1] | symmetric [-1,1] | standard (mean 0, std 1)
    val_fraction: float = 0.2  # of the training split
    test_fraction: float = 0.2  # of all examples, for datasets without an official test split
    data_seed: int = 0  # fixes the splits whatever the model seed


@dataclass
class ModelConfig:
    name: str = MISSING
    depth: int = 2  # hidden layers (mlp), conv blocks (cnn), residual blocks (resnet)
    width: int = 128  # units or channels
    activation: str = "relu"
    residual: bool = False  # skip connections around each block


@dataclass
class InitConfig:
    name: str = MISSING


@dataclass
class UniformInitConfig(InitConfig):
    bound: float = 0.05  # U(-bound, bound)


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = MISSING


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class AdagradConfig(OptimizerConfig):
    lr_decay: float = 0.0
    eps: float = 1e-10


@dataclass
class RMSpropConfig(OptimizerConfig):
    alpha: float = 0.99  # smoothing of the squared-gradient average
    eps: float = 1e-8
    momentum: float = 0.0


@dataclass
class AdamConfig(OptimizerConfig):
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass
class ClipConfig:
    name: str = MISSING


@dataclass
class ThresholdClipConfig(ClipConfig):
    threshold: float = 1.0  # max global L2 norm (norm) or max |g| per element (value)


@dataclass
class ScheduleConfig:
    name: str = MISSING


@dataclass
class ExponentialScheduleConfig(ScheduleConfig):
    gamma: float = 0.98  # lr multiplier per epoch


@dataclass
class StepScheduleConfig(ScheduleConfig):
    step_size: int = 10  # epochs between drops
    gamma: float = 0.5


@dataclass
class CosineScheduleConfig(ScheduleConfig):
    min_lr: float = 0.0  # reached at the last epoch


@dataclass
class AveragingConfig:
    name: str = MISSING


@dataclass
class EnsembleConfig(AveragingConfig):
    members: int = 3  # independently initialised models, predictions averaged


@dataclass
class EMAConfig(AveragingConfig):
    decay: float = 0.99  # per optimizer step


@dataclass
class SWAConfig(AveragingConfig):
    start: float = 0.75  # fraction of the epochs after which weights are averaged, once per epoch


@dataclass
class EarlyStoppingConfig:
    patience: int = 0  # epochs without improvement before stopping; 0 = off
    min_delta: float = 0.0  # smallest change that counts as an improvement
    monitor: str = "val_acc"


@dataclass
class TrainerConfig:
    epochs: int = 20
    batch_size: int = 128
    device: str = "auto"  # auto = CUDA when present, else CPU
    threads: int = 1  # torch threads per process on the CPU; parallelise with processes
    diagnostics: bool = True  # per-layer gradient norm and activation std, once per epoch
    eval_batch_size: int = 2048


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "ablate"
    run_name: str | None = None
    flush_every: float = 2.0  # seconds between MLflow writes of per-epoch metrics; 0 = every epoch


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    init: InitConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    clip: ClipConfig = MISSING
    schedule: ScheduleConfig = MISSING
    averaging: AveragingConfig = MISSING
    norm: str = "none"  # none | batch | layer, after the weights and before the activation
    dropout: float = 0.0  # drop probability after each hidden activation; 0 = off
    weight_decay: float = 0.0  # L2 on weight matrices / kernels (not biases or norm gains); 0 = off
    l1: float = 0.0  # L1 penalty on the same weights, added to the loss; 0 = off
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0  # drives init, data order and dropout


_GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"base_data": DataConfig},
    "model": {"base_model": ModelConfig},
    "init": {"base_init": InitConfig, "base_uniform": UniformInitConfig},
    "optimizer": {
        "base_sgd": SGDConfig,
        "base_adagrad": AdagradConfig,
        "base_rmsprop": RMSpropConfig,
        "base_adam": AdamConfig,
    },
    "clip": {"base_clip": ClipConfig, "base_threshold": ThresholdClipConfig},
    "schedule": {
        "base_schedule": ScheduleConfig,
        "base_exponential": ExponentialScheduleConfig,
        "base_step": StepScheduleConfig,
        "base_cosine": CosineScheduleConfig,
    },
    "averaging": {
        "base_averaging": AveragingConfig,
        "base_ensemble": EnsembleConfig,
        "base_ema": EMAConfig,
        "base_swa": SWAConfig,
    },
}


def store_schemas(name: str, root: type, groups: dict[str, dict[str, type]]) -> None:
    """Register a root schema and its groups' schemas with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name=name, node=root)
    for group, schemas in groups.items():
        for schema_name, schema in schemas.items():
            cs.store(group=group, name=schema_name, node=schema)


def register_configs() -> None:
    """Register every training schema with Hydra's ConfigStore (idempotent)."""
    store_schemas("base_config", Config, _GROUP_SCHEMAS)


# --- validation ----------------------------------------------------------------------------------

Rule = Callable[[Any], str | None]  # None when the value is fine, else what is allowed


def _one_of(options: Sequence[str]) -> Rule:
    return lambda v: None if v in options else "one of: " + ", ".join(options)


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Rule:
    def check(v: Any) -> str | None:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (lo is None or (v > lo if lo_open else v >= lo))
        ok = ok and (hi is None or (v < hi if hi_open else v <= hi))
        if ok:
            return None
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo:g}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi:g}")
        return "a number " + " and ".join(parts)

    return check


def _device(v: Any) -> str | None:
    ok = v in ("auto", "cpu", "cuda", "mps") or (isinstance(v, str) and v.startswith("cuda:")
                                                 and v[5:].isdigit())
    return None if ok else "one of: auto, cpu, cuda, cuda:N, mps"


_POSITIVE = _range(0, lo_open=True)
_NON_NEGATIVE = _range(0)
_AT_LEAST_ONE = _range(1)
_FRACTION = _range(0, 1, lo_open=True, hi_open=True)

RULES: dict[str, Rule] = {
    "data.name": _one_of(DATASETS),
    "data.scaling": _one_of(SCALINGS),
    "data.val_fraction": _FRACTION,
    "data.test_fraction": _FRACTION,
    "model.name": _one_of(MODELS),
    "model.depth": _AT_LEAST_ONE,
    "model.width": _AT_LEAST_ONE,
    "model.activation": _one_of(ACTIVATIONS),
    "init.name": _one_of(INITS),
    "init.bound": _POSITIVE,
    "optimizer.name": _one_of(OPTIMIZERS),
    "optimizer.lr": _POSITIVE,
    "optimizer.momentum": _range(0, 1, hi_open=True),
    "optimizer.lr_decay": _NON_NEGATIVE,
    "optimizer.eps": _POSITIVE,
    "optimizer.alpha": _range(0, 1),
    "optimizer.beta1": _range(0, 1, hi_open=True),
    "optimizer.beta2": _range(0, 1, hi_open=True),
    "clip.name": _one_of(CLIPS),
    "clip.threshold": _POSITIVE,
    "schedule.name": _one_of(SCHEDULES),
    "schedule.gamma": _range(0, 1, lo_open=True),
    "schedule.step_size": _AT_LEAST_ONE,
    "schedule.min_lr": _NON_NEGATIVE,
    "averaging.name": _one_of(AVERAGINGS),
    "averaging.members": _AT_LEAST_ONE,
    "averaging.decay": _FRACTION,
    "averaging.start": _range(0, 1, hi_open=True),
    "norm": _one_of(NORMS),
    "dropout": _range(0, 1, hi_open=True),
    "weight_decay": _NON_NEGATIVE,
    "l1": _NON_NEGATIVE,
    "early_stopping.patience": _NON_NEGATIVE,
    "early_stopping.min_delta": _NON_NEGATIVE,
    "early_stopping.monitor": _one_of(MONITORS),
    "trainer.epochs": _AT_LEAST_ONE,
    "trainer.batch_size": _AT_LEAST_ONE,
    "trainer.eval_batch_size": _AT_LEAST_ONE,
    "trainer.threads": _AT_LEAST_ONE,
    "trainer.device": _device,
    "tracking.flush_every": _NON_NEGATIVE,
    "seed": _NON_NEGATIVE,
}


def flatten(cfg: DictConfig | dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted.key, value)`` for every leaf of a resolved config."""
    # OmegaConf types to_container for any node (a list, a str...) and any key type; a DictConfig's
    # container is a dict, and a config's keys are str.
    if isinstance(cfg, dict):
        container = cfg
    else:
        container = cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=True))
    for key, value in container.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flatten(value, prefix=path + ".")
        else:
            yield path, value


def validate(cfg: DictConfig) -> DictConfig:
    """Check every ranged or enumerated field; raise :class:`ConfigError` on the first bad one.

    Returns:
        The same config, for chaining.
    """
    for key, value in flatten(cfg):
        rule = RULES.get(key)
        if rule is not None:
            allowed = rule(value)
            if allowed is not None:
                raise ConfigError(key, value, allowed)
    return cfg


# --- composition ---------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def translate_compose_error(exc: BaseException) -> ConfigError | None:
    """Turn Hydra / OmegaConf composition errors into one-line :class:`ConfigError`s."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if isinstance(exc, MissingConfigException):
        group, _, option = (exc.missing_cfg_file or "").rpartition("/")
        if group and exc.options:
            options = sorted(o for o in exc.options if not o.startswith("base_"))
            return ConfigError(group, option, "one of: " + ", ".join(options))
        return ConfigError("config", exc.missing_cfg_file, _one_line(str(exc)))
    if isinstance(exc, OverrideParseException):
        return ConfigError("override", exc.override, "key=value in Hydra's override grammar ("
                           + _one_line(exc.message).split(" See ")[0] + ")")
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if not isinstance(cause, OmegaConfBaseException):
        return None
    key = cause.full_key or "config"
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        parent = key.rpartition(".")[0]
        known = _fields_of(cause.object_type)
        allowed = f"a field of {parent or 'the config'}" + (f" ({', '.join(known)})" if known else "")
        return ConfigError(key, cause.key, allowed)
    msg = _one_line(cause.msg or str(cause))
    match = re.search(r"could not be converted to (\w+)|is not a valid (bool)", msg)
    allowed = f"a value of type {(match.group(1) or match.group(2)).lower()}" if match else msg
    return ConfigError(key, cause.value, allowed)


def _fields_of(schema: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []


def hydra_at(config_dir: Path | str) -> None:
    """Point Hydra's global state at ``config_dir`` once; re-initialising costs more than composing."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    global _initialized_at
    hydra = GlobalHydra.instance()
    if hydra.is_initialized() and _initialized_at == str(config_dir):
        return
    if hydra.is_initialized():
        hydra.clear()
    initialize_config_dir(config_dir=str(config_dir), version_base=None)  # kept, not used as `with`
    _initialized_at = str(config_dir)


_initialized_at: str | None = None


def is_group(key: str) -> bool:
    """True when ``key`` names a config group (``optimizer``), not a field (``optimizer.lr``)."""
    return "." not in key and (CONF_DIR / key).is_dir()


def compose(overrides: Sequence[str] = (), *, config_name: str = "config") -> DictConfig:
    """Compose ``conf/`` with Hydra's compose API, then validate.

    Usable from Python without the CLI::

        cfg = compose(["data=digits", "optimizer=adam", "trainer.epochs=5"])

    Raises:
        ConfigError: an unknown option, a wrong type or an out-of-range value, as one line.
    """
    from hydra import compose as hydra_compose

    register_configs()
    try:
        hydra_at(CONF_DIR)
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    except Exception as exc:  # Hydra wraps everything; translate what we can, re-raise the rest
        translated = translate_compose_error(exc)
        if translated is None:
            raise
        raise translated from exc
    if "hydra" in cfg:
        with_hydra = OmegaConf.to_container(cfg, resolve=False)
        assert isinstance(with_hydra, dict)
        with_hydra.pop("hydra", None)
        cfg = OmegaConf.create(with_hydra)
    return validate(cfg)


def trick_summary(cfg: DictConfig) -> str:
    """One line naming the recipe, e.g. ``mlp d2 w128 relu | init=kaiming | norm=batch | adam lr=0.001``."""
    m = cfg.model
    parts = [f"{cfg.data.name}/{cfg.data.scaling}",
             f"{m.name} d{m.depth} w{m.width} {m.activation}{' +res' if m.residual else ''}",
             f"init={cfg.init.name}", f"norm={cfg.norm}"]
    if cfg.dropout:
        parts.append(f"dropout={cfg.dropout:g}")
    parts.append(f"{cfg.optimizer.name} lr={cfg.optimizer.lr:g}")
    if cfg.weight_decay:
        parts.append(f"wd={cfg.weight_decay:g}")
    if cfg.l1:
        parts.append(f"l1={cfg.l1:g}")
    if cfg.clip.name != "none":
        parts.append(f"clip={cfg.clip.name}({cfg.clip.threshold:g})")
    if cfg.schedule.name != "constant":
        parts.append(f"schedule={cfg.schedule.name}")
    if cfg.early_stopping.patience:
        parts.append(f"early_stop={cfg.early_stopping.patience}")
    if cfg.averaging.name != "none":
        parts.append(f"avg={cfg.averaging.name}")
    return " | ".join(parts)
