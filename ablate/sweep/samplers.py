"""Samplers and pruners from plain keyword arguments (the study file's ``sampler:`` / ``pruner:`` nodes).

The factories take names and keyword arguments, never a study spec: they are testable without
Hydra, and a study file's fields are the Optuna constructors' keyword arguments. Pruners are not
stored with an Optuna study, so every worker builds the same one from the same arguments.

Seeds. Every sampler of a study is built from the study file's one ``seed``, yet no two may draw
alike: a sampler seeded as an earlier one repeats its draws (a resumed random search would rerun
its first trials). Each sampler therefore draws its own *stream* of the study (:func:`stream_seed`):

* ``(0, i)``: worker ``i`` of the study's first session, seeded ``seed + i``, so a new study
  repeats itself from its study file (worker 1 with ``seed: 0`` draws what ``seed: 1`` alone draws);
* ``(session, i)``: worker ``i`` of a later ``ablate sweep`` of the study, ``session`` being the
  number of trials the storage held when that sweep began (``ablate sweep`` records it on the study,
  once, before any of its workers starts, so workers starting together cannot race for it). A
  session that sampled anything created trials, so the next one has a larger number. A worker
  restarted within a session gets ``i + restarts * workers``: an index no other worker of it has;
* ``(session, "join", host:pid, trials)``: a worker joining a running study from another shell
  (``ablate worker``), which belongs to no session: its process and the trials at the moment it
  joined, so neither two joiners nor a joiner and a session's worker share a stream.

Streams other than the first session's are hashed with the seed into 32 bits (a collision between two
streams is a 1-in-4-billion chance). The samplers of :data:`SHARED_SEED` ignore streams: their workers
and sessions must all step through the one sequence the study's seed defines.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from ablate.errors import ConfigError
from ablate.sweep.schema import PRUNERS, SAMPLERS

__all__ = ["SHARED_SEED", "Search", "StopAware", "Stream", "build_pruner", "build_sampler", "build_search",
           "grid_of", "options_of", "stream_seed"]

_T = TypeVar("_T")

_SAMPLER_CLASSES: dict[str, type[BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "gp": optuna.samplers.GPSampler,
    "bruteforce": optuna.samplers.BruteForceSampler,
}


SHARED_SEED = ("grid", "qmc")
"""Samplers whose parallel workers split one sequence that the seed defines, so all use one seed.

Grid: the seed shuffles the grid and trial *n* takes point *n* of the shuffled grid, so workers
with other seeds repeat points and skip others. QMC: the seed scrambles the one low-discrepancy
sequence that the study's trials step through (Optuna: parallel QMC samplers must share it).
A resumed session continues that sequence, so it keeps the seed too.
Brute force keeps the offset: its seed only orders its random pick among the points not yet
started, which differing seeds make less likely to coincide between workers asking at once.
"""

Stream = tuple[int | str, ...]
"""Which of a study's samplers draws: ``(session, worker index)`` or a joiner's key (module docstring)."""


def stream_seed(seed: int, stream: Stream) -> int:
    """The seed of the sampler drawing ``stream`` of a study seeded ``seed`` (see the module docstring).

    ``(0, i)`` -> ``seed + i``; any other stream -> 32 bits of a SHA-256 of the seed and the stream.
    """
    if len(stream) == 2 and stream[0] == 0 and isinstance(stream[1], int):
        return seed + stream[1]
    digest = hashlib.sha256(json.dumps([seed, *stream]).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def options_of(node: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``{"name": "tpe", "seed": 0, ...}`` -> ``("tpe", {"seed": 0, ...})``."""
    return str(node["name"]), {k: v for k, v in node.items() if k != "name"}


def grid_of(distributions: Mapping[str, BaseDistribution], params: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Every point of a search space that has a grid: choices, and stepped ranges.

    Raises:
        ConfigError: a parameter is a continuous interval (``params`` gives its grammar for the message).
    """
    grid: dict[str, list[Any]] = {}
    for key, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            grid[key] = list(dist.choices)
        elif getattr(dist, "step", None) is not None:
            low, high, step = dist.low, dist.high, dist.step  # type: ignore[attr-defined]
            n = round((high - low) / step) + 1
            grid[key] = [low + i * step for i in range(n)]
        else:
            raise ConfigError(f"params.{key}", params.get(key),
                              "choice(...) or range(...) with the grid sampler (an interval has no grid)")
    return grid


def build_sampler(name: str, *, stream: Stream = (0, 0), grid: Mapping[str, Sequence[Any]] | None = None,
                  **options: Any) -> BaseSampler:
    """One worker's sampler: ``name`` with the Optuna constructor's ``options``.

    Args:
        name: One of :data:`~ablate.sweep.spec.SAMPLERS`.
        stream: Which of the study's samplers this is: sets the seed from ``seed``
            (:func:`stream_seed`), so no two workers or sessions draw alike; except for the
            samplers in :data:`SHARED_SEED`, whose workers must share it.
        grid: The search grid (``grid`` only; see :func:`grid_of`).
        **options: Keyword arguments of the sampler's constructor (``seed``, ``n_startup_trials``...).

    Raises:
        ConfigError: an unknown sampler, grid without a grid, or options its Optuna class refuses.
    """
    if options.get("seed") is not None and name not in SHARED_SEED:
        options["seed"] = stream_seed(int(options["seed"]), stream)
    if name == "grid":
        if grid is None:
            raise ConfigError("sampler", name, "a search space of choice(...) and range(...) for grid")
        return optuna.samplers.GridSampler(dict(grid), seed=options.get("seed"))
    if name not in _SAMPLER_CLASSES:
        raise ConfigError("sampler", name, "one of: " + ", ".join(SAMPLERS))
    cls = _SAMPLER_CLASSES[name]
    return _constructed("sampler", name, options, lambda: cls(**options))


def _constructed(kind: str, name: str, options: Mapping[str, Any], make: Callable[[], _T]) -> _T:
    """``make()``, an Optuna constructor call; the options it refuses are a :class:`ConfigError`."""
    try:
        with warnings.catch_warnings():  # QMC, GP...: chosen by the study, not news to its author
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return make()
    except (TypeError, ValueError) as exc:
        given = ", ".join(f"{kind}.{key}={value}" for key, value in options.items()) or "no options"
        raise ConfigError(kind, name, f"options its Optuna class accepts; {given}: {exc}") from None


def build_pruner(name: str, *, epochs: int, **options: Any) -> BasePruner:
    """The study's pruner: ``name`` with the Optuna constructor's ``options``.

    Args:
        name: One of :data:`~ablate.sweep.spec.PRUNERS`.
        epochs: The trials' ``trainer.epochs``: hyperband's ``max_resource: auto``, made explicit so
            every worker agrees on the brackets.
        **options: Keyword arguments of the pruner's constructor.

    Raises:
        ConfigError: an unknown pruner, or options its Optuna class refuses.
    """
    p = optuna.pruners
    classes: dict[str, Any] = {
        "none": p.NopPruner, "median": p.MedianPruner, "percentile": p.PercentilePruner,
        "successive_halving": p.SuccessiveHalvingPruner, "hyperband": p.HyperbandPruner,
        "patient": lambda **kw: p.PatientPruner(None, **kw), "threshold": p.ThresholdPruner}
    if name == "hyperband" and options.get("max_resource") == "auto":
        options["max_resource"] = epochs
    if name in classes:
        pruner: BasePruner = _constructed("pruner", name, options, lambda: classes[name](**options))
        return pruner
    raise ConfigError("pruner", name, "one of: " + ", ".join(PRUNERS))


@dataclass(frozen=True)
class Search:
    """What a worker searches with: the study's sampler and pruner, and how many points a grid has."""

    sampler: StopAware
    pruner: BasePruner
    points: int | None  # grid points (None for other samplers): a grid study runs at most this many


def build_search(sampler: Mapping[str, Any], pruner: Mapping[str, Any],
                 distributions: Mapping[str, BaseDistribution], params: Mapping[str, Any], *,
                 epochs: int, stream: Stream = (0, 0)) -> Search:
    """The sampler and pruner of a study's ``sampler:`` / ``pruner:`` nodes, over its search space.

    ``ablate sweep`` builds them once before it creates anything, so a setting they refuse is one
    line there; every worker then builds the same ones.

    Raises:
        ConfigError: grid over an interval, brute force over an interval, an unknown sampler or
            pruner, or options their Optuna classes refuse.
    """
    name, options = options_of(sampler)
    grid = grid_of(distributions, params) if name == "grid" else None
    if name == "bruteforce":
        for key, dist in distributions.items():
            if isinstance(dist, FloatDistribution) and dist.step is None:
                raise ConfigError(f"params.{key}", params.get(key),
                                  "choice(...) or range(...) with the bruteforce sampler "
                                  "(it tries every point; an interval has infinitely many)")
    built = StopAware(build_sampler(name, stream=stream, grid=grid, **options))
    pruner_name, pruner_options = options_of(pruner)
    points = None if grid is None else math.prod(len(values) for values in grid.values())
    return Search(built, build_pruner(pruner_name, epochs=epochs, **pruner_options), points)


class StopAware(BaseSampler):
    """Lets samplers that end a study themselves (grid, brute force) do so under ask-and-tell.

    They call ``study.stop()`` from ``after_trial``, which Optuna allows only inside ``optimize``;
    the wrapper records it as :attr:`exhausted` and the worker stops asking.
    """

    def __init__(self, sampler: BaseSampler) -> None:
        self.inner = sampler
        self.exhausted = False

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        try:
            self.inner.after_trial(study, trial, state, values)
        except RuntimeError:  # study.stop() outside optimize: the space is exhausted
            self.exhausted = True

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
