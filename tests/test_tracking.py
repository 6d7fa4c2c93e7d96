"""``ablate.tracking`` in-process: how one MLflow run starts, logs and ends, against a SQLite store."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ablate import tracking
from ablate.config import compose, flatten, trick_summary
from ablate.tracking import artifact_location, get_or_create_experiment, git_commit, track_run

FINAL = {"test_acc": 0.5, "test_loss": 1.25, "best_val_acc": 0.75, "best_epoch": 2.0,
         "epochs_run": 2.0, "train_time": 0.1, "n_params": 1234.0}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One SQLite store for the module (creating its tables costs a second or two)."""
    return tmp_path_factory.mktemp("tracking") / "mlflow.db"


@pytest.fixture(scope="module")
def client(store) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{store}")


def _cfg(store: Path, experiment: str, *overrides: str):
    """A composed recipe logging to ``store`` under its own experiment, so tests do not share runs."""
    return compose([f"tracking.uri=sqlite:///{store}", f"tracking.experiment={experiment}", *overrides])


def _runs(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_finish_ends_finished_with_params_tags_metrics_and_config(store, client):
    cfg = _cfg(store, "finish", "optimizer=adam", "model.depth=3", "dropout=0.25")
    with track_run(cfg) as tracker:
        run_id = tracker.run_id
        assert client.get_run(run_id).info.status == "RUNNING"
        assert client.get_run(run_id).data.tags["status"] == "running"
        tracker.finish(FINAL, "completed")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time is not None
    # Params: every leaf of the resolved config, stringified (None as "None").
    expected = {k: str(v) for k, v in dict(flatten(cfg)).items()}
    assert run.data.params == expected
    assert run.data.params["tracking.run_name"] == "None"
    assert (run.data.params["optimizer.name"], run.data.params["model.depth"],
            run.data.params["dropout"]) == ("adam", "3", "0.25")
    assert run.data.metrics == FINAL
    tags = run.data.tags
    assert tags["dataset"] == "digits"
    assert tags["tricks"] == trick_summary(cfg)
    assert tags["stop_reason"] == "completed" and tags["status"] == "finished"
    assert "error" not in tags
    # config.yaml: the resolved config, loadable back to the same values.
    assert [a.path for a in client.list_artifacts(run_id)] == ["config.yaml"]
    local = client.download_artifacts(run_id, "config.yaml", str(store.parent / "download"))
    assert OmegaConf.to_container(OmegaConf.load(local)) == OmegaConf.to_container(cfg, resolve=True)


def test_artifacts_go_beside_the_database(store, client):
    cfg = _cfg(store, "artifacts")
    with track_run(cfg) as tracker:
        tracker.finish(FINAL, "completed")
    run = client.get_run(tracker.run_id)
    assert run.info.artifact_uri.startswith((store.parent / "mlartifacts").as_uri() + "/")
    assert (store.parent / "mlartifacts" / tracker.run_id / "artifacts" / "config.yaml").is_file()


def test_one_log_batch_per_epoch_with_the_epoch_as_step(store, client, monkeypatch):
    cfg = _cfg(store, "epochs")
    cfg.tracking.flush_every = 0.0  # write every epoch
    with track_run(cfg) as tracker:
        calls = []
        real = tracker.client.log_batch

        def spy(run_id, metrics=(), params=(), tags=(), **kwargs):
            calls.append((run_id, len(metrics), len(params), len(tags)))
            return real(run_id, metrics=metrics, params=params, tags=tags, **kwargs)

        monkeypatch.setattr(tracker.client, "log_batch", spy)
        for epoch in (1, 2, 3):
            metrics = {"train_loss": 1.0 / epoch, "train_acc": 0.5, "val_loss": 2.0 / epoch,
                       "val_acc": 0.1 * epoch, "lr": 0.1, "epoch_time": 0.01,
                       "grad_norm/blocks.0.linear": 1.5, "act_std/blocks.0.linear": 0.7}
            assert tracker(epoch, metrics) is False  # the logger never asks fit to stop
            assert calls[-1] == (tracker.run_id, len(metrics), 0, 0)
        assert len(calls) == 3
        monkeypatch.undo()
        tracker.finish(FINAL, "completed")
    history = client.get_metric_history(tracker.run_id, "val_acc")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([0.1, 0.2, 0.3])
    assert [m.step for m in client.get_metric_history(tracker.run_id, "grad_norm/blocks.0.linear")] \
        == [1, 2, 3]


def test_many_metrics_are_split_into_batches_mlflow_accepts(store, client, monkeypatch):
    monkeypatch.setattr(tracking.runs, "_MAX_METRICS_PER_CALL", 4)
    cfg = _cfg(store, "chunks")
    with track_run(cfg) as tracker:
        tracker.log_metrics({f"m{i}": float(i) for i in range(10)}, step=1)
        tracker.finish(FINAL, "completed")
    metrics = client.get_run(tracker.run_id).data.metrics
    assert all(metrics[f"m{i}"] == i for i in range(10))


def test_exception_ends_the_run_failed_with_an_error_tag(store, client):
    cfg = _cfg(store, "failed")
    with pytest.raises(ValueError, match="boom"), track_run(cfg) as tracker:
        tracker(1, {"val_acc": 0.5})
        raise ValueError("boom")
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FAILED" and run.info.end_time is not None
    assert run.data.tags["status"] == "failed"
    assert run.data.tags["error"] == "ValueError: boom"
    assert "stop_reason" not in run.data.tags
    assert [m.step for m in client.get_metric_history(tracker.run_id, "val_acc")] == [1]


def test_keyboard_interrupt_ends_the_run_killed(store, client):
    cfg = _cfg(store, "killed")
    with pytest.raises(KeyboardInterrupt), track_run(cfg) as tracker:
        raise KeyboardInterrupt
    run = client.get_run(tracker.run_id)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.data.tags["status"] == "killed"
    assert run.data.tags["error"].startswith("KeyboardInterrupt")


def test_nan_final_metrics_are_kept(store, client):
    """A diverged run's test_acc is unknown (NaN), not 0."""
    cfg = _cfg(store, "diverged")
    with track_run(cfg) as tracker:
        tracker.finish({**FINAL, "test_acc": math.nan, "test_loss": math.nan}, "diverged")
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["stop_reason"] == "diverged"
    assert math.isnan(run.data.metrics["test_acc"]) and math.isnan(run.data.metrics["test_loss"])


def test_experiment_is_created_once_and_reused(store, client):
    cfg = _cfg(store, "reused")
    ids = []
    for _ in range(3):
        with track_run(cfg) as tracker:
            tracker.finish(FINAL, "completed")
        ids.append(tracker.experiment_id)
    assert len(set(ids)) == 1
    assert [e.name for e in client.search_experiments(filter_string="name = 'reused'")] == ["reused"]
    assert len(_runs(client, "reused")) == 3


def test_extra_tags_and_parent_run(store, client):
    cfg = _cfg(store, "tags", "tracking.run_name=my-run")
    with track_run(cfg) as parent:
        parent.finish(FINAL, "completed")
    with track_run(cfg, tags={"sweep": "s1"}, parent_run_id=parent.run_id) as child:
        child.finish(FINAL, "completed")
    run = client.get_run(child.run_id)
    assert run.data.tags["sweep"] == "s1"
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.info.run_name == "my-run"


def test_git_commit_tag(store, client, tmp_path):
    package_dir = Path(tracking.__file__).resolve().parent
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package_dir, capture_output=True, text=True,
                         check=False)
    head = out.stdout.strip() if out.returncode == 0 else None
    assert git_commit(tmp_path) == head  # a folder outside any repository falls back to the package's
    cfg = _cfg(store, "git")
    with track_run(cfg) as tracker:
        tracker.finish(FINAL, "completed")
    assert client.get_run(tracker.run_id).data.tags.get("mlflow.source.git.commit") == head


def test_artifact_location(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert artifact_location(f"sqlite:///{tmp_path}/a/m.db") == (tmp_path / "a" / "mlartifacts").as_uri()
    assert artifact_location("sqlite:///mlflow.db") == (tmp_path / "mlartifacts").as_uri()
    assert artifact_location("http://127.0.0.1:5000") is None


class _RacingClient:
    """Another process creates the experiment between our look-up and our create."""

    def __init__(self) -> None:
        self.lookups = 0

    def get_experiment_by_name(self, name):
        self.lookups += 1
        return None if self.lookups == 1 else type("Exp", (), {"experiment_id": "7", "tags": {
            "mlflow.experimentKind": "custom_model_development"}})()

    def create_experiment(self, name, artifact_location=None, tags=None):
        raise RuntimeError("RESOURCE_ALREADY_EXISTS")


def test_get_or_create_experiment_survives_a_concurrent_create():
    assert get_or_create_experiment(_RacingClient(), "x", "sqlite:///m.db") == "7"


def test_buffered_epochs_are_written_in_one_batch(store, client, monkeypatch):
    cfg = _cfg(store, "buffered")
    cfg.tracking.flush_every = 3600.0  # nothing is due during the run: one write at the end
    with track_run(cfg) as tracker:
        calls = []
        real = tracker.client.log_batch

        def spy(run_id, metrics=(), params=(), tags=(), **kwargs):
            calls.append(len(metrics))
            return real(run_id, metrics=metrics, params=params, tags=tags, **kwargs)

        monkeypatch.setattr(tracker.client, "log_batch", spy)
        for epoch in (1, 2, 3, 4):
            tracker(epoch, {"val_acc": 0.1 * epoch, "train_loss": 1.0})
        assert calls == []
        tracker.finish(FINAL, "completed")
        assert calls[0] == 8 + len(FINAL)  # the four epochs and the final metrics: one write
    history = client.get_metric_history(tracker.run_id, "val_acc")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]


def test_interrupted_run_keeps_its_buffered_curves(store, client):
    cfg = _cfg(store, "buffered-killed")
    cfg.tracking.flush_every = 3600.0
    with pytest.raises(KeyboardInterrupt), track_run(cfg) as tracker:
        tracker(1, {"val_acc": 0.5})
        tracker(2, {"val_acc": 0.6})
        raise KeyboardInterrupt
    assert client.get_run(tracker.run_id).info.status == "KILLED"
    assert sorted(m.step for m in client.get_metric_history(tracker.run_id, "val_acc")) == [1, 2]


def test_background_writes_end_the_run_before_then_runs(store, client):
    """A sweep worker's mode: every write on the writer thread, in order; ``then`` follows the end."""
    cfg = _cfg(store, "background")
    seen = []
    with track_run(cfg, background=True,
                   on_created=lambda run_id: seen.append(("created", run_id))) as tracker:
        for epoch in (1, 2, 3):
            tracker(epoch, {"val_acc": 0.25 * epoch, "train_loss": 1.0 / epoch})
        tracker.finish(FINAL, "completed", params={"sampled.lr": 0.1}, tags={"optuna.state": "COMPLETE"},
                       then=lambda error: seen.append((error, client.get_run(tracker.run_id).info.status)))
    tracking.WRITER.drain()
    assert seen == [("created", tracker.run_id), (None, "FINISHED")]
    run = client.get_run(tracker.run_id)
    assert [m.step for m in client.get_metric_history(tracker.run_id, "val_acc")] == [1, 2, 3]
    assert run.data.params["sampled.lr"] == "0.1" and run.data.params["optimizer.name"] == "sgd"
    assert run.data.tags["optuna.state"] == "COMPLETE" and run.data.tags["status"] == "finished"
    assert run.data.metrics["test_acc"] == FINAL["test_acc"]
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["config.yaml"]


def test_a_failed_background_write_reaches_then_and_ends_the_run_failed(store, client, monkeypatch):
    cfg = _cfg(store, "background-fails")
    errors = []
    with track_run(cfg, background=True) as tracker:
        tracking.WRITER.drain()  # created, config logged

        def broken(*args, **kwargs):
            raise RuntimeError("database is locked")
        monkeypatch.setattr(tracker.client, "log_batch", broken)
        tracker(1, {"val_acc": 0.5})
        tracker.flush()
        tracker.finish(FINAL, "completed", then=errors.append)
    tracking.WRITER.drain()
    assert len(errors) == 1 and "database is locked" in str(errors[0])
    with pytest.raises(RuntimeError, match="database is locked"):
        tracker.wait()
    assert client.get_run(tracker.run_id).info.status == "FAILED"  # not left RUNNING


def test_an_interrupted_background_run_waits_for_its_writes_then_ends_killed(store, client):
    cfg = _cfg(store, "background-killed")
    with pytest.raises(KeyboardInterrupt), track_run(cfg, background=True) as tracker:
        tracker(1, {"val_acc": 0.5})
        tracker.flush()
        raise KeyboardInterrupt
    run = client.get_run(tracker.run_id)
    assert run.info.status == "KILLED" and run.data.tags["status"] == "killed"
    assert [m.value for m in client.get_metric_history(tracker.run_id, "val_acc")] == [0.5]


# --- what the MLflow UI shows -------------------------------------------------------------------------


def test_experiments_are_training_experiments(store, client):
    """MLflow 3 opens an experiment without ``mlflow.experimentKind`` on its GenAI overview; a
    training experiment opens on the runs table. An experiment made before is marked when reused."""
    from ablate import records as R

    uri = f"sqlite:///{store}"
    made = get_or_create_experiment(client, "kind-new", uri)
    assert client.get_experiment(made).tags[R.TAG_EXPERIMENT_KIND] == R.EXPERIMENT_KIND_TRAINING
    older = client.create_experiment("kind-old", artifact_location=artifact_location(uri))
    assert R.TAG_EXPERIMENT_KIND not in client.get_experiment(older).tags
    assert get_or_create_experiment(client, "kind-old", uri) == older
    assert client.get_experiment(older).tags[R.TAG_EXPERIMENT_KIND] == R.EXPERIMENT_KIND_TRAINING


@pytest.mark.parametrize("outcome", ["pruned", "diverged", "completed"])
def test_the_run_name_shows_a_pruned_or_diverged_outcome(store, client, outcome):
    """MLflow's statuses are FINISHED / FAILED / KILLED: a pruned or diverged trial ends FINISHED
    like a completed one, so its name (the runs table's first column) carries its outcome."""
    cfg = _cfg(store, "names", "tracking.run_name=s-t0001")
    with track_run(cfg) as tracker:
        tracker.finish(FINAL, outcome, tags={"status": outcome})
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == ("s-t0001" if outcome == "completed" else f"s-t0001 ({outcome})")


@pytest.mark.parametrize(("error", "status"), [(ValueError, "failed"), (KeyboardInterrupt, "killed")])
def test_the_run_name_shows_a_failed_or_killed_outcome(store, client, error, status):
    cfg = _cfg(store, "names", "tracking.run_name=s-t0002")
    with pytest.raises(error), track_run(cfg) as tracker:
        raise error("boom")
    assert client.get_run(tracker.run_id).info.run_name == f"s-t0002 ({status})"


def test_a_moved_store_still_reads_its_artifacts(tmp_path):
    """MLflow stores an experiment's artifact location as an absolute path (it resolves a relative one
    against the working folder when the experiment is created): a project folder moved elsewhere
    leaves every run pointing at the old place, until ablate relocates the store's locations."""
    before = tmp_path / "before"
    before.mkdir()
    uri = f"sqlite:///{before / 'mlflow.db'}"
    old = MlflowClient(tracking_uri=uri)
    run_id = old.create_run(get_or_create_experiment(old, "moved", uri)).info.run_id
    old.log_text(run_id, "hello", "note.txt")
    after = tmp_path / "after"
    before.rename(after)

    moved = f"sqlite:///{after / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=moved)
    assert client.get_run(run_id).info.artifact_uri.startswith((before / "mlartifacts").as_uri())
    tracking.relocate_artifacts(moved)
    assert client.get_run(run_id).info.artifact_uri.startswith((after / "mlartifacts").as_uri())
    assert client.get_experiment_by_name("moved").artifact_location == (after / "mlartifacts").as_uri()
    assert (Path(client.download_artifacts(run_id, "note.txt", str(tmp_path))).read_text() == "hello")
    tracking.relocate_artifacts(moved)  # nothing left to move: a no-op
    assert client.get_run(run_id).info.artifact_uri.startswith((after / "mlartifacts").as_uri())


def _schema(db: Path) -> tuple[list[tuple[str, str]], list[tuple[str]], list[tuple[object, ...]]]:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        tables = con.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        head = con.execute("SELECT version_num FROM alembic_version").fetchall()
        experiments = con.execute("SELECT experiment_id, name, artifact_location, lifecycle_stage "
                                  "FROM experiments").fetchall()
    finally:
        con.close()
    return tables, head, experiments


def test_a_new_store_is_a_copy_of_the_cached_empty_store_equal_to_mlflows_own(tmp_path, monkeypatch):
    from ablate.tracking.store import create_store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    create_store("sqlite:///mlflow.db")  # no template yet: MLflow's migrations make it, then it is kept
    templates = list((tmp_path / "cache" / "ablate").glob("mlflow-*-empty-store.db"))
    assert len(templates) == 1
    monkeypatch.chdir(second)
    create_store("sqlite:///mlflow.db")  # copied from the template
    made, copied = _schema(first / "mlflow.db"), _schema(second / "mlflow.db")
    assert made[:2] == copied[:2]  # the same tables, indexes and migration head
    # the default experiment's folder is the working folder's, as MLflow would set it
    assert made[2] == [(0, "Default", str(first.resolve() / "mlruns" / "0"), "active")]
    assert copied[2] == [(0, "Default", str(second.resolve() / "mlruns" / "0"), "active")]
    uri = f"sqlite:///{second / 'mlflow.db'}"  # absolute: MLflow caches a store's engine by its URI
    client = MlflowClient(tracking_uri=uri)
    experiment_id = get_or_create_experiment(client, "e", uri)
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    assert not list(second.glob(".mlflow.db.creating-*"))


def test_a_broken_template_falls_back_to_mlflows_migrations(tmp_path, monkeypatch):
    from ablate.tracking.store import create_store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = tmp_path / "cache" / "ablate"
    template.mkdir(parents=True)
    from importlib.metadata import version

    (template / f"mlflow-{version('mlflow')}-empty-store.db").write_bytes(b"not a database")
    monkeypatch.chdir(tmp_path)
    create_store("sqlite:///mlflow.db")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [e.name for e in client.search_experiments()] == ["Default"]


def _half_made(db: Path, revision: str) -> None:
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
    con.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
    con.commit()
    con.close()


@pytest.mark.parametrize("kind", ["half-made", "not mlflow"])
def test_a_store_that_is_not_this_mlflows_whole_store_is_one_line_exit_2(tmp_path, monkeypatch, capsys, kind):
    # MLflow itself fails later with a traceback ("no such column: metrics.step")
    from ablate.cli import main

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    if kind == "half-made":
        _half_made(db, "451aebb31d03")  # one of MLflow's first migrations, the rest never ran
    else:
        import sqlite3

        sqlite3.connect(db).execute("CREATE TABLE notes (x TEXT)").connection.commit()
    before = db.read_bytes()
    for args in (["train", "trainer.epochs=1"], ["report", "--experiment", "e"], ["ui"]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ablate: error: tracking.uri: ")
        assert ("not a complete store" if kind == "half-made" else "not an MLflow store") in err[0]
    assert db.read_bytes() == before  # nothing written to it
    assert not (tmp_path / "mlartifacts").exists()


def test_a_whole_store_passes_the_schema_check(tmp_path):
    from ablate.tracking.store import check_store, create_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    create_store(uri)
    check_store(uri)
    check_store(uri, read=True)
