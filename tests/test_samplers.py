"""Every sampler and pruner a study file can name, built from its shipped YAML and run against a real
Optuna journal storage (ask and tell on a known objective; no training)."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from ablate.errors import ConfigError
from ablate.sweep import PRUNERS, SAMPLERS, compose_study
from ablate.sweep.samplers import StopAware, build_pruner, build_sampler, grid_of, options_of
from ablate.sweep.spec import SWEEPS_DIR
from ablate.sweep.worker import suggest

DEPTHS = (1, 2, 3, 4)
OPTIMIZERS = ("sgd", "adam")
POINTS = set(itertools.product(DEPTHS, OPTIMIZERS))


def _spec(tmp_path: Path, sampler: str = "random", pruner: str = "none", *overrides: str) -> Any:
    (tmp_path / "sweeps").mkdir(exist_ok=True)
    (tmp_path / "sweeps" / "space.yaml").write_text(textwrap.dedent(f"""
        defaults: [base_study, {{sampler: {sampler}}}, {{pruner: {pruner}}}, _self_]
        n_trials: 8
        fixed: {{trainer.epochs: 10}}
        params:
          model.depth: range(1, 5)
          optimizer: choice(sgd, adam)
    """))
    return compose_study("space", list(overrides), cwd=tmp_path)


def _study(tmp_path: Path, name: str, sampler: Any, pruner: Any = None) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(tmp_path / f"{name}.log")))
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                               direction="maximize")


def _sampler(spec: Any, *, worker_index: int = 0, session: int = 0) -> StopAware:
    name, options = options_of(spec.sampler)
    grid = grid_of(spec.space.distributions, spec.params) if name == "grid" else None
    return StopAware(build_sampler(name, stream=(session, worker_index), grid=grid, **options))


def _ask_tell(study: optuna.Study, spec: Any, sampler: StopAware, n: int) -> list[tuple[Any, ...]]:
    drawn = []
    for _ in range(n):
        if sampler.exhausted:
            break
        trial = study.ask()
        params = {k: suggest(trial, k, d) for k, d in spec.space.distributions.items()}
        drawn.append((params["model.depth"], params["optimizer"]))
        study.tell(trial, params["model.depth"] + (params["optimizer"] == "adam") * 0.5)
    return drawn


def test_every_sampler_and_pruner_has_a_shipped_file():
    assert {p.stem for p in (SWEEPS_DIR / "sampler").glob("*.yaml")} == set(SAMPLERS)
    assert set(PRUNERS) <= {p.stem for p in (SWEEPS_DIR / "pruner").glob("*.yaml")}


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.filterwarnings("ignore:.*(independent|fall back|falls back).*:UserWarning")
@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_draws_inside_the_space_and_repeats_itself_with_its_seed(tmp_path, name):
    spec = _spec(tmp_path, name)
    s, t = _sampler(spec), _sampler(spec)
    first = _ask_tell(_study(tmp_path, "a", s), spec, s, 12)
    again = _ask_tell(_study(tmp_path, "b", t), spec, t, 12)
    assert set(first) <= POINTS and first
    assert first == again  # the study file's seed makes a sweep reproducible
    if name in ("grid", "bruteforce"):  # exhaustive: every point once, then the sampler ends the study
        assert sorted(first) == sorted(POINTS) and s.exhausted


@pytest.mark.parametrize("name", ["random", "tpe", "bruteforce"])
def test_a_workers_index_offsets_its_sampler_seed(tmp_path, name):
    spec = _spec(tmp_path, name)
    s1 = _sampler(spec, worker_index=1)
    second_worker = _ask_tell(_study(tmp_path, "w1", s1), spec, s1, 6)
    seeded_one = _spec(tmp_path, name, "none", "sampler.seed=1")
    s2 = _sampler(seeded_one)
    alone = _ask_tell(_study(tmp_path, "s1", s2), seeded_one, s2, 6)
    assert second_worker == alone


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("name", ["grid", "qmc"])
def test_parallel_workers_of_grid_and_qmc_share_one_sequence(tmp_path, name):
    """Grid and QMC split one sequence between workers: every worker must build it from the same seed.

    Two workers ask in turn on one study; together they draw what one worker alone draws (for the
    grid: every point once), not two interleaved sequences that repeat points and skip others.
    """
    spec = _spec(tmp_path, name)
    first = _study(tmp_path, "shared", _sampler(spec, worker_index=0))
    second = optuna.load_study(study_name="shared", storage=first._storage,
                               sampler=_sampler(spec, worker_index=1))
    together = [point for _ in range(4) for study in (first, second)
                for point in _ask_tell(study, spec, study.sampler, 1)]
    alone_sampler = _sampler(spec)
    alone = _ask_tell(_study(tmp_path, "alone", alone_sampler), spec, alone_sampler, 8)
    assert together == alone
    if name == "grid":
        assert sorted(together) == sorted(POINTS)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("name", ["grid", "qmc", "bruteforce"])
def test_a_resumed_session_of_grid_qmc_or_bruteforce_still_covers_each_point_once(tmp_path, name):
    """A later session's sampler (of a study resumed at 4 trials) continues the study: grid and QMC
    step on through the one sequence, brute force tries the points not yet tried."""
    spec = _spec(tmp_path, name)
    first = _study(tmp_path, "resumed", _sampler(spec))
    drawn = _ask_tell(first, spec, first.sampler, 4)
    later = _sampler(spec, session=4)
    resumed = optuna.load_study(study_name="resumed", storage=first._storage, sampler=later)
    drawn += _ask_tell(resumed, spec, later, 4)
    alone_sampler = _sampler(spec)
    alone = _ask_tell(_study(tmp_path, "alone", alone_sampler), spec, alone_sampler, 8)
    if name == "bruteforce":
        assert sorted(drawn) == sorted(POINTS)
    else:
        assert drawn == alone


def test_grid_refuses_an_interval_and_unknown_names_are_refused(tmp_path):
    spec = _spec(tmp_path, "grid", "none", "params.optimizer.lr=interval(0.001, 0.1)")
    with pytest.raises(ConfigError, match=r"params\.optimizer\.lr: .*an interval has no grid"):
        grid_of(spec.space.distributions, spec.params)
    with pytest.raises(ConfigError, match=r"sampler: 'anneal'.*one of: tpe, random"):
        build_sampler("anneal")
    with pytest.raises(ConfigError, match=r"pruner: 'wait'.*one of: none, median"):
        build_pruner("wait", epochs=10)


def _curve(level: float, steps: int = 10) -> list[float]:
    return [level * (1 - 0.5 ** (s + 1)) for s in range(steps)]


@pytest.mark.parametrize(("name", "overrides"), [
    ("none", []), ("median", []), ("percentile", []), ("successive_halving", []),
    ("hyperband", []), ("hyperband_eta5", []), ("patient", []), ("threshold", ["pruner.lower=0.3"]),
])
def test_every_pruner_stops_a_hopeless_trial_and_spares_good_ones(tmp_path, name, overrides):
    spec = _spec(tmp_path, "random", name, *overrides)
    pruner_name, options = options_of(spec.pruner)
    pruner = build_pruner(pruner_name, epochs=10, **options)
    study = _study(tmp_path, "p", optuna.samplers.RandomSampler(seed=0), pruner)
    good_pruned = 0
    for i in range(12):  # good trials: rising curves, a new best every epoch
        trial = study.ask()
        for step, value in enumerate(_curve(0.8 + 0.01 * i), start=1):
            trial.report(value, step)
            if trial.should_prune() and name not in ("successive_halving", "hyperband", "hyperband_eta5"):
                good_pruned += 1  # (halving prunes the worse half of good trials too, by design)
                break
        study.tell(trial, _curve(0.8 + 0.01 * i)[-1])
    pruned_at = []
    for _ in range(4):  # hopeless trials: low and getting worse, far below every good one
        trial = study.ask()
        for step in range(1, 11):
            trial.report(0.2 - 0.01 * step, step)
            if trial.should_prune():
                pruned_at.append(step)
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, 0.1)
    assert good_pruned == 0
    if name == "none":
        assert pruned_at == []
    else:
        assert pruned_at, f"{name} never pruned a hopeless trial"
        assert min(pruned_at) <= 5  # before half of its epochs
