"""The user's own models and datasets: found by name, by import path or through entry points.

A model or dataset of the user's is named in one of three ways:

- in config, by import path: ``model=custom model.factory=mypkg.nets:make_net`` (the working folder
  is put on ``sys.path`` first, so a ``nets.py`` beside the user's ``sweeps/`` imports as ``nets``);
- from Python: :func:`register_model` / :func:`register_dataset`, then ``model=<name>`` /
  ``data=<name>`` in the same process;
- by an installed distribution's entry points, groups ``ablate.models`` and ``ablate.datasets``
  (``mynet = mypkg.nets:make_net``), then ``model=mynet`` in any process.

Every registered or discovered name becomes a config option (:func:`model_options`,
:func:`dataset_options`, which :func:`ablate.config.register_configs` stores with Hydra), carrying
its import path where it has one, so sweep workers in other processes resolve the same function.

:func:`model_call` checks a model config against its factory's signature before anything is built:
the factory receives ``input_shape``, ``num_classes`` and exactly those trick keywords it declares.
This module imports neither torch nor the user's code until a name is resolved.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ablate.errors import AblateError, ConfigError
from ablate.menu import DATASETS, MODELS, USER_DATASETS, USER_MODEL

__all__ = [
    "DATASET_ENTRY_POINTS",
    "KNOBS",
    "MODEL_ENTRY_POINTS",
    "ModelCall",
    "dataset_function",
    "dataset_options",
    "load_object",
    "model_call",
    "model_options",
    "register_dataset",
    "register_model",
]

MODEL_ENTRY_POINTS = "ablate.models"
DATASET_ENTRY_POINTS = "ablate.datasets"

# The trick knobs a factory may declare, with the value that means "off" (not passed / not switched).
# norm and dropout are top-level tricks; the others are fields of the model config (null = not given).
KNOBS: dict[str, Any] = {"norm": "none", "dropout": 0.0, "depth": None, "width": None,
                         "activation": None, "residual": None}
_MODEL_FIELDS = ("depth", "width", "activation", "residual")
_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_NAME = re.compile(r"^[A-Za-z_][\w-]*$")

_models: dict[str, Callable[..., Any]] = {}
_datasets: dict[str, Callable[..., Any]] = {}


def _import_path(obj: Any) -> str | None:
    """``module:qualname`` when another process can import ``obj`` by it, else None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def _check_new_name(kind: str, name: Any, builtins: tuple[str, ...], obj: Any) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or name in builtins:
        raise ConfigError(kind, name, "a name of letters, digits, _ and - that is not a built-in "
                          f"option ({', '.join(builtins)})")
    if not callable(obj):
        raise ConfigError(kind, obj, "a callable")


def register_model(name: str, factory: Callable[..., Any]) -> None:
    """Make ``model=<name>`` build ``factory(input_shape=..., num_classes=..., <knobs it declares>)``.

    Args:
        name: The option's name; not a built-in model's.
        factory: Returns an ``nn.Module`` mapping ``(N, *input_shape)`` to ``(N, num_classes)``
            logits. Defined in an importable module (not ``__main__``), it is also found by sweep
            workers, which run in other processes.

    Raises:
        ConfigError: a built-in or malformed name, or a factory that is not callable.
    """
    _check_new_name("model", name, (*MODELS, USER_MODEL), factory)
    _models[name] = factory


def register_dataset(name: str, function: Callable[..., Any]) -> None:
    """Make ``data=<name>`` read ``function()``: ``(x_train, y_train[, x_test, y_test])`` or a mapping
    with those keys, as tensors or NumPy arrays; then split and scaled as the built-in datasets are.

    Raises:
        ConfigError: a built-in or malformed name, or a function that is not callable.
    """
    _check_new_name("data", name, (*DATASETS, *USER_DATASETS), function)
    _datasets[name] = function


def _entry_points(group: str) -> dict[str, str]:
    """The group's entry points, read once per ``sys.path`` (every compose asks; a scan of the
    installed distributions costs ~4 ms)."""
    return _entry_points_on(group, tuple(sys.path))


@functools.lru_cache(maxsize=8)
def _entry_points_on(group: str, path: tuple[str, ...]) -> dict[str, str]:
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=group)}


def model_options() -> dict[str, dict[str, Any]]:
    """The config node of every registered or entry-point model, by name (registered ones win)."""
    refs: dict[str, str | None] = dict(_entry_points(MODEL_ENTRY_POINTS))
    refs.update({name: _import_path(factory) for name, factory in _models.items()})
    return {name: {"name": name, "factory": ref, **dict.fromkeys(_MODEL_FIELDS)}
            for name, ref in refs.items() if name not in MODELS and name != USER_MODEL}


def dataset_options() -> dict[str, str | None]:
    """The import path (None where there is none) of every registered or entry-point dataset."""
    refs: dict[str, str | None] = dict(_entry_points(DATASET_ENTRY_POINTS))
    refs.update({name: _import_path(function) for name, function in _datasets.items()})
    return {name: ref for name, ref in refs.items() if name not in DATASETS and name not in USER_DATASETS}


def load_object(ref: Any, field: str) -> Callable[..., Any]:
    """Import ``module:attribute`` with the working folder on ``sys.path``.

    Raises:
        ConfigError: naming ``field``: a malformed path, a module that does not import (with the
            reason), an absent attribute, or one that is not callable.
    """
    if not isinstance(ref, str) or not _REF.match(ref):
        raise ConfigError(field, ref, "an import path module:function, e.g. mypkg.nets:make_net")
    module_name, _, attribute = ref.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:  # the user's module beside their sweeps/ and conf/
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # their module may fail in any way; say how, in one line
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(field, ref, f"an importable module ({type(exc).__name__}: {why}; "
                          f"the working folder {cwd} is on sys.path)") from exc
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(field, ref, f"a function defined in module {module_name} (it has no "
                              f"{attribute!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(field, ref, "a callable (a function or a class)")
    return obj  # type: ignore[no-any-return]  # callable() narrows to a Callable only in the branch


def dataset_function(name: str, function: str | None) -> Callable[..., Any]:
    """The function of dataset ``name``: registered in this process, else imported from ``function``."""
    if name in _datasets:
        return _datasets[name]
    if function:
        return load_object(function, "data.function")
    known = dataset_options()
    ref = known.get(name)
    if ref:
        return load_object(ref, "data.function")
    names = ", ".join((*DATASETS, *USER_DATASETS, *known))
    raise ConfigError("data.name", name, f"one of: {names} (or a dataset registered with "
                      f"ablate.register_dataset, or an entry point of group {DATASET_ENTRY_POINTS})")


@dataclass(frozen=True)
class ModelCall:
    """A user's model factory and the keywords it is called with (besides input_shape, num_classes)."""

    factory: Callable[..., Any]
    label: str  # how messages name the model: the option's name, or the import path for model=custom
    kwargs: dict[str, Any]


def _accepted(factory: Callable[..., Any]) -> tuple[set[str] | None, set[str]]:
    """``(keywords it takes, None for **kwargs; keywords it requires)``."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: pass everything
        return None, set()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = {p.name for p in params if p.kind in kinds}
    required = {p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None, required
    return named, required


def model_call(model: Mapping[str, Any], *, norm: Any, dropout: Any) -> ModelCall:
    """Resolve a user model's factory and check the config against its signature.

    ``model`` is the config's ``model`` node: ``name``, ``factory`` (an import path, or null for a
    model registered in this process), the knobs ``depth``, ``width``, ``activation``,
    ``residual`` (null = not passed) and any fields of the user's own (always passed).

    Raises:
        ConfigError: the factory cannot be found or does not take ``input_shape`` and ``num_classes``.
        AblateError: a knob is switched on that the factory does not take, e.g.
            ``norm=batch: model 'mynet' does not take 'norm'``, or a keyword it requires is not set.
    """
    name, ref = model.get("name"), model.get("factory")
    if ref:
        factory = load_object(ref, "model.factory")
    elif name in _models:
        factory = _models[name]
    else:
        raise ConfigError("model.factory", ref, "an import path module:function (model=custom "
                          "model.factory=mypkg.nets:make_net), or model=<name> of a model registered "
                          "with ablate.register_model or an entry point of group " + MODEL_ENTRY_POINTS)
    label = str(ref) if name == USER_MODEL else str(name)
    accepted, required = _accepted(factory)
    if accepted is not None and not {"input_shape", "num_classes"} <= accepted:
        raise ConfigError("model.factory", ref or name, "a function taking the keywords input_shape and "
                          "num_classes (and any trick knobs it supports)")
    given: dict[str, tuple[str, Any]] = {"norm": ("norm", norm), "dropout": ("dropout", dropout)}
    for key, value in model.items():
        if key not in ("name", "factory"):
            given[str(key)] = (f"model.{key}", value)
    kwargs: dict[str, Any] = {}
    for key, (path, value) in given.items():
        switched = key not in KNOBS or value != KNOBS[key]
        if not switched:
            continue
        if accepted is not None and key not in accepted:
            takes = ", ".join(sorted(accepted - {"input_shape", "num_classes"})) or "no trick keywords"
            raise AblateError(f"{path}={_show(value)}: model {label!r} does not take {key!r} (it takes: "
                              f"{takes}); leave {path} at {_show(KNOBS.get(key))} or add the keyword "
                              "to the factory")
        kwargs[key] = value
    missing = sorted(required - {"input_shape", "num_classes"} - set(kwargs))
    if missing:
        raise ConfigError(f"model.{missing[0]}", None, f"a value: model {label!r} requires it "
                          f"(+model.{missing[0]}=... on the command line, or a field of its config)")
    return ModelCall(factory, label, kwargs)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)
