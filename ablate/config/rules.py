"""Validation of a composed config: ranges and choices per field (:data:`RULES`), and Hydra's and
OmegaConf's composition errors translated into the same one-line :class:`ConfigError`."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from ablate.errors import AblateError, ConfigError
from ablate.menu import (
    ACTIVATIONS,
    AVERAGINGS,
    CLIP_TARGETS,
    CLIPS,
    DATASETS,
    INITS,
    MODELS,
    MONITORS,
    NORMS,
    OPTIMIZERS,
    SCALINGS,
    SCHEDULES,
    USER_DATASETS,
    USER_MODEL,
)

__all__ = ["RULES", "Rule", "flatten", "translate_compose_error", "validate"]

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


def _optional(rule: Rule) -> Rule:
    """``rule``, or null: a user model's knob it is not given, a user dataset's inferred field."""
    return lambda v: None if v is None else (None if rule(v) is None else f"null or {rule(v)}")


def _data_name(v: Any) -> str | None:
    from ablate.registry import dataset_options

    return _one_of((*DATASETS, *USER_DATASETS, *dataset_options()))(v)


_POSITIVE = _range(0, lo_open=True)
_NON_NEGATIVE = _range(0)
_AT_LEAST_ONE = _range(1)
_FRACTION = _range(0, 1, lo_open=True, hi_open=True)

RULES: dict[str, Rule] = {
    "data.name": _data_name,
    "data.scaling": _one_of(SCALINGS),
    "data.val_fraction": _FRACTION,
    "data.test_fraction": _FRACTION,
    "data.num_classes": _optional(_range(2)),
    "model.depth": _optional(_AT_LEAST_ONE),
    "model.width": _optional(_AT_LEAST_ONE),
    "model.activation": _optional(_one_of(ACTIVATIONS)),
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
    "clip.to": _one_of(CLIP_TARGETS),
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
    try:
        leaves = list(flatten(cfg))
    except Exception as exc:  # an interpolation that does not resolve (${oc.env:UNSET})
        translated = translate_compose_error(exc)
        if translated is None:
            raise
        raise translated from None
    for key, value in leaves:
        rule = RULES.get(key)
        if rule is not None:
            allowed = rule(value)
            if allowed is not None:
                raise ConfigError(key, value, allowed)
    _check_sources(cfg)
    return cfg


def _check_sources(cfg: DictConfig) -> None:
    """The user's data needs a path; a user's model without a registered name needs a factory."""
    data = cfg.get("data")
    if data is not None and data.get("name") in USER_DATASETS and not data.get("path"):
        kind = "a .npz or .pt file of arrays" if data.name == "arrays" else "a folder of class folders"
        raise ConfigError("data.path", data.get("path"), f"{kind} (data={data.name} data.path=...)")
    model = cfg.get("model")
    if model is None or model.get("factory"):  # a user's model (its checks: ablate.registry.model_call)
        return
    if model.get("name") == USER_MODEL:
        raise ConfigError("model.factory", model.get("factory"), "an import path module:function "
                          "(model=custom model.factory=mypkg.nets:make_net)")
    from ablate.registry import model_options

    names = (*MODELS, USER_MODEL, *model_options())
    if model.get("name") not in names:
        raise ConfigError("model.name", model.get("name"), "one of: " + ", ".join(names)
                          + " (or a model of your own with a model.factory)")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        cause = cause.__cause__ or cause.__context__


def _yaml_error(exc: BaseException) -> AblateError | None:
    """A config or study file that is not YAML: the file, line and column, and what the parser found."""
    import yaml

    for cause in _causes(exc):
        if isinstance(cause, yaml.YAMLError):
            mark = getattr(cause, "problem_mark", None)
            problem = getattr(cause, "problem", None) or str(cause)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            name = mark.name if mark is not None and mark.name else "a config file"
            return AblateError(f"{name}: not valid YAML{where}: {_one_line(problem)}")
    return None


def _resolution_error(key: str, msg: str) -> AblateError:
    """An interpolation that does not resolve, ``${oc.env:UNSET}`` most often."""
    unset = re.search(r"Environment variable '([^']*)' not found", msg)
    if unset:
        return AblateError(f"{key}: the environment variable {unset.group(1)} is not set "
                           f"(read by ${{oc.env:{unset.group(1)}}}); set it, or give the value itself")
    return AblateError(f"{key}: cannot resolve its interpolation ({msg.split(' full_key:')[0]})")


def translate_compose_error(exc: BaseException) -> AblateError | None:
    """Turn Hydra / OmegaConf composition errors into one-line :class:`ConfigError`s.

    A file that is not YAML and an interpolation that does not resolve are one-line
    :class:`AblateError`s naming the file (line, column) or the field.
    """
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        InterpolationResolutionError,
        OmegaConfBaseException,
    )

    yaml_error = _yaml_error(exc)
    if yaml_error is not None:
        return yaml_error
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
    if isinstance(cause, InterpolationResolutionError):
        return _resolution_error(key, _one_line(cause.msg or str(cause)))
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
