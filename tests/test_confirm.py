"""A search's confirmation (``confirm: {top, seeds}``): its best trials trained again on more seeds.

The queueing and bookkeeping run on a real Optuna journal storage with trials told by hand (no
training); the end-to-end tests (``slow``) run ``ablate sweep`` and ``ablate report`` on digits.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from scipy import stats
from tiny_studies import interrupt_when, journal_study

from ablate import records as R
from ablate.analysis import confirmed_means
from ablate.cli import main
from ablate.errors import ConfigError
from ablate.sweep import StudySpec, compose_study
from ablate.sweep.confirm import next_confirmations
from ablate.sweep.plan import plan_text
from ablate.sweep.spec import resolve_reference
from ablate.sweep.storage import best_trial, confirm_of, confirmed, is_repeat, is_surplus, retry_params
from ablate.sweep.worker import suggest

ABLATE = [sys.executable, "-m", "ablate"]

SEARCH = """
    n_trials: 4
    workers: 2
    confirm: {top: 2, seeds: 2}
    fixed: {data: digits, model: mlp, trainer.epochs: 2}
    params:
      optimizer.lr: tag(log, interval(1e-3, 0.3))
"""


def _write(cwd: Path, name: str, body: str) -> None:
    (cwd / "sweeps").mkdir(exist_ok=True)
    (cwd / "sweeps" / f"{name}.yaml").write_text(
        "defaults: [base_study, {sampler: random}, {pruner: none}, _self_]\n" + textwrap.dedent(body))


def _study(cwd: Path, overrides: tuple[str, ...] = ()) -> tuple[optuna.Study, StudySpec]:
    """The study ``s`` as ``ablate sweep`` creates it in its journal (without its MLflow parent run)."""
    spec = compose_study("s", overrides, cwd=cwd)
    Path(spec.storage).parent.mkdir(parents=True)
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(spec.storage)),
                                direction=spec.direction)
    study.set_user_attr(R.ATTR_SPEC, spec.to_json())
    return study, spec


def _tell_search(study: optuna.Study, spec, outcomes: list[tuple[str, float | None]]) -> None:
    """Ask and tell the search's trials: ``("complete", value)``, ``("pruned", v)``, ``("failed", None)``
    or ``("diverged", v)`` (held COMPLETE with its last finite value, as the worker tells it)."""
    for outcome, value in outcomes:
        trial = study.ask()
        for key, dist in spec.space.distributions.items():
            suggest(trial, key, dist)
        if outcome == "complete":
            study.tell(trial, value)
        elif outcome == "pruned":
            trial.report(value, 1)
            study.tell(trial, state=TrialState.PRUNED)
        elif outcome == "diverged":
            trial.set_user_attr(R.ATTR_OUTCOME, R.DIVERGED)
            study.tell(trial, value)
        else:
            trial.set_user_attr(R.ATTR_OUTCOME, R.FAILED)
            study.tell(trial, state=TrialState.FAIL)


def _run_queued(study: optuna.Study, spec, value_of) -> list[tuple[int, int]]:
    """Run the queued confirmation trials as a worker would, telling ``value_of(of, seed)``."""
    ran = []
    while any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        trial = study.ask()
        frozen = study.get_trials(deepcopy=False)[trial.number]
        of, seed = confirm_of(frozen), int(retry_params(frozen)["seed"])
        for key, dist in spec.space.distributions.items():
            suggest(trial, key, dist)
        study.tell(trial, value_of(of, seed))
        ran.append((of, seed))
    return ran


def test_the_top_trials_are_queued_once_on_new_seeds_and_the_best_is_the_best_mean(tmp_path):
    _write(tmp_path, "s", SEARCH.replace("n_trials: 4", "n_trials: 6").replace("top: 2", "top: 3"))
    study, spec = _study(tmp_path)
    # trial 3 diverged with the best value, 4 was pruned, 5 failed: none of them is a candidate
    _tell_search(study, spec, [("complete", 0.90), ("complete", 0.95), ("complete", 0.80),
                               ("diverged", 0.99), ("pruned", 0.97), ("failed", None)])
    assert next_confirmations(study, spec, base_seed=0) is None  # 5 of 6 finished: the search goes on
    assert not [t for t in study.trials if t.state == TrialState.WAITING]
    _tell_search(study, spec, [("complete", 0.85)])  # trial 6: now 6 finished
    assert next_confirmations(study, spec, base_seed=0) is None  # queued
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    pairs = sorted((confirm_of(t), retry_params(t)["seed"]) for t in waiting)
    assert pairs == [(0, 1), (0, 2), (1, 1), (1, 2), (6, 1), (6, 2)]  # the top 3 complete ones, seeds 1 and 2
    by_number = {t.number: t for t in study.trials}
    for t in waiting:
        params = {k: v for k, v in retry_params(t).items() if k in spec.space.distributions}
        assert params == by_number[confirm_of(t)].params
        assert t.user_attrs[R.ATTR_CONFIRM_OF] == confirm_of(t)
    assert next_confirmations(study, spec, base_seed=0) is None  # looked at again: nothing queued twice
    assert len([t for t in study.trials if t.state == TrialState.WAITING]) == 6

    # trial 1 was lucky: its other seeds are worse than trial 0's
    seeds = {0: {1: 0.93, 2: 0.94}, 1: {1: 0.85, 2: 0.86}, 6: {1: 0.84, 2: 0.86}}
    assert sorted(_run_queued(study, spec, lambda of, s: seeds[of][s])) == pairs
    assert best_trial(study.trials, "maximize").number == 1  # a confirmation run is never the best trial
    reason = next_confirmations(study, spec, base_seed=0)
    assert reason == "trials 1, 0, 6 on 2 more seeds each"
    assert study.user_attrs[R.ATTR_CONFIRMED] == {"top": 3, "seeds": 2, "search": 6, "reason": reason}
    rows = confirmed(study.trials, "maximize")
    assert [r["trial"] for r in rows] == [0, 1, 6] and [r["n"] for r in rows] == [3, 3, 3]
    values = [0.90, 0.93, 0.94]
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert rows[0]["mean"] == pytest.approx(np.mean(values))
    mean = np.mean(values)
    assert (rows[0]["ci_low"], rows[0]["ci_high"]) == pytest.approx((mean - half, mean + half))
    # an ablation's reference best_of:s is the confirmed best, not the lucky trial 1
    assert resolve_reference("best_of:s", cwd=tmp_path) == {**spec.fixed, **by_number[0].params}

    # the same study resumed with a larger n_trials: the search goes on, then its new best is confirmed
    more = dataclasses.replace(spec, n_trials=8)
    assert next_confirmations(study, spec, base_seed=0) == reason  # unchanged: still done
    _tell_search(study, more, [("complete", 0.99)])
    assert next_confirmations(study, more, base_seed=0) is None  # 7 of 8: the search goes on
    assert not [t for t in study.trials if t.state == TrialState.WAITING]
    _tell_search(study, more, [("complete", 0.50)])
    assert next_confirmations(study, more, base_seed=0) is None
    assert sorted((confirm_of(t), retry_params(t)["seed"]) for t in study.trials
                  if t.state == TrialState.WAITING) == [(13, 1), (13, 2)]  # trial 13 (0.99), now in the top 3


def test_seeds_follow_the_search_seed_and_a_failed_confirmation_is_not_queued_again(tmp_path):
    _write(tmp_path, "s", SEARCH)
    study, spec = _study(tmp_path, ("seed=7",))
    _tell_search(study, spec, [("complete", 0.5), ("complete", 0.7), ("complete", 0.6), ("complete", 0.4)])
    assert next_confirmations(study, spec, base_seed=7) is None
    trial = study.ask()  # the first queued one fails (an exception in training)
    for key, dist in spec.space.distributions.items():
        suggest(trial, key, dist)
    trial.set_user_attr(R.ATTR_OUTCOME, R.FAILED)
    study.tell(trial, state=TrialState.FAIL)
    _run_queued(study, spec, lambda of, s: 0.5)
    assert next_confirmations(study, spec, base_seed=7) is not None  # done: the failed seed is missing
    pairs = sorted((confirm_of(t), retry_params(t)["seed"]) for t in study.trials
                   if confirm_of(t) is not None)
    assert pairs == [(1, 8), (1, 9), (2, 8), (2, 9)]
    assert sorted(r["n"] for r in confirmed(study.trials, "maximize")) == [2, 3]


def test_confirmation_trials_are_outside_n_trials_and_their_pairs_run_once(tmp_path):
    _write(tmp_path, "s", SEARCH)
    study, spec = _study(tmp_path)
    _tell_search(study, spec, [("complete", 0.5), ("complete", 0.7), ("complete", 0.6), ("complete", 0.4)])
    next_confirmations(study, spec, base_seed=0)
    trials = study.get_trials(deepcopy=False)
    first = next(t for t in trials if t.state == TrialState.WAITING)
    assert is_surplus(trials, len(trials), 4)  # a search trial asked now would be surplus ...
    assert not is_surplus(trials, len(trials), 5)  # ... but the queued confirmation runs use no budget
    again = retry_params(first)
    assert is_repeat(trials, len(trials), again)  # the same (trial, seed) queued twice: the later copy
    assert not is_repeat(trials, len(trials), {**again, "seed": 99})
    text = plan_text(spec)
    assert "then the best 2 confirmed on 2 more seeds each (4 runs, 8 in all)" in text


def test_confirmed_means_are_t_intervals_best_first_without_nans():
    runs = pd.DataFrame({"arm": ["a", "a", "a", "b", "b", "b", "c"],
                         "v": [0.9, 0.8, 0.85, 0.95, 0.7, math.nan, 0.99]})
    table = confirmed_means(runs, "v", group="arm", ci=0.9)
    assert list(table["arm"]) == ["c", "a", "b"]  # c: one seed, its mean is known but not its interval
    assert list(table["n"]) == [1, 3, 2]
    a = table.set_index("arm").loc["a"]
    half = stats.t.ppf(0.95, 2) * np.std([0.9, 0.8, 0.85], ddof=1) / math.sqrt(3)
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((0.85 - half, 0.85 + half))
    assert math.isnan(table.set_index("arm").loc["c", "ci_low"])
    assert list(confirmed_means(runs, "v", group="arm", maximize=False)["arm"]) == ["b", "a", "c"]


@pytest.mark.parametrize(("body", "overrides", "field"), [
    (SEARCH, ["confirm={top:0,seeds:2}"], "confirm.top"),
    (SEARCH, ["confirm={top:2,seeds:0}"], "confirm.seeds"),
    (SEARCH, ["confirm={top:1,seeds:true}"], "confirm.seeds"),
    (SEARCH, ["confirm={top:5,seeds:2}"], "confirm.top"),  # more than the 4 trials
    (SEARCH, ["confirm=5"], "confirm"),
    (SEARCH, ["confirm={tops:3}"], "confirm.tops"),
    (SEARCH, ["n_trials=null", "timeout=60"], "confirm"),
    (SEARCH, ["params.seed=range(0, 9)"], "confirm"),
    ("design: leave_one_out\nseeds: 2\nfixed: {data: digits}\nreference: {norm: batch}\ntricks: [norm]\n",
     ["confirm={top:1,seeds:2}"], "confirm"),
])
def test_bad_confirm_is_one_line_naming_the_field(tmp_path, body, overrides, field):
    _write(tmp_path, "s", body)
    with pytest.raises(ConfigError) as caught:
        compose_study("s", overrides, cwd=tmp_path)
    assert caught.value.field == field
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize("command", ["sweep", "plan"])
def test_bad_confirm_exits_2_and_creates_nothing(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "s", SEARCH)
    assert main([command, "s", "confirm={top:0,seeds:2}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ablate: error: confirm.top: 0 is not allowed; expected a whole number >= 1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweeps"]


# --- end to end ----------------------------------------------------------------------------------------


def _sweep(cwd: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ABLATE, "sweep", name], cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)


def _children(cwd: Path, name: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get(R.TAG_KIND) != R.KIND_STUDY]


def _check_confirmed(cwd: Path, name: str, top: int, seeds: int) -> list[dict]:
    """Exactly top x seeds confirmation trials, of the top trials, on new seeds, each one FINISHED run."""
    study = journal_study(cwd, name)
    search = [t for t in study.trials if confirm_of(t) is None]
    confirming = [t for t in study.trials if confirm_of(t) is not None and t.state == TrialState.COMPLETE]
    ranked = sorted((t for t in search if t.state == TrialState.COMPLETE), key=lambda t: (-t.value, t.number))
    top_numbers = {t.number for t in ranked[:top]}
    pairs = sorted((confirm_of(t), int(retry_params(t)["seed"])) for t in confirming)
    assert pairs == sorted((n, s) for n in top_numbers for s in range(1, seeds + 1))  # each pair once
    by_number = {t.number: t for t in study.trials}
    assert all(t.params == by_number[confirm_of(t)].params for t in confirming)
    assert sum(t.state == TrialState.COMPLETE for t in search) == 4  # n_trials of the search itself
    runs = [r for r in _children(cwd, name)
            if r.info.status == "FINISHED" and R.TAG_CONFIRM_OF in r.data.tags]
    assert sorted((int(r.data.tags[R.TAG_CONFIRM_OF]), int(r.data.params["seed"])) for r in runs) == pairs
    return confirmed(study.trials, "maximize")


@pytest.mark.slow
def test_a_search_confirms_its_best_and_the_report_shows_the_best_mean_with_its_interval(tmp_path):
    _write(tmp_path, "conf", SEARCH)
    out = _sweep(tmp_path, "conf")
    assert out.returncode == 0, out.stderr
    rows = _check_confirmed(tmp_path, "conf", top=2, seeds=2)
    best = rows[0]
    assert f"Best val_acc: mean {best['mean']:.4f} over 3 seeds (trial {best['trial']})" in out.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = [r for r in client.search_runs([client.get_experiment_by_name("conf").experiment_id])
                 if r.data.tags.get(R.TAG_KIND) == R.KIND_STUDY]
    assert json.loads(parent.data.tags[R.TAG_CONFIRMED]) == rows
    report = subprocess.run([*ABLATE, "report", "conf"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "reports" / "conf" / "report.md").read_text()
    low, high = f"{best['ci_low'] * 100:.2f}", f"{best['ci_high'] * 100:.2f}"
    assert (f"Best: trial {best['trial']}, mean best val acc {best['mean'] * 100:.2f} % \\[{low}, {high}\\] "
            "(95 % t-interval) over 3 seeds") in text
    for r in rows:  # each confirmed candidate's row: trial, seeds, mean, interval
        assert (f"| trial {r['trial']} | 3 | {r['mean'] * 100:.2f} | \\[{r['ci_low'] * 100:.2f}, "
                f"{r['ci_high'] * 100:.2f}\\] |") in text


@pytest.mark.slow
def test_a_sweep_interrupted_while_confirming_resumes_to_exactly_top_times_seeds_runs(tmp_path):
    _write(tmp_path, "conf", SEARCH.replace("trainer.epochs: 2", "trainer.epochs: 20"))
    rc, err = interrupt_when(tmp_path, "conf", lambda trials: any(
        confirm_of(t) is not None and t.state == TrialState.RUNNING and R.ATTR_RUN in t.user_attrs
        for t in trials))
    assert rc != 0 and "resume" in err
    study = journal_study(tmp_path, "conf")
    assert R.ATTR_CONFIRMED not in study.user_attrs
    assert any(confirm_of(t) is not None and t.state == TrialState.FAIL for t in study.trials)  # interrupted
    assert sum(confirm_of(t) is not None and t.state == TrialState.COMPLETE for t in study.trials) < 4
    out = _sweep(tmp_path, "conf")
    assert out.returncode == 0, out.stderr
    _check_confirmed(tmp_path, "conf", top=2, seeds=2)
    assert all(r.info.status in ("FINISHED", "KILLED") for r in _children(tmp_path, "conf"))
