"""Sweeps end to end: real worker processes, a real Optuna journal storage, a real MLflow store."""

from __future__ import annotations

import datetime
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import psutil
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from tiny_datasets import write_unreadable_mnist
from tiny_studies import interrupt_when, journal_study, journal_trials, wait_for

from ablate import records as R
from ablate.cli import main
from ablate.records import ATTR_RUN as RUN_ATTR
from ablate.records import ATTR_WORKER as WORKER_ATTR
from ablate.sweep import StudySpec, count_states
from ablate.sweep.runs import fail_stale_trial, killed_hook
from ablate.sweep.spec import SWEEPS_DIR

ABLATE = [sys.executable, "-m", "ablate"]


def _study_file(cwd: Path, name: str, body: str) -> None:
    (cwd / "sweeps").mkdir(exist_ok=True)
    header = "defaults:\n  - base_study\n  - sampler: random\n  - pruner: none\n  - _self_\n"
    (cwd / "sweeps" / f"{name}.yaml").write_text(header + textwrap.dedent(body))


def load_spec(study: optuna.Study) -> StudySpec:
    """The spec ``ablate sweep`` stored on ``study`` (its user attribute)."""
    return StudySpec.from_json(study.user_attrs[R.ATTR_SPEC])


def _client(cwd: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


def _runs(cwd: Path, experiment: str):
    client = _client(cwd)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def _sweep(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ABLATE, "sweep", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.slow
def test_pruning_stops_trials_in_optuna_and_mlflow(tmp_path):
    _study_file(tmp_path, "prune_me", """
        n_trials: 4
        workers: 2
        fixed:
          trainer.epochs: 8
        params:
          optimizer.lr: tag(log, interval(1e-5, 1e-4))   # far too small for SGD: val_acc stays low
    """)
    out = _sweep(tmp_path, "prune_me", "pruner=threshold", "pruner.lower=0.9", "pruner.n_warmup_steps=2")
    assert out.returncode == 0, out.stderr
    study = journal_study(tmp_path, "prune_me")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert len(pruned) == 4
    # steps are epochs, from 1; the threshold pruner's warm-up spares steps below n_warmup_steps
    assert {max(t.intermediate_values) for t in pruned} == {2}
    runs = {r.info.run_id: r for r in _runs(tmp_path, "prune_me")}
    for t in pruned:
        run = runs[t.user_attrs[RUN_ATTR]]
        assert run.data.tags["optuna.state"] == "PRUNED"
        assert run.data.tags["stop_reason"] == "pruned" and run.data.tags["pruned_at_epoch"] == "2"
        assert run.data.metrics["epochs_run"] == 2 and run.info.status == "FINISHED"
    assert "pruned 4" in out.stdout
    assert "INFO mlflow" not in out.stderr  # a new MLflow store, created without MLflow's chatter
    # Not a terminal: plain lines, each saying something the one before did not (not a copy per tick)
    states = [line.split("] ", 1)[1].split(" | ETA")[0] for line in out.stdout.splitlines()
              if line.startswith("[")]
    assert states and all(a != b for a, b in itertools.pairwise(states))
    # The live line and the summary count from the same start (they said 00:17 and "in 00:07")
    last = [line for line in out.stdout.splitlines() if line.startswith("[")][-1]
    (closing,) = [line for line in out.stdout.splitlines() if line.startswith("Study prune_me: ")
                  and " in " in line]
    live, summed = (_seconds(x) for x in (last[1:6], closing.split(" in ")[1].split()[0]))
    assert 0 <= summed - live <= 2, (last, closing)
    # The worker's log: one line per trial with its time, number, outcome, parameters and seconds
    logged = [line for path in sorted((tmp_path / "runs" / "prune_me").glob("worker-*.log"))
              for line in path.read_text().splitlines() if " trial " in line]
    assert len(logged) == 4, logged
    for line in logged:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d trial \d pruned: optimizer\.lr=[0-9.e-]+; "
                            r"val_acc=[0-9.]+ after 2 epochs, [0-9.]+ s", line), line


def _seconds(text: str) -> int:
    minutes, seconds = text.split(":")
    return int(minutes) * 60 + int(seconds)


@pytest.mark.slow
def test_torch_threads_are_split_across_workers_unless_the_study_sets_them(tmp_path):
    from ablate.sweep import worker_threads

    split = worker_threads(1)  # a lone worker: every core
    cases = (("split", [], split), ("set", [f"trainer.threads={split + 1}"], split + 1))
    for folder, overrides, want in cases:
        cwd = tmp_path / folder
        cwd.mkdir()
        _study_file(cwd, "threads", """
            n_trials: 1
            workers: 1
            fixed:
              trainer.epochs: 1
            params:
              seed: range(0, 10)
        """)
        out = _sweep(cwd, "threads", *overrides)
        assert out.returncode == 0, out.stderr
        (child,) = [r for r in _runs(cwd, "threads") if "mlflow.parentRunId" in r.data.tags]
        assert child.data.params["trainer.threads"] == str(want)


def _progress(stream: io.StringIO, now: list[float]):
    from ablate.sweep import compose_study
    from ablate.sweep.progress import Progress

    spec = compose_study("optimizers_digits", ["n_trials=4"])
    return Progress(spec, stream, clock=lambda: now[0])


def _finish(study: optuna.Study, lr: float, value: float | None) -> None:
    study.enqueue_trial({"optimizer.lr": lr})
    trial = study.ask()
    trial.suggest_float("optimizer.lr", 1e-4, 1.0, log=True)
    if value is None:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, value)


def test_progress_prints_plain_lines_on_change_and_every_30_s_when_not_a_terminal():
    out, now = io.StringIO(), [0.0]
    progress, study = _progress(out, now), optuna.create_study(direction="maximize")
    study.ask()  # running
    progress.update(study)
    now[0] = 5.0
    progress.update(study)  # only the clock moved: nothing printed
    _finish(study, 0.01, 0.91)
    now[0] = 6.0
    progress.update(study)
    now[0] = 20.0
    progress.update(study)  # the ETA moved, nothing else
    now[0] = 36.5
    progress.update(study)  # 30 s since the last line: printed again
    _finish(study, 0.5, None)
    now[0] = 37.0
    progress.update(study)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\x1b" not in out.getvalue()
    assert lines[0] == "[00:00] 0/4 finished (complete 0, pruned 0, diverged 0, failed 0) running 1"
    assert lines[1].startswith("[00:06] 1/4 finished (complete 1, pruned 0, diverged 0, failed 0) "
                               "running 1 | best val_acc 0.9100 (trial 1: optimizer.lr=0.01) | ETA 00:00")
    assert lines[2].startswith("[00:36] 1/4 finished") and lines[2].endswith("ETA 00:00")  # trials of ~0 s
    assert (lines[3].startswith("[00:37] 2/4 finished (complete 1, pruned 1,")
            and "best val_acc 0.9100" in lines[3])


def test_a_diverged_trial_is_never_the_best_though_optuna_holds_it_complete():
    from ablate.sweep.storage import best_trial

    out, now = io.StringIO(), [0.0]
    progress, study = _progress(out, now), optuna.create_study(direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)
    # a diverged trial is told its last finite value, which can beat every trial that trained well
    study.add_trial(optuna.trial.create_trial(params={"optimizer.lr": 0.9},
                                              distributions={"optimizer.lr": lr}, value=0.99,
                                              user_attrs={R.ATTR_OUTCOME: R.DIVERGED}))
    _finish(study, 0.01, 0.91)
    best = best_trial(study.trials, "maximize")
    assert best is not None and best.number == 1
    progress.update(study)
    assert "best val_acc 0.9100 (trial 1: optimizer.lr=0.01)" in out.getvalue()
    only_diverged = optuna.create_study(direction="maximize")
    only_diverged.add_trial(study.trials[0])
    assert best_trial(only_diverged.trials, "maximize") is None


def _timed(study: optuna.Study, number_state: TrialState, seconds: float, *, ago: float = 0.0) -> None:
    """A trial of ``seconds`` that ended (or, RUNNING, started) ``ago`` seconds before now."""
    lr = optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)
    end = datetime.datetime.now() - datetime.timedelta(seconds=ago)
    running = number_state == TrialState.RUNNING
    study.add_trial(optuna.trial.FrozenTrial(
        number=0, trial_id=0, state=number_state, value=0.9 if number_state == TrialState.COMPLETE else None,
        values=None, datetime_start=end - datetime.timedelta(seconds=0 if running else seconds),
        datetime_complete=None if running else end, params={"optimizer.lr": 0.01},
        distributions={"optimizer.lr": lr}, user_attrs={}, system_attrs={}, intermediate_values={}))


def test_the_eta_comes_from_finished_trials_durations_not_from_the_start_up():
    # The ETA was elapsed / finished x left: a sweep's start-up (imports, the study, the MLflow store)
    # counted as trial time, and it predicted 02:25 for a sweep that ended 6 s later.
    from ablate.sweep.progress import eta

    out, now = io.StringIO(), [0.0]
    progress, study = _progress(out, now), optuna.create_study(direction="maximize")
    _timed(study, TrialState.COMPLETE, 10.0, ago=60.0)
    _timed(study, TrialState.PRUNED, 20.0, ago=30.0)  # mean 15 s
    assert eta(study.trials, 2, 2) == pytest.approx(15.0)  # 2 left x 15 s over 2 workers
    study.add_trial(study.trials[0])  # 3 finished of 4 (the spec's n_trials), none running
    now[0] = 100.0  # 100 s of start-up and training so far: no part of the estimate
    progress.update(study)
    assert out.getvalue().rstrip().endswith("ETA 00:06")  # 1 x 13.3 s / 2 workers
    # a running trial 5 s in has less left to train
    study2 = optuna.create_study(direction="maximize")
    _timed(study2, TrialState.COMPLETE, 10.0, ago=60.0)
    _timed(study2, TrialState.RUNNING, 0.0, ago=5.0)
    assert eta(study2.trials, 3, 1) == pytest.approx(25.0, abs=0.5)  # 3 x 10 s less 5 s done
    assert eta(optuna.create_study().trials, 3, 1) is None  # nothing finished: no estimate


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_block_in_place_on_a_terminal():
    out, now = _Terminal(), [0.0]
    progress, study = _progress(out, now), optuna.create_study(direction="maximize")
    _finish(study, 0.02, 0.875)
    study.ask()
    now[0] = 10.0
    progress.update(study)
    first = out.getvalue()
    # counts, best so far and ETA on lines of their own, each cleared before it is written
    assert first.split("\n") == [
        "\r\x1b[2K[00:10] 1/4 finished (complete 1, pruned 0, diverged 0, failed 0) running 1",
        "\x1b[2Kbest val_acc 0.8750 (trial 0: optimizer.lr=0.02)", "\x1b[2KETA 00:00"]
    now[0] = 11.0
    progress.update(study)
    # the next frame goes back up to the block's first line and writes over it: one block, not two
    assert out.getvalue()[len(first):].startswith("\r\x1b[2F\x1b[2K[00:11] 1/4 finished")
    progress.close()
    assert out.getvalue().endswith("\n")


@pytest.mark.slow
def test_workers_run_asynchronously(tmp_path):
    _study_file(tmp_path, "uneven", """
        n_trials: 4
        workers: 2
        params:
          trainer.epochs: range(1, 41, 13)    # 1, 14, 27 and 40 epochs
    """)
    out = _sweep(tmp_path, "uneven", "sampler=grid")
    assert out.returncode == 0, out.stderr
    trials = [t for t in journal_study(tmp_path, "uneven").trials if t.state == TrialState.COMPLETE]
    assert len(trials) == 4
    # A worker that had run trial b started c while the other worker's trial a, begun before c, was
    # still running: the freed worker did not wait for its partner (no batch barrier). (A worker
    # asks for its next trial while its last one's final MLflow writes and tell are under way, so
    # b's tell may come just after c's start.)
    holder = {t.number: t.user_attrs[WORKER_ATTR] for t in trials}
    assert any(a.datetime_start < c.datetime_start < a.datetime_complete
               and b.datetime_start < c.datetime_start
               and holder[b.number] == holder[c.number] != holder[a.number]
               for a in trials for b in trials for c in trials if len({a.number, b.number, c.number}) == 3)
    workers = {t.user_attrs[WORKER_ATTR] for t in trials}
    assert len(workers) == 2


@pytest.mark.slow
def test_interrupted_sweep_resumes_to_exactly_n_trials(tmp_path):
    _study_file(tmp_path, "resume_me", """
        n_trials: 6
        workers: 2
        fixed:
          trainer.epochs: 25
        params:
          optimizer: choice(sgd, adam)
          seed: range(0, 100)
    """)
    sweep = subprocess.Popen([*ABLATE, "sweep", "resume_me"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        # SIGKILL one worker in the middle of a trial: its trial is failed and queued again
        training: list = []  # from one read of the journal: a second read may fall mid-write
        wait_for(lambda: bool(training.extend(t for t in journal_trials(tmp_path, "resume_me")
                                              if t.state == TrialState.RUNNING and RUN_ATTR in t.user_attrs)
                              or training))
        victim = training[0]
        os.kill(int(victim.user_attrs[WORKER_ATTR].rsplit(":", 1)[1]), signal.SIGKILL)
        # then interrupt the whole sweep once a trial has finished after the kill
        wait_for(lambda: count_states(journal_trials(tmp_path, "resume_me"))["finished"] >= 2)
        sweep.send_signal(signal.SIGINT)
        _, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode != 0
    assert "resume" in err
    study = journal_study(tmp_path, "resume_me")
    assert study.trials[victim.number].state == TrialState.FAIL
    first = count_states(study.trials)
    assert first["finished"] < 6 and first["killed"] >= 1 and first["running"] == 0
    assert all(r.info.status != "RUNNING" for r in _runs(tmp_path, "resume_me"))

    out = _sweep(tmp_path, "resume_me")
    assert out.returncode == 0, out.stderr
    study = journal_study(tmp_path, "resume_me")
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 6 == count_states(study.trials)["finished"]
    runs = _runs(tmp_path, "resume_me")
    parents = [r for r in runs if r.data.tags.get(R.TAG_KIND) == R.KIND_STUDY]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)
    by_id = {r.info.run_id: r for r in children}
    assert sorted(by_id[t.user_attrs[RUN_ATTR]].info.status for t in finished) == ["FINISHED"] * 6
    assert sum(r.info.status == "FINISHED" for r in children) == 6
    assert parents[0].data.metrics["n_finished"] == 6
    # the killed trial was rerun with the same parameters (its rerun may itself have been interrupted)
    rerun_of = {t.user_attrs.get(R.ATTR_RETRY_OF): t for t in study.trials}
    rerun = rerun_of[victim.number]
    while rerun.state != TrialState.COMPLETE:
        rerun = rerun_of[rerun.number]
    assert rerun.params == victim.params
    # real clients read the storage: Optuna in a fresh process, and optuna-dashboard's API
    code = ("import optuna, sys; from optuna.storages import JournalStorage; "
            "from optuna.storages.journal import JournalFileBackend; "
            "s = optuna.load_study(study_name='resume_me', "
            "storage=JournalStorage(JournalFileBackend(sys.argv[1]))); "
            "print(len([t for t in s.trials if t.state.name == 'COMPLETE']), s.best_value)")
    fresh = subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs/resume_me/journal.log")],
                           capture_output=True, text=True, check=True)
    assert fresh.stdout.split()[0] == "6"
    _dashboard_lists(tmp_path / "runs/resume_me/journal.log", "resume_me")


@pytest.mark.slow
def test_a_sweep_whose_trials_keep_failing_stops_at_max_failures_with_the_reason(tmp_path):
    write_unreadable_mnist(tmp_path / "data")  # present (the check before start passes), unreadable
    _study_file(tmp_path, "nodata", """
        n_trials: 20
        workers: 1
        max_failures: 2
        fixed: {data: mnist, model: mlp, trainer.epochs: 1}
        params:
          seed: range(0, 100)
    """)
    out = _sweep(tmp_path, "nodata", timeout=120)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("ablate: error: max_failures: study nodata stopped: 2 trials failed")
    assert "data.root: cannot read the MNIST files" in line and "runs/nodata/worker-0.log" in line
    assert "Traceback" in (tmp_path / "runs/nodata/worker-0.log").read_text()
    study = journal_study(tmp_path, "nodata")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    (parent,) = [r for r in _runs(tmp_path, "nodata") if r.data.tags.get(R.TAG_KIND) == R.KIND_STUDY]
    assert parent.info.status == "FAILED" and parent.data.metrics["n_failed"] == 2


@pytest.mark.slow
def test_a_running_trial_that_no_worker_claimed_is_retried_on_resume(tmp_path, monkeypatch):
    from ablate.sweep import compose_study, prepare_study

    monkeypatch.chdir(tmp_path)
    _study_file(tmp_path, "unclaimed", """
        n_trials: 2
        workers: 1
        fixed: {trainer.epochs: 1}
        params:
          seed: range(0, 100)
    """)
    study, _, _ = prepare_study(compose_study("unclaimed", [], cwd=tmp_path))
    study.ask()  # interrupted before the worker recorded itself on the trial: RUNNING, held by no one
    assert WORKER_ATTR not in study.trials[0].user_attrs
    out = _sweep(tmp_path, "unclaimed", timeout=120)
    assert out.returncode == 0, out.stderr
    trials = journal_study(tmp_path, "unclaimed").trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    assert trials[0].state == TrialState.FAIL and count_states(trials)["running"] == 0
    assert [t.user_attrs.get(R.ATTR_RETRY_OF) for t in trials if t.number > 0].count(0) == 1


@pytest.mark.slow
def test_a_grid_sweep_with_two_workers_runs_every_point_exactly_once(tmp_path):
    _study_file(tmp_path, "grid2", """
        n_trials: 20
        workers: 2
        fixed: {trainer.epochs: 1, trainer.threads: 1}
        params:
          optimizer: choice(sgd, adam)
          seed: range(0, 3)
    """)  # 6 points, fewer than n_trials: the grid is the budget
    out = _sweep(tmp_path, "grid2", "sampler=grid", timeout=200)
    assert out.returncode == 0, out.stderr
    trials = [t for t in journal_study(tmp_path, "grid2").trials if t.state == TrialState.COMPLETE]
    points = sorted((t.params["optimizer"], t.params["seed"]) for t in trials)
    assert points == sorted(itertools.product(("adam", "sgd"), range(3)))
    assert len({t.user_attrs[WORKER_ATTR] for t in trials}) == 2


def _stale_trial(tmp_path: Path, monkeypatch, *, record_id: bool):
    """A prepared study with one RUNNING trial and its child run, as a worker that died leaves them."""
    from ablate.sweep import compose_study, prepare_study

    monkeypatch.chdir(tmp_path)
    _study_file(tmp_path, "stale", """
        n_trials: 2
        workers: 1
        params:
          seed: range(0, 10)
    """)
    study, _spec, parent = prepare_study(compose_study("stale", [], cwd=tmp_path))
    trial = study.ask()
    trial.suggest_int("seed", 0, 9)
    client = _client(tmp_path)
    experiment = client.get_run(parent).info.experiment_id
    runs = [client.create_run(experiment, tags={"mlflow.parentRunId": parent, "optuna.study": "stale",
                                                "optuna.trial_number": str(n)}).info.run_id
            for n in (trial.number, trial.number + 1)]  # its run, and a later trial's (still running)
    if record_id:
        trial.set_user_attr(RUN_ATTR, runs[0])
    return study, study.trials[trial.number], runs


def test_a_stale_trial_and_its_run_are_closed_together_though_ctrl_c_comes_between(tmp_path, monkeypatch):
    study, stale, (run, other) = _stale_trial(tmp_path, monkeypatch, record_id=True)
    real = MlflowClient.set_tag

    def tag_then_interrupt(self, *args, **kwargs):  # Ctrl-C lands between the run's two writes
        real(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(MlflowClient, "set_tag", tag_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        # the interrupt is raised once the trial and its run are closed
        fail_stale_trial(study, stale, killed_hook(load_spec(study).tracking_uri))
    client = _client(tmp_path)
    assert client.get_run(run).info.status == "KILLED" and client.get_run(run).data.tags["status"] == "killed"
    assert client.get_run(other).info.status == "RUNNING"  # another trial's run is not this one's business
    trials = journal_study(tmp_path, "stale").trials
    assert trials[stale.number].state == TrialState.FAIL
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert [t.user_attrs.get(R.ATTR_RETRY_OF) for t in waiting] == [stale.number]


def test_a_stale_trials_run_is_found_by_its_tags_when_the_worker_died_before_recording_its_id(
        tmp_path, monkeypatch):
    study, stale, (run, other) = _stale_trial(tmp_path, monkeypatch, record_id=False)
    assert RUN_ATTR not in stale.user_attrs
    fail_stale_trial(study, stale, killed_hook(load_spec(study).tracking_uri))
    client = _client(tmp_path)
    assert client.get_run(run).info.status == "KILLED"
    assert client.get_run(other).info.status == "RUNNING"


def test_the_parent_run_is_ended_though_ctrl_c_comes_between_its_last_writes(tmp_path, monkeypatch):
    from ablate.records import ATTR_PARENT as PARENT_ATTR
    from ablate.sweep import finish_parent

    study, _, _ = _stale_trial(tmp_path, monkeypatch, record_id=True)
    parent_id = study.user_attrs[PARENT_ATTR]
    real = MlflowClient.log_batch

    def batch_then_interrupt(self, *args, **kwargs):
        real(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(MlflowClient, "log_batch", batch_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        finish_parent(study, load_spec(study), parent_id, "KILLED")
    parent = _client(tmp_path).get_run(parent_id)
    assert parent.info.status == "KILLED" and parent.data.tags["status"] == "killed"


def _dashboard_lists(journal: Path, name: str) -> None:
    dashboard = pytest.importorskip("optuna_dashboard")
    app = dashboard.wsgi(JournalStorage(JournalFileBackend(str(journal))))
    status: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/studies", "SERVER_NAME": "localhost",
               "SERVER_PORT": "80", "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http", "QUERY_STRING": ""}
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200")
    assert name in [s["study_name"] for s in json.loads(body)["study_summaries"]]


@pytest.mark.parametrize(("args", "field"), [
    (["tricks_digits", "params.norm=choice(none, batch"], "params.norm"),
    (["tricks_digits", "sampler=annealing"], "sampler"),
    (["tricks_digits", "pruner=wall"], "pruner"),
    (["tricks_digits", "params.model.nope=choice(1, 2)"], "params.model.nope"),
    (["tricks_digits", "params.dropout=interval(0.0, 1.5)"], "params.dropout"),
    (["tricks_digits", "params.optimizer=choice(sgd, lbfgs)"], "params.optimizer"),
    (["no_such_study"], "study"),
    (["empty"], "params"),
    (["tricks_digits", "max_failures=0"], "max_failures"),
    (["tricks_digits", "max_failures=some"], "max_failures"),
    (["tricks_digits", "storage=postgresql://ablate:s3cret@127.0.0.1:9/nowhere"], "storage"),
])
def test_bad_sweep_input_is_one_line_and_creates_nothing(tmp_path, monkeypatch, capsys, args, field):
    _study_file(tmp_path, "empty", "n_trials: 2\nparams: {}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ablate: error: {field}")
    assert "s3cret" not in err[0]
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "mlflow.db").exists()
    # The workers started in standby while the study was checked are gone, having written nothing.
    assert psutil.Process().children(recursive=True) == []


def test_one_bad_option_is_named_though_composed_with_other_groups(tmp_path, monkeypatch, capsys):
    """Options are composed a round at a time (adam together with xavier here); a failing round is
    taken apart so the error names the option that has no such field."""
    _study_file(tmp_path, "mixed", """
        params:
          optimizer: choice(momentum, adam)
          init: choice(default, xavier)
          optimizer.momentum: interval(0.5, 0.9)
    """)
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "mixed"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ablate: error: params.optimizer.momentum") and "\n" not in err
    assert err.endswith("(with optimizer=adam)")
    assert not (tmp_path / "runs").exists()


def test_composed_rounds_give_each_option_the_node_it_gets_alone():
    from omegaconf import OmegaConf

    from ablate.config import compose, is_group
    from ablate.sweep import check_trial_configs, compose_study

    spec = compose_study("tricks_digits", [])
    space, composer = spec.space, check_trial_configs(spec)
    rep = space.representative()
    groups = {(g, o) for g, d in space.distributions.items() if is_group(g) for o in d.choices}
    assert set(composer.nodes) == groups
    for group, option in sorted(groups, key=str):
        alone = compose(space.overrides({**rep, group: option}))[group]
        assert OmegaConf.to_container(composer.nodes[group, option]) == OmegaConf.to_container(alone)
        assert OmegaConf.get_type(composer.nodes[group, option]) is OmegaConf.get_type(alone)


@pytest.mark.slow
def test_slurm_launcher_submits_workers_with_submitit(tmp_path):
    pytest.importorskip("submitit")
    _study_file(tmp_path, "on_slurm", """
        n_trials: 4
        workers: 2
        fixed:
          trainer.epochs: 3
        params:
          optimizer: choice(sgd, adam)
    """)
    # submitit's local executor runs the same jobs as SLURM would, on this machine
    out = _sweep(tmp_path, "on_slurm", "+launcher=slurm", "launcher.cluster=local")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    study = journal_study(tmp_path, "on_slurm")
    assert count_states(study.trials)["finished"] == 4
    jobs = {p.name.split("_")[0] for p in (tmp_path / "runs/on_slurm/slurm").glob("*_submitted.pkl")}
    assert len(jobs) == 2
    assert len({t.user_attrs[WORKER_ATTR] for t in study.trials if WORKER_ATTR in t.user_attrs}) == 2


@pytest.mark.parametrize("name", sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")))
def test_every_shipped_study_composes_and_every_option_of_its_space_checks_out(name):
    from ablate.sweep import check_trial_configs, compose_study

    spec = compose_study(name, [])
    composer = check_trial_configs(spec)  # composes every group option the space can draw
    assert composer is not None and spec.n_trials >= 1


_EVIL_STUDY = ("defaults:\n  - base_study\n  - sampler: random\n  - pruner: none\n  - _self_\nn_trials: 1\n"
               "fixed:\n  trainer.epochs: 1\nparams:\n  seed: range(0, 9)\n")


@pytest.mark.parametrize(("args", "field"), [
    (["sweep", "../../evil"], "study"),  # a study file outside sweeps/
    (["sweep", "/tmp/evil"], "study"),
    (["sweep", "tricks_digits", "name=../../x"], "name"),  # the journal and logs outside the folder
    (["sweep", "tricks_digits", "name=a/b"], "name"),
    (["sweep", "tricks_digits", "name=.."], "name"),
    (["worker", "../../evil", "--storage", "journal.log"], "study"),
])
def test_a_study_name_that_is_a_path_is_refused_and_creates_nothing(tmp_path, args, field):
    outside, cwd = tmp_path, tmp_path / "a" / "work"
    (cwd / "sweeps").mkdir(parents=True)
    (outside / "a" / "evil.yaml").write_text(_EVIL_STUDY)  # where cwd/sweeps/../../evil.yaml points
    (outside / "evil.yaml").write_text(_EVIL_STUDY)
    before = sorted(tmp_path.rglob("*"))
    out = subprocess.run([*ABLATE, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ablate: error: {field}: "), out.stderr
    assert "[A-Za-z0-9]" in err[0] or "letters" in err[0]  # what is allowed
    assert "Traceback" not in out.stderr
    assert sorted(tmp_path.rglob("*")) == before  # no study folder, journal, log or MLflow store


def test_running_is_one_trial_per_worker_and_the_summary_counts_workers_that_joined(tmp_path, monkeypatch):
    # A worker trains one trial while its last one is still being recorded (its writer thread):
    # the progress line said "running 4-6" with 2 workers; and "with 2 workers" after a third joined.
    from ablate.sweep.progress import summary

    monkeypatch.chdir(tmp_path)
    out, now = io.StringIO(), [0.0]
    progress, study = _progress(out, now), optuna.create_study(direction="maximize")
    spec = progress.spec
    study.set_user_attr(R.ATTR_SESSION_START, 1)
    _finish(study, 0.01, None)  # trial 0, from an earlier session (pruned)
    for number, who in enumerate(["a:1", "a:1", "b:2", "b:2", "b:2", None], start=1):
        trial = study.ask()
        assert trial.number == number
        if who:
            trial.set_user_attr(WORKER_ATTR, who)
    counts = count_states(study.get_trials(deepcopy=False))
    assert counts["running"] == 3 and counts["finishing"] == 3  # a's 2, b's 5 and the unclaimed 6 train
    progress.update(study)
    # the unclaimed trial is a worker's next one, asked before it carries the worker's name: the
    # line never shows more trials training than workers (2 started, 2 holding trials)
    assert "failed 0) running 2, finishing 3 | ETA" in out.getvalue()
    third = study.ask()
    third.set_user_attr(WORKER_ATTR, "c:3")  # joined with `ablate worker`
    assert summary(study, spec, "0123", 5.0, 2).splitlines()[0].endswith("with 3 workers")
    assert summary(study, spec, "0123", 5.0, 4).splitlines()[0].endswith("with 4 workers")


@pytest.mark.slow
def test_a_supervisor_killed_with_9_leaves_nothing_in_the_temp_folder(tmp_path):
    # The composed trial configs reach the workers in a file with no name: none is left behind
    _study_file(tmp_path, "killed9", """
        n_trials: 4
        workers: 1
        fixed:
          trainer.epochs: 50
        params:
          seed: range(0, 100)
    """)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    sweep = subprocess.Popen([*ABLATE, "sweep", "killed9"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={**os.environ, "TMPDIR": str(tmp)})
    running = None
    try:  # a trial training: the worker has read the configs
        wait_for(lambda: any(t.state == TrialState.RUNNING and RUN_ATTR in t.user_attrs
                              for t in journal_trials(tmp_path, "killed9")))
        running = next(t for t in journal_trials(tmp_path, "killed9") if t.state == TrialState.RUNNING)
        sweep.kill()
        sweep.wait(timeout=30)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        if running is not None:  # orphaned, its worker would finish its trial first
            worker = psutil.Process(int(running.user_attrs[WORKER_ATTR].rsplit(":", 1)[1]))
            worker.kill()
            worker.wait(timeout=30)
    assert [p.name for p in tmp.iterdir() if "ablate" in p.name or p.suffix == ".pkl"] == []


ADAPTIVE = """
    design: leave_one_out
    seeds: {start: 3, step: 1, max: 12}
    workers: 2
    fixed: {data: digits, model: mlp, model.depth: 2, trainer.epochs: 4}
    reference: {optimizer: adam, norm: batch}
    tricks: {optimizer: sgd, norm: null}
"""


def _seeds_of(study: optuna.Study) -> dict[str, list[int]]:
    """Each arm's seeds with a complete trial, sorted."""
    seeds: dict[str, list[int]] = {}
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            seeds.setdefault(t.params["arm"], []).append(t.params["seed"])
    return {arm: sorted(s) for arm, s in seeds.items()}


def _one_finished_run_per_trial(cwd: Path, name: str, study: optuna.Study) -> None:
    children = [r for r in _runs(cwd, name) if r.data.tags.get(R.TAG_KIND) != R.KIND_STUDY]
    finished = sorted((r.data.tags[R.TAG_ARM], int(r.data.params["seed"])) for r in children
                      if r.info.status == "FINISHED")
    assert finished == sorted((arm, s) for arm, seeds in _seeds_of(study).items() for s in seeds)
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)


@pytest.mark.slow
def test_adaptive_seeds_stop_before_max_with_seeds_only_where_needed_and_resume_mid_round(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    for cwd in (whole, resumed):
        cwd.mkdir()
        _study_file(cwd, "adapt", ADAPTIVE)
    out = _sweep(whole, "adapt")
    assert out.returncode == 0, out.stderr
    assert "seeds: " in out.stdout and "more trials queued" in out.stdout
    study = journal_study(whole, "adapt")
    seeds = _seeds_of(study)
    counts = {arm: len(s) for arm, s in seeds.items()}
    assert all(s == list(range(len(s))) for s in seeds.values())  # seeds 0..k-1 in every arm
    assert 3 < max(counts.values()) < 12 and len(set(counts.values())) > 1, counts  # stopped early, unevenly
    assert counts["reference"] == max(counts.values())  # shared by both tricks: the most demanding
    assert study.user_attrs[R.ATTR_SEEDS_STOP] == "every trick has a verdict"
    _one_finished_run_per_trial(whole, "adapt", study)
    (parent,) = [r for r in _runs(whole, "adapt") if r.data.tags.get(R.TAG_KIND) == R.KIND_STUDY]
    assert parent.info.status == "FINISHED" and json.loads(parent.data.tags[R.TAG_SEEDS_PER_ARM]) == counts
    assert parent.data.tags[R.TAG_SEEDS_STOP] == "every trick has a verdict"
    assert "stopped: every trick has a verdict" in out.stdout
    report = subprocess.run([*ABLATE, "report", "adapt"], cwd=whole, capture_output=True, text=True,
                            check=False)
    assert report.returncode == 0, report.stderr
    header = (whole / "reports" / "adapt" / "report.md").read_text()
    assert "adaptive: 3 per arm" in header and "stopped: every trick has a verdict" in header

    # The same study interrupted in its second round, then the same command: the same seeds
    # in a later round: one of its trials queued or running
    rc, err = interrupt_when(resumed, "adapt", lambda trials: any(
        t.state in (TrialState.RUNNING, TrialState.WAITING)
        and {**t.system_attrs.get("fixed_params", {}), **t.params}.get("seed", 0) >= 3 for t in trials))
    assert rc != 0 and "resume" in err
    assert R.ATTR_SEEDS_STOP not in journal_study(resumed, "adapt").user_attrs
    out = _sweep(resumed, "adapt")
    assert out.returncode == 0, out.stderr
    again = journal_study(resumed, "adapt")
    assert _seeds_of(again) == seeds  # exactly the seeds the rule asks for, each once
    _one_finished_run_per_trial(resumed, "adapt", again)


@pytest.mark.slow
def test_adaptive_rounds_train_each_arms_queued_seeds_fused(tmp_path):
    _study_file(tmp_path, "adapt", ADAPTIVE)
    out = _sweep(tmp_path, "adapt", "fuse_seeds=3", "seeds={start: 3, step: 2, max: 9}")
    assert out.returncode == 0, out.stderr
    study = journal_study(tmp_path, "adapt")
    assert all(s == list(range(len(s))) for s in _seeds_of(study).values())  # seeds 0..k-1, each once
    _one_finished_run_per_trial(tmp_path, "adapt", study)
    runs = [r for r in _runs(tmp_path, "adapt") if r.data.tags.get(R.TAG_KIND) != R.KIND_STUDY]
    first_round = [r for r in runs if int(r.data.params["seed"]) < 3]
    # round 1 queued 3 seeds per arm: each arm's went to one worker and trained as one fused model
    assert len(first_round) == 9 and all(r.data.tags.get(R.TAG_FUSED) == "3" for r in first_round)
    later = [r for r in runs if int(r.data.params["seed"]) >= 3]
    assert all(r.data.tags.get(R.TAG_FUSED) in ("2", None) for r in later)  # rounds of step 2


def test_a_stored_study_with_another_recipe_is_refused_naming_what_differs(tmp_path, monkeypatch, capsys):
    from ablate.sweep import compose_study, prepare_study

    monkeypatch.chdir(tmp_path)
    _study_file(tmp_path, "kept", """
        n_trials: 2
        fixed: {data: digits, model: mlp, trainer.epochs: 1}
        params:
          optimizer.lr: tag(log, interval(1e-3, 0.5))
    """)
    prepare_study(compose_study("kept", [], cwd=tmp_path))  # the stored study, as a first sweep leaves it
    capsys.readouterr()
    assert main(["sweep", "kept", "trainer.epochs=2", "params.optimizer.lr=interval(0.01, 0.1)"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another recipe" in err[0], err
    assert "fixed.trainer.epochs" in err[0] and "params.optimizer.lr" in err[0], err
    prepare_study(compose_study("kept", ["n_trials=3"], cwd=tmp_path))  # the same recipe: accepted
    # the file's value typed again on the command line is the same recipe (it was refused:
    # "fixed.trainer.epochs differs", the string '1' against the file's 1)
    prepare_study(compose_study("kept", ["trainer.epochs=1", "model=mlp"], cwd=tmp_path))
    from ablate.sweep.spec import recipe_differences

    one = compose_study("kept", [], cwd=tmp_path).recipe
    assert recipe_differences(one, compose_study("kept", ["trainer.epochs=1e0", "trainer.lr_warmup=0"],
                                                 cwd=tmp_path).recipe) == ["fixed.trainer.lr_warmup"]


def test_two_workers_end_a_sweep_with_exactly_n_trials_no_surplus_failures_and_the_metric_named(tmp_path):
    # A worker that finds the budget covered by finished trials and those the other worker is
    # running waits (or stops) instead of asking: no trial is asked only to be closed as surplus.
    _study_file(tmp_path, "budget", """
        n_trials: 12
        workers: 2
        fixed: {trainer.epochs: 1, trainer.threads: 1}
        params:
          optimizer.lr: interval(0.001, 0.1)
    """)
    out = _sweep(tmp_path, "budget", timeout=200)
    assert out.returncode == 0, out.stderr
    study = journal_study(tmp_path, "budget")
    assert study.metric_names == [load_spec(study).metric]  # optuna-dashboard's label, not "Objective 0"
    trials = study.trials
    assert len(trials) == 12, [(t.number, t.state.name, t.user_attrs.get(R.ATTR_OUTCOME)) for t in trials]
    assert not [t for t in trials if t.state == TrialState.FAIL]
    assert len({t.user_attrs[WORKER_ATTR] for t in trials}) == 2


def test_the_supervisor_never_imports_torch_which_only_its_workers_train_with(tmp_path):
    # ablate.sweep's pre-flight checks read ablate.data.catalog; the package once imported torch with it
    code = ("import sys, ablate.cli, ablate.sweep, ablate.sweep.supervisor, ablate.sweep.preflight, "
            "ablate.data.catalog; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.strip() == "False"
    from ablate.data import Dataset, load_dataset  # the package's names still load, on first use

    assert Dataset.__name__ == "Dataset" and callable(load_dataset)


@pytest.mark.slow
def test_a_worker_killed_while_training_fused_seeds_leaves_each_pair_run_exactly_once(tmp_path):
    # Fused seeds are held together: a worker killed mid-group leaves every one of them RUNNING; the
    # supervisor fails and queues again all of them, and each (arm, seed) ends with one complete trial.
    _study_file(tmp_path, "fused_kill", """
        design: leave_one_out
        seeds: 4
        fuse_seeds: 4
        workers: 1
        fixed: {data: digits, model: mlp, trainer.epochs: 150, trainer.threads: 1}
        reference: {norm: batch, weight_decay: 1e-4}
        tricks: {norm: null, weight_decay: null}
    """)
    sweep = subprocess.Popen([*ABLATE, "sweep", "fused_kill"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        held: list = []  # from one read of the journal: a second read may fall mid-write
        wait_for(lambda: bool(held.extend(t for t in journal_trials(tmp_path, "fused_kill")
                                          if t.state == TrialState.RUNNING and RUN_ATTR in t.user_attrs)
                              or len(held) >= 4) or bool(held.clear()))
        assert len({t.user_attrs[WORKER_ATTR] for t in held}) == 1  # one worker holds the arm's 4 seeds
        os.kill(int(held[0].user_attrs[WORKER_ATTR].rsplit(":", 1)[1]), signal.SIGKILL)
        _, err = sweep.communicate(timeout=240)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, err
    study = journal_study(tmp_path, "fused_kill")
    complete = [(t.params["arm"], t.params["seed"]) for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(complete) == sorted(set(complete)) and len(complete) == 12  # 3 arms x 4 seeds, once each
    assert all(study.trials[t.number].state == TrialState.FAIL for t in held)  # killed, then retried
    runs = [r for r in _runs(tmp_path, "fused_kill") if r.data.tags.get(R.TAG_KIND) != R.KIND_STUDY]
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs)
    assert sum(r.info.status == "FINISHED" for r in runs) == 12
    # the two arms the kill did not touch trained fused, 4 seeds at a time (the retried ones may be split)
    assert sum(r.data.tags.get(R.TAG_FUSED) == "4" for r in runs if r.info.status == "FINISHED") >= 8
