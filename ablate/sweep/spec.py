"""Study files: their schema, composition from ``sweeps/`` with command-line overrides, validation.

A study file (``sweeps/<name>.yaml``) names its sampler and pruner in its defaults list; every
field can be overridden from the command line (``ablate sweep tricks_digits n_trials=40
pruner=hyperband workers=2``). A ``sweeps/`` folder in the working directory is searched before the
shipped one, so users keep their own studies beside their data. The result is a :class:`StudySpec`,
serialised once (:meth:`StudySpec.to_json`: the Optuna study's attribute and the MLflow parent
run's ``study.json`` hold that one text) and read back by :meth:`StudySpec.from_json`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra import compose as hydra_compose
from omegaconf import DictConfig, OmegaConf

from ablate.ablation import build_design
from ablate.config import config_dirs, hydra_at, shipped_folder, translate_compose_error
from ablate.errors import AblateError, ConfigError
from ablate.records import ATTR_CONFIRMED, ATTR_SPEC, DIRECTIONS
from ablate.secrets import redact_text, redact_values
from ablate.space import AblationSpace, SearchSpace, fixed_overrides, parse_space
from ablate.sweep.schema import (
    PRUNERS,
    SAMPLERS,
    ConfirmConfig,
    StudyConfig,
    check_name,
    register_study_configs,
)
from ablate.sweep.storage import best_trial, confirmed, open_storage, redact

__all__ = [
    "FUSE_AUTO",
    "SWEEPS_DIR",
    "StudySpec",
    "available_studies",
    "compose_study",
    "differ_text",
    "fuse_count",
    "load_spec",
    "recipe_differences",
    "resolve_reference",
    "split_overrides",
    "study_search_path",
]

SWEEPS_DIR = shipped_folder("sweeps")  # the shipped study files (package data once installed)


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
    max_failures: int = 5  # trials failed by an exception that stop the sweep (from each start)
    launcher: dict[str, Any] = field(default_factory=lambda: {"name": "local"})
    design: str | None = None
    arms: dict[str, list[str]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)  # every seed an arm may get (0 .. max - 1 when adaptive)
    # seeds: {start, step, max}: the rounds of adaptive seeds (None: every arm gets every seed)
    adaptive: dict[str, int] | None = None
    comparisons: list[dict[str, str]] = field(default_factory=list)
    factors: dict[str, dict[str, bool]] = field(default_factory=dict)
    resolve: dict[str, Any] = field(default_factory=lambda: {"margin": None, "confidence": 0.95})
    # A search's confirmation {top, seeds} (None: none). Not part of the recipe: a finished search
    # can be confirmed later (or by more trials or seeds) with the same command plus confirm=...
    confirm: dict[str, int] | None = None
    # Ablations: queued seeds of one arm a worker trains together as one fused model (1: one at a
    # time; "auto": FUSE_AUTO for its device). How trials are run, not what they are: not in the recipe.
    fuse_seeds: int | str = 1
    # A search: seeds each sampled configuration trains on, fused (Optuna is told their mean). 1: one.
    repeats: int = 1

    @property
    def recipe(self) -> dict[str, Any]:
        """What defines the study's trials; a resumed or joined study must match it exactly."""
        recipe: dict[str, Any] = {
            "metric": self.metric, "direction": self.direction, "fixed": redact_values(self.fixed),
            "params": self.params, "design": self.design, "arms": self.arms, "seeds": self.seeds,
            "adaptive": self.adaptive}
        if self.repeats != 1:  # a trial's value is a mean over seeds; absent from studies made before it
            recipe["repeats"] = self.repeats
        return recipe

    def to_json(self) -> str:
        """The study's one serialised form (compact JSON, one line), stored on the Optuna study and
        the MLflow parent run.

        Passwords in the storage and tracking URLs, and in URLs among the fixed overrides
        (``tracking.uri=...``), are left out (a worker is told them by its launcher, see
        :meth:`with_secrets`) and the search space is added as Optuna distributions
        (``distributions``), which the report reads without parsing the grammar again.
        """
        doc = dataclasses.asdict(dataclasses.replace(self, storage=redact(self.storage),
                                                     tracking_uri=redact(self.tracking_uri),
                                                     fixed=redact_values(self.fixed)))
        doc["distributions"] = {} if self.design else {
            k: optuna.distributions.distribution_to_json(d) for k, d in self.space.distributions.items()}
        # Compact, one line: optuna-dashboard lists study attributes as stored, and indentation made
        # this one 75-200 lines (tricks_digits 3151 -> 2785 characters, ablation_digits 4416 -> 3144)
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return redact_text(text, self.storage, self.tracking_uri)

    def with_secrets(self, storage: str, tracking_uri: str | None) -> StudySpec:
        """This spec with the URLs a worker was given (they may hold the passwords the stored copy lacks).

        Raises:
            AblateError: the stored tracking URI was redacted and none was given.
        """
        uri = self.tracking_uri
        if ":***@" in uri:  # redacted by to_json
            if not tracking_uri:
                raise AblateError("tracking.uri: the study's MLflow store has a password; set "
                                  "ABLATE_TRACKING_URI to its URL")
            uri = tracking_uri
        return dataclasses.replace(self, storage=storage, tracking_uri=uri)

    @classmethod
    def from_json(cls, text: str) -> StudySpec:
        """Read :meth:`to_json`'s text back (the one reader of a stored study)."""
        doc = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    @functools.cached_property
    def space(self) -> SearchSpace | AblationSpace:
        """The trials' space, parsed from the grammar once per spec."""
        if self.design:
            return AblationSpace(self.arms, self.seeds, fixed_overrides(self.fixed))
        return parse_space(self.params, self.fixed)


def load_spec(storage: Any, study_name: str, url: str) -> StudySpec:
    """The spec ``ablate sweep`` stored with a study, read from its storage (no study is opened).

    Raises:
        AblateError: no such study, or one that ``ablate sweep`` did not create.
    """
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        raise AblateError(f"study: no study {study_name!r} in {redact(url)} "
                          "(ablate sweep creates it)") from None
    text = storage.get_study_user_attrs(study_id).get(ATTR_SPEC)
    if text is None:
        raise AblateError(f"study: {study_name!r} was not created by ablate sweep "
                          "(it has no recorded definition)")
    return StudySpec.from_json(text)


def recipe_differences(theirs: Mapping[str, Any], mine: Mapping[str, Any]) -> list[str]:
    """``["params.optimizer", "metric"]``: the entries of two :attr:`StudySpec.recipe` that differ.

    Both are compared as a study stores them (through JSON: a tuple equals its list), and a fixed
    value typed on the command line (``trainer.epochs=1``, a string) as Hydra reads it, so that it
    equals the study file's ``trainer.epochs: 1``.
    """
    theirs, mine = (_typed_fixed(json.loads(json.dumps(r))) for r in (theirs, mine))
    out: list[str] = []
    for key, value in theirs.items():
        other = mine.get(key)
        if value == other:
            continue
        if isinstance(value, dict) and isinstance(other, dict):
            keys = sorted({*value, *other}, key=str)
            out += [f"{key}.{k}" for k in keys if value.get(k, ...) != other.get(k, ...)]
        else:
            out.append(key)
    return out


def _typed_fixed(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe with its ``fixed`` strings read as Hydra reads an override's value (``1``, ``1e-4``,
    ``true``, ``null``); a value Hydra cannot read stays the string it is."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    fixed = recipe.get("fixed")
    if not isinstance(fixed, dict):
        return recipe
    parser = OverridesParser.create()

    def typed(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parser.parse_override(f"x={value}").value()
        except Exception:  # noqa: BLE001 - not an override value Hydra reads: compare the text
            return value

    return {**recipe, "fixed": {k: typed(v) for k, v in fixed.items()}}


def differ_text(fields: Sequence[str]) -> str:
    """``fixed.trainer.epochs, params.optimizer.lr differ``: at most four fields named."""
    more = f" and {len(fields) - 4} more" if len(fields) > 4 else ""
    return f"{', '.join(fields[:4])}{more} differ{'s' if len(fields) == 1 else ''}"


def study_search_path(cwd: str | Path | None = None) -> list[Path]:
    """Folders searched for study files, first match wins: the ``--config-dir`` folders, ``./sweeps``,
    then the shipped one."""
    local = Path(cwd or os.getcwd()).resolve() / "sweeps"
    given = [d.resolve() for d in config_dirs()]
    return [p for p in dict.fromkeys([*given, local, SWEEPS_DIR]) if p.is_dir()]


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
    if isinstance(spec.max_failures, bool) or not isinstance(spec.max_failures, int) or spec.max_failures < 1:
        raise ConfigError("max_failures", spec.max_failures, "a whole number of failed trials >= 1")
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
    _check_resolve(spec)


def _check_resolve(spec: StudySpec) -> None:
    """``resolve.margin`` > 0 (or None: an accuracy's 0.5 points), ``resolve.confidence`` in (0.5, 1)."""
    margin, confidence = spec.resolve.get("margin"), spec.resolve.get("confidence")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))
                               or not 0.0 < margin < float("inf")):
        raise ConfigError("resolve.margin", margin, f"a number > 0 in {spec.metric} units (0.005 = 0.5 "
                          "points of accuracy), or null for an accuracy's 0.5 points")
    # The default margin is for accuracies only (ablate.analysis.verdicts.default_margin's rule).
    if margin is None and spec.design and not spec.metric.endswith("acc"):
        raise ConfigError("resolve.margin", margin, f"a number > 0 in {spec.metric} units: the 0.5-point "
                          "default is for accuracy metrics only")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.5 < confidence < 1.0:
        raise ConfigError("resolve.confidence", confidence, "a level in (0.5, 1) such as 0.95")


def compose_study(name: str, overrides: Sequence[str] = (), *, cwd: str | Path | None = None) -> StudySpec:
    """Compose ``sweeps/<name>.yaml`` with CLI overrides into a validated :class:`StudySpec`.

    Raises:
        ConfigError: unknown study, unknown sampler / pruner, wrong types or values.
    """
    check_name("study", name)  # a file name under sweeps/, never a path
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
            from hydra.errors import HydraException

            if not isinstance(exc, HydraException):
                raise
            # e.g. a study file holding a list: Hydra's own words, naming the file
            translated = AblateError(f"{home / f'{name}.yaml'}: {' '.join(str(exc).split())}")
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
        if not sep or (head not in ("fixed", "params") and head in _STUDY_FIELDS):
            study.append(override)
        elif head == "params" and "." in bare:
            params[bare.split(".", 1)[1]] = value
        else:
            fixed[bare.split(".", 1)[1] if head == "fixed" and "." in bare else bare] = value
    return study, fixed, params


def _spec_from(cfg: DictConfig, file_name: str, cwd: str | Path | None, *,
               fixed: Mapping[str, str], params: Mapping[str, str]) -> StudySpec:
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # an interpolation that does not resolve (${oc.env:UNSET})
        translated = translate_compose_error(exc)
        if translated is None:
            raise
        raise translated from None
    assert isinstance(container, dict)
    raw: dict[str, Any] = {str(k): v for k, v in container.items()}  # a study file's keys are names
    raw.pop("hydra", None)
    raw["params"] = {k: v for k, v in _flat(raw["params"]).items() if k not in fixed}
    raw["params"].update(params)
    raw["fixed"] = {k: v for k, v in _flat(raw["fixed"]).items() if k not in params}
    raw["fixed"].update(fixed)
    name = check_name("name", raw.get("name") or file_name)  # names runs/<name>/ and its journal
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
        resolve=dict(raw.get("resolve") or {"margin": None, "confidence": 0.95}),
        max_failures=_max_failures(raw), confirm=_confirm(raw), fuse_seeds=_fuse_seeds(raw),
        repeats=_repeats(raw), **design)
    _check(spec)
    return spec


def _confirm(raw: dict[str, Any]) -> dict[str, int] | None:
    """A search's ``confirm: {top, seeds}``, checked; None without one.

    Raises:
        ConfigError: on an ablation (its seeds are its ``seeds:``), without ``n_trials`` (confirmation
            starts once they finished), with a searched ``seed`` (confirmation varies it), or a
            ``top`` / ``seeds`` that is not a whole number from 1 (``top`` at most ``n_trials``).
    """
    given = raw.get("confirm")
    if given is None:
        return None
    fields = [f.name for f in dataclasses.fields(ConfirmConfig)]
    if not isinstance(given, Mapping):
        raise ConfigError("confirm", given, "{top: 3, seeds: 5} on a search (params:), or null")
    unknown = sorted(set(map(str, given)) - set(fields))
    if unknown:
        raise ConfigError(f"confirm.{unknown[0]}", given[unknown[0]],
                          f"a field of confirm ({', '.join(fields)})")
    confirm = {**dataclasses.asdict(ConfirmConfig()), **given}
    if raw.get("design"):
        raise ConfigError("confirm", dict(confirm), f"null with design {raw['design']} (an ablation repeats "
                          "its arms over seeds: set seeds instead); confirm is for a search (params:)")
    n_trials = raw.get("n_trials")
    for key in ("top", "seeds"):
        value = confirm[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"confirm.{key}", value, "a whole number >= 1")
    if not isinstance(n_trials, int) or isinstance(n_trials, bool):
        raise ConfigError("confirm", dict(confirm), "null without n_trials: confirmation starts once the "
                          "search's n_trials finished")
    if confirm["top"] > n_trials:
        raise ConfigError("confirm.top", confirm["top"], f"a whole number from 1 to n_trials ({n_trials})")
    if "seed" in _flat(raw.get("params") or {}):
        raise ConfigError("confirm", dict(confirm), "null with a searched seed (params.seed): confirmation "
                          "trains the best trials again on other seeds")
    return {"top": int(confirm["top"]), "seeds": int(confirm["seeds"])}


FUSE_AUTO = {"cpu": 1, "cuda": 16}
"""``fuse_seeds: auto``: seeds fused per model on each device type. On one CPU thread fusing gained at
most 1.11x (digits MLP, K=16) and lost up to 13 % on the mnist1d CNNs (benchmarks/bench_fused.py,
2026-12-04), and an ablation_digits of 16 seeds per arm ran 1.03x faster fused: auto does not fuse
there. CUDA's 16 is the issue's target, not yet measured (benchmarks/gpu.sh)."""


def _fuse_seeds(raw: dict[str, Any]) -> int | str:
    """An ablation's ``fuse_seeds``: a whole number >= 1 or ``auto``; a search takes only 1.

    Raises:
        ConfigError: anything else, or more than 1 on a search (its trials are distinct recipes).
    """
    value = raw.get("fuse_seeds", 1)
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        if value != 1 and not raw.get("design"):
            raise ConfigError("fuse_seeds", value, "1 on a search (params:): only an ablation's seeds of "
                              "one arm share a recipe and train fused")
        return "auto" if value == "auto" else int(value)
    if isinstance(value, str) and value.isdigit() and int(value) >= 1:
        return _fuse_seeds({**raw, "fuse_seeds": int(value)})
    raise ConfigError("fuse_seeds", value, "a whole number >= 1 (seeds of one arm trained together) or auto")


def _repeats(raw: dict[str, Any]) -> int:
    """A search's ``repeats``: seeds per sampled configuration, a whole number >= 1.

    Raises:
        ConfigError: anything else; more than 1 on an ablation (its ``seeds:`` are its repeats), with
            ``confirm`` (whose extra seeds would be the repeats' own) or with a searched ``seed``.
    """
    value = raw.get("repeats", 1)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("repeats", value, "a whole number >= 1 of seeds per sampled configuration")
    if value == 1:
        return 1
    if raw.get("design"):
        raise ConfigError("repeats", value, f"1 with design {raw['design']} (an ablation's seeds: are its "
                          "repeats); repeats is for a search (params:)")
    if raw.get("confirm") is not None:
        raise ConfigError("repeats", value, "1 with confirm (its extra seeds would be the repeats' own): "
                          "use one of them")
    if "seed" in _flat(raw.get("params") or {}):
        raise ConfigError("repeats", value, "1 with a searched seed (params.seed): repeats sets the seeds")
    return value


def fuse_count(value: int | str, device: str) -> int:
    """Seeds a worker fuses: ``fuse_seeds`` itself, or for ``auto`` the measured best on ``device``."""
    if value == "auto":
        return FUSE_AUTO["cuda" if device.startswith("cuda") else "cpu"]
    return int(value)


def _max_failures(raw: dict[str, Any]) -> Any:
    """The study's ``max_failures``, or its default: max(5, n_trials // 10) (5 without n_trials)."""
    if raw.get("max_failures") is not None:
        return raw["max_failures"]
    n_trials = raw.get("n_trials")
    return max(5, n_trials // 10) if isinstance(n_trials, int) else 5


def _ablation(raw: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """The arms, seeds and comparisons of an ablation study (nothing for a search)."""
    if not raw.get("design"):
        return {}
    seeds, adaptive = _seeds(raw.get("seeds"))
    if adaptive is not None and raw["design"] == "factorial":
        raise ConfigError("seeds", raw.get("seeds"), "a number of seeds per arm with design factorial "
                          "(adaptive seeds follow comparisons; a factorial design has effects)")
    reference = _flat(resolve_reference(raw.get("reference"), cwd=cwd))
    design = build_design(raw["design"], reference=reference, tricks=raw.get("tricks"))
    raw["n_trials"] = len(design.arms) * seeds  # the design is the budget (adaptive: at most this)
    raw["params"] = {}
    return {"design": raw["design"], "arms": design.arms, "seeds": list(range(seeds)), "adaptive": adaptive,
            "comparisons": design.comparisons, "factors": design.factors}


def _seeds(seeds: Any) -> tuple[int, dict[str, int] | None]:
    """An ablation's ``seeds``: ``N`` (every arm gets seeds 0..N-1) or ``{start, step, max}``.

    Returns:
        The most seeds an arm may get, and the adaptive schedule (None for ``N``).
    """
    allowed = "a number of seeds per arm >= 1, or {start: 3, step: 2, max: 30}"
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError("seeds", seeds, allowed)
        return seeds, None
    if not isinstance(seeds, Mapping) or set(seeds) != {"start", "step", "max"}:
        raise ConfigError("seeds", seeds, allowed)
    schedule = dict(seeds)
    for key, low in (("start", 2), ("step", 1), ("max", 2)):
        value = schedule[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"seeds.{key}", value, f"a whole number >= {low}")
    if schedule["max"] < schedule["start"]:
        raise ConfigError("seeds.max", schedule["max"], f"a number >= seeds.start ({schedule['start']})")
    return schedule["max"], {k: int(schedule[k]) for k in ("start", "step", "max")}


def resolve_reference(reference: Any, *, cwd: str | Path) -> dict[str, Any]:
    """An ablation's reference recipe as ``{config path: value}``.

    ``reference`` is a mapping (the full recipe), or ``best_of:<study>``: the fixed overrides and
    best parameters of another study's best finished trial (after its ``confirm:``, the confirmed
    trial with the best mean over its seeds), read from ``runs/<study>/journal.log`` (or
    ``best_of:<study>@<storage URL or file>``).

    Raises:
        ConfigError: neither a mapping nor ``best_of:...``.
        AblateError: the other study is absent or has no finished trial.
    """
    if reference is None:
        return {}
    if isinstance(reference, Mapping):
        return dict(reference)
    text = str(reference)
    if not text.startswith("best_of:"):
        raise ConfigError("reference", reference, "a mapping of config paths to values, or best_of:<study>")
    name, _, storage_url = text[len("best_of:"):].partition("@")
    check_name("reference", name)
    url = storage_url or str(Path(cwd) / "runs" / name / "journal.log")
    if "://" not in url and not Path(url).is_file():
        raise AblateError(f"reference: no study {name!r} at {url} (run `ablate sweep {name}` first)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, heartbeat_interval=None)
    other = load_spec(storage, name, url)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.trials
    best = best_trial(trials, other.direction)
    rows = confirmed(trials, other.direction) if ATTR_CONFIRMED in study.user_attrs else []
    if rows:  # one lucky seed is not the best: the best mean over seeds is
        best = next(t for t in trials if t.number == rows[0]["trial"])
    if best is None:  # none complete with a finite value (a diverged one is not a best)
        raise AblateError(f"reference: study {name!r} has no finished trial to take the best of")
    return {**other.fixed, **best.params}
