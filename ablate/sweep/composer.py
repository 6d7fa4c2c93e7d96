"""Trial configs of one study, composed by Hydra once per study, and the study's check before it starts.

Hydra's composition costs a few tenths of a second, as much as a small trial trains, so a sweep
composes every config node a trial can need once (in the supervisor, which is also its check of
the study) and its workers build each trial by copying nodes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution

from ablate.config import check_model, compose, is_group, translate_compose_error, validate
from ablate.errors import ConfigError
from ablate.space import AblationSpace, SearchSpace
from ablate.sweep.spec import StudySpec

__all__ = ["METRICS", "Composed", "TrialComposer", "check_trial_configs"]

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
"""The per-epoch metrics a study can optimise (what ``fit`` reports every epoch)."""

Composed = tuple[DictConfig, dict[tuple[str, Any], DictConfig]]
"""What :meth:`TrialComposer.compose_all` made: the representative config and every node."""


class TrialComposer:
    """Trial configs for one study, composed by Hydra once per study, not once per trial.

    Hydra's composition costs a few tenths of a second, as much as a small trial trains. Each
    group's file fills only its own node, so :meth:`compose_all` composes the representative trial
    and then, round after round, the k-th option of every searched group at once (as many rounds as
    the largest group has options); an ablation composes each arm once. A trial is then a copy of
    the representative with its group nodes (its arm) swapped in and its searched fields set. The
    copies keep the structured schema, so a value of the wrong type is still refused, and every
    trial is validated as ``compose`` would. ``ablate sweep`` composes in the supervisor (that is
    its check of the study) and hands the result to its workers; a joining worker composes itself.
    """

    def __init__(self, space: SearchSpace | AblationSpace, extra: Mapping[str, Any] | None = None, *,
                 composed: Composed | None = None) -> None:
        self.space = space
        self.extra = dict(extra or {})  # field values this worker sets on every trial (tracking, threads)
        self.base: DictConfig | None = None
        self.nodes: dict[tuple[str, Any], DictConfig] = {}
        if composed is not None:
            self.base, self.nodes = composed

    @property
    def composed(self) -> Composed:
        """What :meth:`compose_all` made (picklable: the schema types travel with it)."""
        if self.base is None:
            self.compose_all()
        assert self.base is not None
        return self.base, self.nodes

    def compose_all(self) -> TrialComposer:
        """Compose every node a trial can need; a :class:`ConfigError` names the culprit.

        Raises:
            ConfigError: some option (or arm) cannot be composed with the study's overrides; its
                ``field`` is the trial field, and an arm's name is added to ``allowed``.
        """
        if isinstance(self.space, AblationSpace):
            self._compose_arms(self.space)
        else:
            self._compose_groups(self.space)
        return self

    def _compose_arms(self, space: AblationSpace) -> None:
        """An ablation: one whole config per arm."""
        rep = space.representative()
        for arm in space.arms:
            try:
                self.nodes["arm", arm] = compose(space.overrides({**rep, "arm": arm}))
            except ConfigError as exc:
                raise ConfigError(exc.field, exc.value, f"{exc.allowed} (in arm {arm!r})") from None
        self.base = self.nodes["arm", rep["arm"]]

    def _compose_groups(self, space: SearchSpace) -> None:
        """A search: the representative, then round k composes the k-th option of every group."""
        rep = space.representative()
        self.base = compose(space.overrides(rep))
        options = {k: list(d.choices) for k, d in space.distributions.items()
                   if is_group(k) and isinstance(d, CategoricalDistribution)}
        for group, choices in options.items():
            self.nodes[group, choices[0]] = self.base[group]
        for k in range(1, max(map(len, options.values()), default=0)):
            varied = {g: c[k] for g, c in options.items() if len(c) > k}
            try:
                cfg = compose(space.overrides({**rep, **varied}))
            except ConfigError as exc:
                raise _culprit(space, rep, varied, exc) from None
            for group, option in varied.items():
                self.nodes[group, option] = cfg[group]

    def __call__(self, params: Mapping[str, Any], run_name: str) -> DictConfig:
        """The validated config of the trial with these sampled ``params``, named ``run_name``."""
        base, nodes = self.composed
        groups, leaves = self.space.split(params)
        try:
            if isinstance(self.space, AblationSpace):
                cfg = copy.deepcopy(nodes["arm", groups["arm"]])
            else:
                cfg = copy.deepcopy(base)
                for group, option in groups.items():
                    cfg[group] = copy.deepcopy(nodes[group, option])
            for name, value in leaves.items():
                OmegaConf.update(cfg, name, value, merge=False)
            for name, value in self.extra.items():
                OmegaConf.update(cfg, name, value, merge=False)
            cfg.tracking.run_name = run_name
        except Exception as exc:
            translated = translate_compose_error(exc)
            if translated is None:
                raise
            raise translated from exc
        return check_model(validate(cfg))


def _culprit(space: SearchSpace, rep: Mapping[str, Any], varied: Mapping[str, Any],
             exc: ConfigError) -> ConfigError:
    """The error of a compose round, naming the one option that fails (composed alone to find it)."""
    culprit = next(iter(varied.items())) if len(varied) == 1 else None
    for group, option in varied.items() if culprit is None else ():
        try:
            compose(space.overrides({**rep, group: option}))
        except ConfigError as alone:
            exc, culprit = alone, (group, option)
            break
    where = f" (with {culprit[0]}={culprit[1]})" if culprit else ""
    return ConfigError(exc.field, exc.value, exc.allowed + where)


def check_trial_configs(spec: StudySpec) -> TrialComposer:
    """Fail before anything is created when some trial could not be composed.

    Composes every node a trial can need (:meth:`TrialComposer.compose_all`: the representative
    trial, every option of every searched config group, every arm), so a field that exists for one
    option only (``optimizer.momentum`` with adam) is caught; leaf parameters are range-checked at
    both ends of their distributions.

    Returns:
        The :class:`TrialComposer`, composed: its ``base`` is the representative trial's config,
        and the workers of this sweep receive its nodes instead of composing them again.

    Raises:
        ConfigError: naming the study's field (``params.<key>``, ``metric``).
    """
    space = spec.space
    composer = TrialComposer(space)
    try:
        composer.compose_all()
    except ConfigError as exc:
        if exc.field in space.distributions:  # name the study's field, not the trial's
            raise ConfigError(f"params.{exc.field}", spec.params[exc.field], exc.allowed) from None
        raise
    if spec.design:
        return composer
    base, _ = composer.composed
    for key, dist in space.distributions.items():
        if not is_group(key):
            _check_leaf(base, key, dist, spec.params[key])
    if spec.metric not in METRICS:
        raise ConfigError("metric", spec.metric, "one of: val_acc, val_loss, train_acc, train_loss")
    return composer


def _check_leaf(base: DictConfig, key: str, dist: Any, grammar: Any) -> None:
    """A searched field exists in the trial config and both ends of its range validate."""
    missing = object()
    if OmegaConf.select(base, key, default=missing) is missing:
        raise ConfigError(f"params.{key}", key, "a field of the trial config (see `ablate train --cfg job`)")
    values = list(dist.choices) if isinstance(dist, CategoricalDistribution) else [dist.low, dist.high]
    for value in values:
        trial_cfg = base.copy()
        OmegaConf.update(trial_cfg, key, value, merge=False)
        try:
            check_model(validate(trial_cfg))  # a knob the user's model does not take: its own line
        except ConfigError as exc:
            raise ConfigError(f"params.{key}", grammar,
                              f"values where {exc.field} is {exc.allowed}") from None
