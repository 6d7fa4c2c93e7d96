"""The worker in this process, against a real Optuna journal storage and a real MLflow store.

The end-to-end tests (tests/test_sweep.py) run workers as processes; these drive
:class:`ablate.sweep.worker.Worker` directly, so the ask -> compose -> fit -> tell steps and what
each records can be checked one by one.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from tiny_datasets import write_unreadable_mnist

from ablate import records as R
from ablate.cli import main
from ablate.errors import AblateError
from ablate.report import analyse
from ablate.report.collect import collect
from ablate.sweep import compose_study, count_states, prepare_study
from ablate.sweep import worker as worker_module
from ablate.sweep.storage import open_storage
from ablate.sweep.worker import Worker, run_worker


def _prepared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str
) -> tuple[optuna.Study, str]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps").mkdir(exist_ok=True)
    (tmp_path / "sweeps" / f"{name}.yaml").write_text(
        "defaults: [base_study, {sampler: random}, {pruner: none}, _self_]\n" + textwrap.dedent(body))
    study, spec, _ = prepare_study(compose_study(name, [], cwd=tmp_path))
    return study, spec.storage


def _reload(name: str, storage: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage, heartbeat_interval=None))


def _runs(tmp_path: Path, experiment: str) -> dict[str, object]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return {r.info.run_id: r for r in client.search_runs([exp.experiment_id], max_results=100)}


def test_a_minimised_metric_is_one_value_in_optuna_mlflow_and_the_report(tmp_path, monkeypatch):
    _, storage = _prepared(tmp_path, monkeypatch, "by_loss", """
        metric: val_loss
        direction: minimize
        n_trials: 3
        fixed: {data: digits, model: mlp, trainer.epochs: 3, trainer.threads: 1}
        params:
          optimizer.lr: tag(log, interval(1e-3, 0.5))
    """)
    assert run_worker("by_loss", storage, verbose=False) == 3
    study = _reload("by_loss", storage)
    runs = _runs(tmp_path, "by_loss")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        run = runs[trial.user_attrs[R.ATTR_RUN]]
        curve = [m.value for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert trial.value == run.data.metrics[R.best_metric("val_loss")] == min(curve)
        assert run.data.tags[R.TAG_STATUS] == R.COMPLETED and run.data.tags[R.TAG_OPTUNA_STATE] == "COMPLETE"
        assert run.data.tags[R.TAG_TRIAL_NUMBER] == str(trial.number)
        assert float(run.data.params[f"{R.PARAM_SAMPLED}optimizer.lr"]) == trial.params["optimizer.lr"]
        assert trial.user_attrs[R.ATTR_OUTCOME] == R.COMPLETED and trial.user_attrs[R.ATTR_EPOCHS_RUN] == 3
    collected = collect("by_loss", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = analyse(collected.runs, collected.history, collected.spec, collected.meta)
    assert result.fmt.name == R.best_metric("val_loss")
    by_arm = result.summary["mean"].to_dict()
    assert by_arm == {f"trial {t.number}": t.value for t in study.trials}


def test_an_ablation_runs_its_queued_arms_and_seeds_exactly_once(tmp_path, monkeypatch):
    _, storage = _prepared(tmp_path, monkeypatch, "tiny", """
        design: leave_one_out
        seeds: 2
        fixed: {data: digits, model: mlp, trainer.epochs: 1, trainer.threads: 1}
        reference: {norm: batch, dropout: 0.1}
        tricks: {norm: null, dropout: null}
    """)
    worker = Worker("tiny", storage, verbose=False)
    assert worker.run() == 6  # 3 arms x 2 seeds, and then it stops: nothing else is asked
    study = _reload("tiny", storage)
    done = sorted((t.params["arm"], t.params["seed"]) for t in study.trials if t.state == TrialState.COMPLETE)
    assert len(study.trials) == 6 and len(set(done)) == 6
    runs = _runs(tmp_path, "tiny")
    children = [r for r in runs.values() if r.data.tags.get(R.TAG_KIND) != R.KIND_STUDY]
    assert sorted((r.data.tags[R.TAG_ARM], int(r.data.params["seed"])) for r in children) == done
    assert {r.data.tags[R.TAG_DESIGN] for r in children} == {"leave_one_out"}


def test_a_pair_queued_twice_runs_once(tmp_path, monkeypatch):
    # What a round of adaptive seeds computed between a worker's FAIL of an interrupted trial and
    # its retry queues: a second copy of the (arm, seed). The earlier copy runs, the later one is
    # closed unrun (surplus), so the pair has one complete trial and one MLflow run.
    study, storage = _prepared(tmp_path, monkeypatch, "twice", """
        design: leave_one_out
        seeds: {start: 2, step: 1, max: 3}
        fixed: {data: digits, model: mlp, trainer.epochs: 1, trainer.threads: 1}
        reference: {norm: batch}
        tricks: {norm: null}
    """)
    study.enqueue_trial({"arm": "reference", "seed": 0})
    study.set_user_attr(R.ATTR_SEEDS_STOP, "max seeds reached")  # no supervisor: no later round
    assert Worker("twice", storage, verbose=False).run() == 4  # two arms, two seeds each
    study = _reload("twice", storage)
    done = [(t.params["arm"], t.params["seed"]) for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(done) == sorted(set(done)) and len(done) == 4
    (copy,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert copy.number == 4 and copy.user_attrs[R.ATTR_OUTCOME] == R.SURPLUS
    assert count_states(study.trials)["failed"] == 0
    children = [r for r in _runs(tmp_path, "twice").values() if r.data.tags.get(R.TAG_KIND) != R.KIND_STUDY]
    assert len(children) == 4


def test_a_trial_that_raises_is_failed_with_its_reason_and_the_worker_goes_on(tmp_path, monkeypatch):
    _, storage = _prepared(tmp_path, monkeypatch, "flaky", """
        n_trials: 2
        fixed: {data: digits, model: mlp, trainer.epochs: 1, trainer.threads: 1}
        params:
          seed: range(0, 100)
    """)
    real_fit = worker_module.fit
    calls = []

    def fit_failing_once(*args, **kwargs):  # a CUDA error or a bug in one trial
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA error: out of memory")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(worker_module, "fit", fit_failing_once)
    assert run_worker("flaky", storage, verbose=False) == 2
    study = _reload("flaky", storage)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    assert failed[0].user_attrs[R.ATTR_ERROR] == "RuntimeError: CUDA error: out of memory"
    assert count_states(study.trials)["finished"] == 2
    run = _runs(tmp_path, "flaky")[failed[0].user_attrs[R.ATTR_RUN]]
    assert run.info.status == "FAILED" and run.data.tags[R.TAG_STATUS] == R.FAILED


def test_an_interrupted_trial_is_failed_queued_again_and_its_run_killed(tmp_path, monkeypatch):
    _, storage = _prepared(tmp_path, monkeypatch, "stopped", """
        n_trials: 2
        fixed: {data: digits, model: mlp, trainer.epochs: 1, trainer.threads: 1}
        params:
          seed: range(0, 100)
    """)

    def interrupted(*args, **kwargs):  # Ctrl-C in the middle of training
        raise KeyboardInterrupt

    real_fit = worker_module.fit
    monkeypatch.setattr(worker_module, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_worker("stopped", storage, verbose=False)
    study = _reload("stopped", storage)
    (killed,) = [t for t in study.trials if t.state == TrialState.FAIL]
    (queued,) = [t for t in study.trials if t.state == TrialState.WAITING]
    assert queued.user_attrs[R.ATTR_RETRY_OF] == killed.number
    run = _runs(tmp_path, "stopped")[killed.user_attrs[R.ATTR_RUN]]
    assert run.info.status == "KILLED" and run.data.tags[R.TAG_STATUS] == R.KILLED
    assert count_states(study.trials)["killed"] == 1

    monkeypatch.setattr(worker_module, "fit", real_fit)  # the resume reruns the same trial first
    assert run_worker("stopped", storage, verbose=False) == 2
    rerun = _reload("stopped", storage).trials[queued.number]
    assert rerun.state == TrialState.COMPLETE and rerun.params == killed.params


def test_a_diverged_trial_counts_as_finished_with_its_best_finite_value(tmp_path, monkeypatch):
    _, storage = _prepared(tmp_path, monkeypatch, "blowup", """
        n_trials: 1
        fixed: {data: digits, model: mlp, trainer.epochs: 6, trainer.threads: 1, optimizer: sgd,
                optimizer.lr: 1e6, init: normal}
        params:
          seed: range(0, 1)
    """)
    run_worker("blowup", storage, verbose=False)
    (trial,) = _reload("blowup", storage).trials
    assert trial.user_attrs[R.ATTR_OUTCOME] == R.DIVERGED
    run = _runs(tmp_path, "blowup")[trial.user_attrs[R.ATTR_RUN]]
    assert run.data.tags[R.TAG_STOP_REASON] == R.DIVERGED
    value = run.data.metrics[R.best_metric("val_acc")]
    if trial.state == TrialState.COMPLETE:  # it had a finite epoch before it diverged
        assert trial.value == value
    else:
        assert math.isnan(value)


class _Died(BaseException):
    """The worker process ends here (SIGKILL, power loss): nothing after it runs."""


def test_a_run_that_finished_before_its_worker_died_untold_is_not_counted_twice(tmp_path, monkeypatch):
    from ablate.sweep.runs import fail_stale_trial, killed_hook

    _, storage = _prepared(tmp_path, monkeypatch, "untold", """
        n_trials: 2
        fixed: {data: digits, model: mlp, trainer.epochs: 1, trainer.threads: 1}
        params:
          seed: range(0, 100)
    """)
    real_tell = Worker._tell

    def lost(self, trial, result, out, error):  # the run ended FINISHED; the worker died before the tell
        self.telling.discard(trial.number)

    asks = []

    def die_at_the_second_ask():
        asks.append(1)
        if len(asks) == 2:
            raise _Died

    monkeypatch.setattr(Worker, "_tell", lost)
    with pytest.raises(_Died):
        Worker("untold", storage, verbose=False, before_ask=die_at_the_second_ask).run()
    study = _reload("untold", storage)
    (stale,) = [t for t in study.trials if t.state == TrialState.RUNNING]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert _runs(tmp_path, "untold")[stale.user_attrs[R.ATTR_RUN]].info.status == "FINISHED"
    fail_stale_trial(study, stale, killed_hook(uri))  # what the supervisor does for a dead worker's trial

    monkeypatch.setattr(Worker, "_tell", real_tell)
    assert run_worker("untold", storage, verbose=False) == 2
    study = _reload("untold", storage)
    assert count_states(study.trials)["finished"] == 2
    run = _runs(tmp_path, "untold")[stale.user_attrs[R.ATTR_RUN]]
    assert run.info.status == "KILLED" and run.data.tags[R.TAG_STATUS] == R.KILLED
    collected = collect("untold", tracking_uri=uri)
    assert collected.meta["counts"] == {R.FINISHED: 2, R.KILLED: 1}
    assert len(collected.runs) == 2


def test_trials_that_keep_failing_stop_the_workers_at_the_failure_budget(tmp_path, monkeypatch):
    # A valid recipe that fails at run time: data=mnist whose files under ./data are unreadable
    write_unreadable_mnist(tmp_path / "data")
    _, storage = _prepared(tmp_path, monkeypatch, "nodata", """
        n_trials: 20
        max_failures: 3
        fixed: {data: mnist, model: mlp, trainer.epochs: 1, trainer.threads: 1}
        params:
          seed: range(0, 100)
    """)
    with pytest.raises(AblateError, match=r"^max_failures: .*3 trials failed.*cannot read the MNIST files"):
        Worker("nodata", storage, verbose=False).run()
    study = _reload("nodata", storage)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3  # then it stopped asking
    runs = _runs(tmp_path, "nodata")
    for trial in study.trials:  # each failure's reason: on the trial and on its MLflow run
        assert trial.user_attrs[R.ATTR_OUTCOME] == R.FAILED
        assert "data.root: cannot read the MNIST files" in trial.user_attrs[R.ATTR_ERROR]
        run = runs[trial.user_attrs[R.ATTR_RUN]]
        assert run.info.status == "FAILED" and "cannot read the MNIST files" in run.data.tags[R.TAG_ERROR]
    # a worker joining later stops at once: the budget is the study's
    with pytest.raises(AblateError, match="max_failures"):
        run_worker("nodata", storage, verbose=False)
    assert len(_reload("nodata", storage).trials) == 3


def test_the_failure_budget_counts_exceptions_not_killed_or_surplus_trials(tmp_path, monkeypatch):
    from ablate.sweep.storage import fail_and_retry, spent_failures

    study, storage = _prepared(tmp_path, monkeypatch, "budget", """
        n_trials: 2
        fixed: {data: digits, model: mlp, trainer.epochs: 1, trainer.threads: 1}
        params:
          seed: range(0, 100)
    """)
    assert study.trials == [] and compose_study("budget", [], cwd=tmp_path).max_failures == 5
    assert compose_study("budget", ["n_trials=120"], cwd=tmp_path).max_failures == 12
    killed = study.ask()
    fail_and_retry(study, killed.number, {})  # its worker died: queued again, not a failure
    surplus = study.ask()
    surplus.set_user_attr(R.ATTR_OUTCOME, R.SURPLUS)
    study.tell(surplus, state=TrialState.FAIL)
    assert spent_failures(study.trials, 1) is None
    failed = study.ask()
    failed.set_user_attr(R.ATTR_OUTCOME, R.FAILED)
    failed.set_user_attr(R.ATTR_ERROR, "RuntimeError: boom")
    study.tell(failed, state=TrialState.FAIL)
    trials = _reload("budget", storage).trials
    assert spent_failures(trials, 2) is None
    last = spent_failures(trials, 1)
    assert last is not None and last.number == failed.number


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_resumed_or_joined_study_never_repeats_a_sampled_configuration(tmp_path, monkeypatch, sampler):
    # 4 trials, then resumed to 6 (a new session: its worker 0 is not the first session's worker 0),
    # then extended to 8 and finished by a worker joining from another shell (`ablate worker`, which
    # has no session of its own). Every sampler has the study file's seed: each must draw afresh.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "grow.yaml").write_text(textwrap.dedent(f"""
        defaults: [base_study, {{sampler: {sampler}}}, {{pruner: none}}, _self_]
        n_trials: 4
        fixed: {{data: digits, model: mlp, trainer.epochs: 1, trainer.threads: 1}}
        params:
          optimizer: choice(sgd, adam)
          optimizer.lr: tag(log, interval(1e-3, 0.5))
    """))
    _, spec, _ = prepare_study(compose_study("grow", [], cwd=tmp_path))
    assert run_worker("grow", spec.storage, verbose=False) == 4
    prepare_study(compose_study("grow", ["n_trials=6"], cwd=tmp_path))
    assert run_worker("grow", spec.storage, verbose=False) == 2
    prepare_study(compose_study("grow", ["n_trials=8"], cwd=tmp_path))
    assert main(["worker", "grow", "--storage", spec.storage]) == 0
    trials = _reload("grow", spec.storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    drawn = [(t.params["optimizer"], t.params["optimizer.lr"]) for t in trials]
    assert len(set(drawn)) == 8, drawn


@pytest.mark.parametrize("pruner", ["none", "median"])
def test_epochs_are_told_to_optuna_only_when_a_pruner_reads_them(tmp_path, monkeypatch, pruner):
    # Each told epoch is a write to the storage; without a pruner nothing reads them (MLflow has the curves).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "told.yaml").write_text(textwrap.dedent(f"""\
        defaults: [base_study, {{sampler: random}}, {{pruner: {pruner}}}, _self_]
        n_trials: 2
        fixed: {{data: digits, model: mlp, trainer.epochs: 3, trainer.threads: 1}}
        params:
          optimizer.lr: tag(log, interval(1e-3, 0.5))
    """))
    _, spec, _ = prepare_study(compose_study("told", [], cwd=tmp_path))
    assert run_worker("told", spec.storage, verbose=False) == 2
    trials = _reload("told", spec.storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all(sorted(t.intermediate_values) == ([] if pruner == "none" else [1, 2, 3]) for t in trials)


_FUSABLE = """
    design: leave_one_out
    seeds: 4
    fixed: {data: digits, model: mlp, model.width: 32, trainer.epochs: 3, trainer.threads: 1}
    reference: {norm: batch, weight_decay: 1e-4, clip: norm}
    tricks: {norm: null, weight_decay: null}
"""


def _trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str, fuse: int) -> tuple[
        dict[tuple[str, int], optuna.trial.FrozenTrial], dict[str, object]]:
    (tmp_path / folder).mkdir()
    _, storage = _prepared(tmp_path / folder, monkeypatch, "fusable", _FUSABLE + f"    fuse_seeds: {fuse}\n")
    assert Worker("fusable", storage, verbose=False).run() == 12
    trials = {(t.params["arm"], t.params["seed"]): t for t in _reload("fusable", storage).trials}
    return trials, _runs(tmp_path / folder, "fusable")


def test_fused_seeds_are_one_trial_and_one_run_each_with_the_values_of_seeds_trained_alone(tmp_path,
                                                                                          monkeypatch):
    alone, _ = _trained(tmp_path, monkeypatch, "alone", 1)
    fused, runs = _trained(tmp_path, monkeypatch, "fused", 4)
    assert sorted(fused) == sorted(alone) and len(fused) == 12  # 3 arms x 4 seeds, each once
    one_example = 1 / 300  # less than one example of the validation split, whose accuracy counts them
    for pair, trial in fused.items():
        assert trial.state == TrialState.COMPLETE
        assert trial.value == pytest.approx(alone[pair].value, abs=one_example + 1e-9)
        run = runs[trial.user_attrs[R.ATTR_RUN]]
        assert run.data.tags[R.TAG_FUSED] == "4"  # one worker took each arm's 4 queued seeds together
        assert int(run.data.params["seed"]) == pair[1] and run.data.tags[R.TAG_ARM] == pair[0]
        assert run.data.metrics[R.best_metric("val_acc")] == trial.value


def test_repeats_train_each_configuration_on_seeds_fused_and_tell_optuna_their_mean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "repeated.yaml").write_text(textwrap.dedent("""\
        defaults: [base_study, {sampler: random}, {pruner: median}, _self_]
        n_trials: 2
        repeats: 3
        fixed: {data: digits, model: mlp, model.width: 32, trainer.epochs: 3, trainer.threads: 1, seed: 5}
        params:
          optimizer.lr: tag(log, interval(1e-3, 0.5))
    """))
    _, spec, _ = prepare_study(compose_study("repeated", [], cwd=tmp_path))
    storage = spec.storage
    assert run_worker("repeated", storage, verbose=False) == 2
    trials = _reload("repeated", storage).trials
    runs = _runs(tmp_path, "repeated")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for trial in trials:
        assert trial.state == TrialState.COMPLETE
        run = runs[trial.user_attrs[R.ATTR_RUN]]
        assert run.data.tags[R.TAG_REPEATS] == "3"
        seeds = sorted((r for r in runs.values() if r.data.tags.get(R.TAG_PARENT) == run.info.run_id),
                       key=lambda r: int(r.data.params["seed"]))
        assert [int(r.data.params["seed"]) for r in seeds] == [5, 6, 7]  # the trial's seed, + 1, + 2
        curves = [[m.value for m in sorted(client.get_metric_history(r.info.run_id, "val_acc"),
                                           key=lambda m: m.step)] for r in seeds]
        # Optuna was told (and pruned on) the seeds' mean each epoch, and their best values' mean at the end
        mean = [sum(c[e] for c in curves) / 3 for e in range(3)]
        assert [trial.intermediate_values[e + 1] for e in range(3)] == pytest.approx(mean)
        assert trial.value == pytest.approx(sum(max(c) for c in curves) / 3)
        assert run.data.metrics[R.best_metric("val_acc")] == pytest.approx(trial.value)
        assert all(r.data.tags[R.TAG_FUSED] == "3" for r in seeds)
    # the report reads one run per trial: the seeds' runs are under their trial's, not the study's
    collected = collect("repeated", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(collected.runs) == 2 and collected.spec["repeats"] == 3
    assert main(["report", "repeated", "--format", "md"]) == 0  # its header says what a trial's value is
    assert "| Seeds | 3 per trial (repeats:" in (tmp_path / "reports" / "repeated" / "report.md").read_text()


def test_an_ablation_worker_never_runs_a_pair_its_rule_did_not_queue(tmp_path, monkeypatch):
    # Two workers saw one queued pair; the other took it first. Asked anyway, Optuna made a new trial
    # and the sampler drew an (arm, seed) of its own (reference seed 7 in the middle of round 2 of a
    # rule at 3 seeds), which moved the adaptive rule's look forward: the study ran 9 seeds per arm
    # where it stops at 6-7.
    _, storage = _prepared(tmp_path, monkeypatch, "raced", """
        design: leave_one_out
        seeds: {start: 2, step: 1, max: 9}
        fixed: {data: digits, model: mlp, trainer.epochs: 1, trainer.threads: 1}
        reference: {norm: batch}
        tricks: {norm: null}
    """)
    late, first = Worker("raced", storage, verbose=False), Worker("raced", storage, verbose=False)
    for _ in range(3):  # the other worker takes every queued pair but one
        held = first._ask()
        assert not isinstance(held, str)
        first._run_trial(held)
    assert late._next_step() == "ask"  # one pair is still queued as this worker looks
    taken = first._ask()  # ... and the other worker asks for it first
    assert not isinstance(taken, str) and taken.params == {"arm": "-norm=batch", "seed": 1}
    assert late._ask() == "held"  # the queue is empty: nothing is asked, nothing sampled
    trials = _reload("raced", storage).trials
    assert len(trials) == 4 and all("fixed_params" in t.system_attrs for t in trials)
