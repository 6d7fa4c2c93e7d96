"""``ablate plan``: the design, the time from earlier trials, and after a pilot each trick's verdict
and the seeds it needs; nothing created or changed. Pilots are real Optuna studies made by
``prepare_study`` whose queued trials are told constructed values (no training needed)."""

from __future__ import annotations

import datetime
import textwrap
from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from ablate.cli import main
from ablate.sweep import compose_study, prepare_study
from ablate.sweep.plan import _cost, _per_arm_seconds, plan_text
from ablate.sweep.worker import suggest

LOO = """
    design: leave_one_out
    seeds: 3
    workers: 2
    fixed: {data: digits, model: mlp, trainer.epochs: 1}
    reference: {optimizer: adam, norm: batch}
    tricks: {optimizer: sgd, norm: null}
"""


def _write(cwd: Path, name: str, body: str) -> None:
    (cwd / "sweeps").mkdir(exist_ok=True)
    (cwd / "sweeps" / f"{name}.yaml").write_text(
        "defaults: [base_study, {sampler: random}, {pruner: none}, _self_]\n" + textwrap.dedent(body))


def _listing(cwd: Path) -> dict[str, int]:
    return {str(p.relative_to(cwd)): p.stat().st_size for p in sorted(cwd.rglob("*")) if p.is_file()}


def _pilot(cwd: Path, name: str, values: dict[str, list[float]], overrides: tuple[str, ...] = ()) -> None:
    """The study's queued (arm, seed) trials told ``values[arm][seed]`` (missing: left queued)."""
    study, spec, _ = prepare_study(compose_study(name, overrides, cwd=cwd))
    for _ in [t for t in study.trials if t.state == TrialState.WAITING]:
        trial = study.ask()
        params = {k: suggest(trial, k, d) for k, d in spec.space.distributions.items()}
        arm_values = values.get(params["arm"], [])
        if params["seed"] < len(arm_values):
            study.tell(trial, arm_values[params["seed"]])
        else:
            study.tell(trial, state=TrialState.FAIL)


def test_before_any_run_the_plan_lists_arms_and_seeds_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "loo", LOO)
    before = _listing(tmp_path)
    assert main(["plan", "loo"]) == 0
    out = capsys.readouterr().out
    assert "Study loo: leave_one_out, 3 arms, 3 seeds per arm (9 runs), 2 workers" in out
    assert "arm reference" in out and "arm -optimizer=adam" in out and "arm -norm=batch" in out
    assert "(no such study yet)" in out and "no estimate" in out and "ablate sweep loo seeds=2" in out
    assert _listing(tmp_path) == before  # no journal, no MLflow store, no runs/ folder


def test_after_a_pilot_each_trick_has_its_verdict_and_the_unresolved_one_the_seeds_it_needs(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "loo", LOO)
    _pilot(tmp_path, "loo", {"reference": [0.950, 0.960, 0.940],
                             "-optimizer=adam": [0.800, 0.820, 0.780],  # adam helps by ~15 pts, clearly
                             "-norm=batch": [0.945, 0.965, 0.930]})  # norm: +0.3 pts, sd 0.8: open
    before = _listing(tmp_path)
    assert main(["plan", "loo"]) == 0
    out = capsys.readouterr().out
    assert _listing(tmp_path) == before  # read only
    assert "Earlier trials: 9 finished" in out and "nothing left to run at this budget" in out
    assert "margin ±0.50 pts, confidence 0.95" in out
    (adam,) = [line for line in out.splitlines() if line.strip().startswith("optimizer=adam")]
    assert "+15.00 pts" in adam and adam.endswith("helps")
    (norm,) = [line for line in out.splitlines() if line.strip().startswith("norm=batch")]
    assert "+0.33 pts" in norm and "unresolved: about" in norm and "more seeds per arm" in norm
    needed = int(norm.split("about ")[1].split()[0])
    assert 3 <= needed <= 100
    total = 3 + needed
    assert f"({total} in all)" in norm
    assert f"{total} seeds per arm ({3 * total} runs" in out
    assert f"ablate sweep loo seeds={total} name=loo_{total}" in out
    assert f"'seeds={{start: 3, step: 2, max: {2 * total}}}' name=loo_adaptive" in out


def test_an_adaptive_pilot_is_judged_by_the_rule_and_the_rounds_add_the_seeds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "loo", LOO.replace("seeds: 3", "seeds: {start: 3, step: 2, max: 60}"))
    _pilot(tmp_path, "loo", {"reference": [0.950, 0.960, 0.940], "-optimizer=adam": [0.800, 0.820, 0.780],
                             "-norm=batch": [0.945, 0.965, 0.930]})
    assert main(["plan", "loo"]) == 0
    out = capsys.readouterr().out
    assert ("adaptive seeds: 3 per arm first, then 2 more per round where a verdict is open, at most 60 "
            "(9 to 180 runs)") in out
    (norm,) = [line for line in out.splitlines() if line.strip().startswith("norm=batch")]
    assert "unresolved: about" in norm  # within the schedule's looks
    assert "this study's rounds add them (up to seeds.max=60): ablate sweep loo" in out


def test_a_stored_study_with_another_recipe_is_refused_as_sweep_refuses_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "loo", LOO)
    _pilot(tmp_path, "loo", {"reference": [0.9, 0.9, 0.9]})
    capsys.readouterr()  # the pilot's own output (MLflow logs creating its database), not plan's
    assert main(["plan", "loo", "seeds=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another recipe" in err[0] and "name=" in err[0]


def test_a_search_plans_its_trials_and_their_time(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "search", """
        n_trials: 6
        workers: 1
        fixed: {data: digits, model: mlp, trainer.epochs: 1}
        params: {optimizer.lr: tag(log, interval(1e-3, 0.1))}
    """)
    assert main(["plan", "search"]) == 0
    out = capsys.readouterr().out
    assert "Study search: search, 6 trials, sampler random, pruner none, 1 worker" in out
    assert "ablate sweep search n_trials=4" in out


def test_a_factorial_pilot_judges_its_terms(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "fac", """
        design: factorial
        seeds: 3
        fixed: {data: digits, model: mlp, trainer.epochs: 1}
        reference: {norm: batch, dropout: 0.1}
        tricks: {norm: null, dropout: null}
    """)
    spec = compose_study("fac", cwd=tmp_path)
    norm_on = {arm for arm, on in spec.factors["norm=batch"].items() if on}
    values = {arm: [0.90 + (0.05 if arm in norm_on else 0.0) + 0.001 * s for s in range(3)]
              for arm in spec.arms}
    _pilot(tmp_path, "fac", values)
    assert main(["plan", "fac"]) == 0
    out = capsys.readouterr().out
    (norm,) = [line for line in out.splitlines() if line.strip().startswith("norm=batch ")]
    assert "+5.00 pts" in norm


def _frozen(number: int, arm: str, seconds: float, state: TrialState = TrialState.COMPLETE) -> FrozenTrial:
    start = datetime.datetime(2026, 1, 1)
    return FrozenTrial(number=number, state=state, value=0.9 if state == TrialState.COMPLETE else None,
                       values=None, datetime_start=start,
                       datetime_complete=start + datetime.timedelta(seconds=seconds),
                       params={"arm": arm}, distributions={"arm": CategoricalDistribution(["a", "b"])},
                       user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=number)


def test_the_time_is_each_arms_median_times_its_runs_left_over_the_workers():
    trials = [_frozen(0, "a", 2.0), _frozen(1, "a", 4.0), _frozen(2, "a", 3.0), _frozen(3, "b", 10.0),
              _frozen(4, "b", 99.0, TrialState.FAIL)]  # a failed trial's time is not a trial's time
    seconds = _per_arm_seconds(trials)
    assert seconds == {"": 3.5, "a": 3.0, "b": 10.0}
    assert _cost({"a": 4, "b": 1}, seconds, workers=2) == pytest.approx((4 * 3.0 + 10.0) / 2)
    assert _cost({"c": 2}, seconds, workers=1) == pytest.approx(7.0)  # an arm not run yet: the median
    assert _cost({"a": 0}, {}, workers=1) == 0.0


def test_plan_usage_and_bad_studies(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["plan"]) == 2 and "usage: ablate plan <study>" in capsys.readouterr().out
    assert main(["plan", "--help"]) == 0
    capsys.readouterr()
    assert plan_text(compose_study("ablation_digits", cwd=tmp_path)).startswith(
        "Study ablation_digits: leave_one_out, 10 arms")
