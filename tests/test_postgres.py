"""Studies on a PostgreSQL storage: real ``ablate sweep`` / ``ablate worker`` processes, the real
server ``.ci/run`` starts (``ABLATE_TEST_POSTGRES_URL``), a real MLflow store in the test folder.

Every test makes a study of its own (a fresh name), so reruns against the same database work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from ablate import records as R
from ablate.cli import main
from ablate.records import ATTR_RETRY_OF as RETRY_ATTR
from ablate.records import ATTR_RUN as RUN_ATTR
from ablate.records import ATTR_WORKER as WORKER_ATTR
from ablate.secrets import password as password_of
from ablate.secrets import redact
from ablate.sweep import count_states
from ablate.sweep.worker import check_join

pytestmark = pytest.mark.slow  # real ablate sweep / worker processes against a real server

ABLATE = [sys.executable, "-m", "ablate"]
URL = os.environ.get("ABLATE_TEST_POSTGRES_URL", "")


@pytest.fixture(scope="module")
def url() -> str:
    from conftest import require_service

    require_service(bool(URL), "no PostgreSQL server: set ABLATE_TEST_POSTGRES_URL (.ci/run starts one)")
    return URL


def _password(url: str) -> str:
    """The password as the server knows it (percent-decoded: ``#?/ @[]%:`` may be in it)."""
    password = password_of(url)
    assert password, "ABLATE_TEST_POSTGRES_URL needs a password (the tests check it never leaks)"
    return password


def _forms(url: str) -> set[str]:
    """The password decoded and percent-encoded (as the URL holds it)."""
    return {_password(url), quote(_password(url), safe="")}


def _leaks(text: str | bytes, url: str) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [f for f in _forms(url) if f.encode() in data]


def _study_file(cwd: Path, n_trials: int, workers: int, epochs: int) -> str:
    name = f"pg_{uuid.uuid4().hex[:10]}"
    (cwd / "sweeps").mkdir(exist_ok=True)
    (cwd / "sweeps" / f"{name}.yaml").write_text(f"""\
defaults:
  - base_study
  - sampler: random
  - pruner: none
  - _self_
n_trials: {n_trials}
workers: {workers}
heartbeat_interval: 1
grace_period: 3
fixed:
  data: digits
  model: mlp
  trainer.epochs: {epochs}
  trainer.diagnostics: false
params:
  optimizer: choice(sgd, adam)
  seed: range(0, 1000)
""")
    return name


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for key in ("ABLATE_STORAGE", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID"):
        env.pop(key, None)
    return env


def _start(cwd: Path, log: str, *args: str) -> subprocess.Popen[bytes]:
    with open(cwd / log, "wb") as out:
        return subprocess.Popen([*ABLATE, *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=_env())


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except KeyError:
        return []


def _wait_for(predicate, timeout: float = 90.0, procs: tuple[subprocess.Popen[bytes], ...] = ()) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        for p in procs:
            assert p.poll() is None, f"{p.args[3:5]} exited with {p.returncode} while waited on"
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def _prepare(cwd: Path, name: str, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Create the study (Optuna + MLflow parent) as ``ablate sweep`` does, without running trials."""
    from ablate.sweep import compose_study, prepare_study

    monkeypatch.chdir(cwd)
    prepare_study(compose_study(name, [f"storage={url}"], cwd=cwd))


def _mlflow_runs(cwd: Path, name: str):
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = [r for r in runs if r.data.tags.get(R.TAG_KIND) == R.KIND_STUDY]
    assert len(parent) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    return client, parent[0], children, runs


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


# --- a whole sweep, then everything it wrote searched for the password ----------------------------


@pytest.fixture(scope="module")
def swept(url, tmp_path_factory):
    """``ablate sweep <name> storage=$URL workers=3``, the worker processes' command lines seen live."""
    cwd = tmp_path_factory.mktemp("pg_sweep")
    name = _study_file(cwd, n_trials=7, workers=3, epochs=3)
    started = time.time()
    # a recipe override too: the workers run the stored recipe, not the study file's
    sweep = _start(cwd, "sweep.out", "sweep", name, f"storage={url}", "workers=3", "trainer.epochs=4")
    cmdlines: list[bytes] = []
    try:
        while sweep.poll() is None and time.time() - started < 120:
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    line = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"ablate\x00worker\x00" + name.encode() in line:
                    cmdlines.append(line)
            time.sleep(0.3)
    finally:
        _stop(sweep)
    return {"cwd": cwd, "name": name, "rc": sweep.returncode, "cmdlines": cmdlines,
            "seconds": time.time() - started}


def test_sweep_on_postgres_runs_exactly_n_trials(swept, url):
    cwd, name = swept["cwd"], swept["name"]
    out = (cwd / "sweep.out").read_text()
    assert swept["rc"] == 0, out
    trials = _trials(url, name)
    counts = count_states(trials)
    assert counts["finished"] == 7 and counts["running"] == counts["waiting"] == counts["failed"] == 0
    assert len(trials) == 7  # no surplus trial closed unrun: the workers ask under the database's lock
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len({t.user_attrs[WORKER_ATTR] for t in complete}) >= 2  # the workers shared the study
    assert {t.user_attrs[R.ATTR_EPOCHS_RUN] for t in complete} == {4}
    _client, parent, children, runs = _mlflow_runs(cwd, name)
    assert parent.info.status == "FINISHED" and parent.data.metrics["n_finished"] == 7
    finished_runs = {r.info.run_id for r in children if r.info.status == "FINISHED"}
    assert len(finished_runs) == len(complete) == 7
    assert {t.user_attrs[RUN_ATTR] for t in complete} == finished_runs
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert "7/7 finished" in out


def test_the_ask_lock_is_one_per_database_for_every_process_and_freed_by_a_dead_one(url):
    import threading

    from ablate.sweep.storage import ask_lock

    # another process holds it: this one waits until that process dies (its connection closes)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from ablate.sweep.storage import ask_lock\n"
        "with ask_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)"), url],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        got = threading.Event()

        def take() -> None:
            with ask_lock(url):
                got.set()

        taker = threading.Thread(target=take, daemon=True)
        taker.start()
        assert not got.wait(1.0)  # blocked while the other process holds it
        holder.kill()  # SIGKILL: no release, the server frees the lock with the dead session
        assert got.wait(20.0)
        taker.join(5)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def test_password_never_leaks(swept, url, tmp_path):
    cwd, name = swept["cwd"], swept["name"]
    password = _password(url)
    assert swept["rc"] == 0
    assert swept["cmdlines"], "no worker process was seen"
    assert not [c for c in swept["cmdlines"] if _leaks(c, url)]  # ps shows no password
    # everything in MLflow: params, tags, metric names of every run, every artifact
    client, parent, _children, runs = _mlflow_runs(cwd, name)
    assert parent.data.tags["optuna.storage"].startswith("postgresql://ablate:***@")
    dump = []
    for run in runs:
        dump += [json.dumps(run.data.params), json.dumps(run.data.tags), " ".join(run.data.metrics)]
        dest = tmp_path / "artifacts" / run.info.run_id
        dest.mkdir(parents=True)
        client.download_artifacts(run.info.run_id, "", str(dest))
    assert password not in "\n".join(dump) and not _leaks("\n".join(dump), url)
    study_file = next((tmp_path / "artifacts" / parent.info.run_id).rglob("study.json"))
    study_json = json.loads(study_file.read_text())
    assert "***" in study_json["storage"]
    # what Optuna stores (and optuna-dashboard shows): study and trial attributes
    study = optuna.load_study(study_name=name, storage=url)
    system_attrs = study._storage.get_study_system_attrs(study._study_id)
    stored = [json.dumps(study.user_attrs), json.dumps(system_attrs)]
    stored += [json.dumps([t.user_attrs, t.system_attrs], default=str) for t in study.trials]
    assert password not in "\n".join(stored) and not _leaks("\n".join(stored), url)
    # a report written from the store
    try:
        from ablate.report import write_report
    except ImportError:
        write_report = None
    if write_report is not None:
        written = write_report(name, tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}", out=tmp_path / "reports")
        assert written
    # and every file: the MLflow database, artifacts, worker logs, the sweep's output, the report
    files = [p for root in (cwd, tmp_path) for p in root.rglob("*") if p.is_file()]
    assert any(p.name.startswith("worker-") for p in files)
    leaked = [str(p) for p in files if _leaks(p.read_bytes(), url)]
    assert not leaked


def _schema_url(url: str, schema: str) -> str:
    """``url`` with its own schema (created here): MLflow's tables beside Optuna's, in one database."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    engine.dispose()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def test_a_tracking_uri_with_a_password_never_leaks(url, tmp_path):
    """MLflow on PostgreSQL too: the child runs' ``tracking.uri`` param and ``config.yaml``, the
    stored spec (whose fixed overrides hold ``tracking.uri``), the summary's commands."""
    name = _study_file(tmp_path, n_trials=2, workers=1, epochs=1)
    tracking = _schema_url(url, f"mlflow_{name}")
    out = subprocess.run([*ABLATE, "sweep", name, f"storage={url}", f"tracking.uri={tracking}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env=_env(), check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not _leaks(out.stdout + out.stderr, url), out.stdout
    assert f"tracking.uri={redact(tracking)}" in out.stdout
    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get(R.TAG_KIND) != R.KIND_STUDY]
    assert len(children) == 2
    assert {r.data.params["tracking.uri"] for r in children} == {redact(tracking)}
    dump = [json.dumps([r.data.params, r.data.tags]) for r in runs]
    for run in runs:
        dest = tmp_path / "artifacts" / run.info.run_id
        dest.mkdir(parents=True)
        client.download_artifacts(run.info.run_id, "", str(dest))
    assert not _leaks("\n".join(dump), url)
    study = optuna.load_study(study_name=name, storage=url)
    stored = [json.dumps(study.user_attrs), *(json.dumps(t.user_attrs) for t in study.trials)]
    assert not _leaks("\n".join(stored), url)
    from ablate.report import write_report

    assert write_report(name, tracking_uri=tracking, out=tmp_path / "reports")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in files) and any(p.name == "study.json" for p in files)
    assert not [str(p) for p in files if _leaks(p.read_bytes(), url)]


# --- a worker killed mid-trial on "another machine": Optuna's heartbeat retries its trial ----------


def test_killed_worker_trial_is_failed_retried_and_completed(url, tmp_path, monkeypatch):
    name = _study_file(tmp_path, n_trials=3, workers=1, epochs=300)  # a trial: seconds
    _prepare(tmp_path, name, url, monkeypatch)
    sweep = _start(tmp_path, "sweep.out", "sweep", name, f"storage={url}", "workers=1")
    other = _start(tmp_path, "other.out", "worker", name, "--storage", url, "--index", "7")
    try:
        # the supervisor has started its workers (so it only watches its own processes from now on)
        _wait_for(lambda: (tmp_path / "runs" / name / "worker-0.log").exists(), procs=(sweep,))

        def held_by_other() -> list[optuna.trial.FrozenTrial]:
            return [t for t in _trials(url, name)
                    if t.state == TrialState.RUNNING and RUN_ATTR in t.user_attrs
                    and t.user_attrs.get(WORKER_ATTR, "").endswith(f":{other.pid}")]

        _wait_for(lambda: held_by_other(), procs=(sweep, other))
        victim = held_by_other()[0]
        other.send_signal(signal.SIGKILL)  # no handler runs: only the missing heartbeat tells
        other.wait()
        sweep.wait(timeout=120)
    finally:
        _stop(sweep, other)
    out = (tmp_path / "sweep.out").read_text()
    assert sweep.returncode == 0, out
    trials = _trials(url, name)
    assert trials[victim.number].state == TrialState.FAIL
    counts = count_states(trials)
    assert counts["finished"] == 3 and counts["failed"] == 0 and counts["killed"] == 1
    assert counts["running"] == counts["waiting"] == 0
    retry = next(t for t in trials if t.user_attrs.get(RETRY_ATTR) == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    assert retry.system_attrs["retry_history"] == [victim.number]  # queued by Optuna's callback
    assert retry.user_attrs[WORKER_ATTR] != victim.user_attrs[WORKER_ATTR]
    _client, parent, children, runs = _mlflow_runs(tmp_path, name)
    by_id = {r.info.run_id: r for r in children}
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(by_id[t.user_attrs[RUN_ATTR]].info.status for t in finished) == ["FINISHED"] * 3
    assert sum(r.info.status == "FINISHED" for r in children) == 3
    assert by_id[victim.user_attrs[RUN_ATTR]].info.status == "KILLED"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert parent.data.metrics["n_finished"] == 3


# --- joining from a second process ------------------------------------------------------------------


def test_worker_joins_a_running_study(url, tmp_path, monkeypatch):
    name = _study_file(tmp_path, n_trials=6, workers=1, epochs=150)  # both get trials
    _prepare(tmp_path, name, url, monkeypatch)
    other = _start(tmp_path, "other.out", "worker", name, "--storage", url, "--index", "3")
    sweep = _start(tmp_path, "sweep.out", "sweep", name, f"storage={url}", "workers=1")
    try:
        sweep.wait(timeout=120)
        other.wait(timeout=30)
    finally:
        _stop(sweep, other)
    assert sweep.returncode == 0, (tmp_path / "sweep.out").read_text()
    assert other.returncode == 0, (tmp_path / "other.out").read_text()
    trials = _trials(url, name)
    assert count_states(trials)["finished"] == 6
    holders = {t.user_attrs[WORKER_ATTR] for t in trials if t.state == TrialState.COMPLETE}
    assert len(holders) == 2 and any(h.endswith(f":{other.pid}") for h in holders)
    _, _parent, children, _ = _mlflow_runs(tmp_path, name)
    assert sum(r.info.status == "FINISHED" for r in children) == 6


# --- a worker with another recipe ---------------------------------------------------------------------


def test_worker_with_another_recipe_is_refused(url, tmp_path, monkeypatch, capsys):
    name = _study_file(tmp_path, n_trials=2, workers=1, epochs=1)
    _prepare(tmp_path, name, url, monkeypatch)
    # execution overrides are no recipe: they are returned for the worker, nothing is refused
    joined = check_join(name, url, ["devices=[1]", "trials_per_device=2"])
    assert joined == {"devices": [1], "trials_per_device": 2}
    capsys.readouterr()
    assert main(["worker", name, "--storage", url, "params.optimizer=choice(sgd, adamw)"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0] == (f"ablate: error: study: {name!r} in {redact(url)} has another "
                      f"recipe than sweeps/{name}.yaml with these overrides here (params.optimizer differs); "
                      "run the same study file and overrides")
    # a changed study file here is another recipe too
    path = tmp_path / "sweeps" / f"{name}.yaml"
    path.write_text(path.read_text().replace("trainer.epochs: 1", "trainer.epochs: 2"))
    assert main(["worker", name, "--storage", url]) == 2
    assert "(fixed.trainer.epochs differs)" in capsys.readouterr().err
    assert not list(_trials(url, name))  # nothing ran
