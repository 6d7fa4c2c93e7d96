"""``ablate studies``: listing, showing and deleting studies run by a real ``ablate sweep`` (digits,
one epoch) into a journal and into an RDB (SQLite) storage, with a real SQLite MLflow store."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from tiny_studies import run_ablate, tiny_study

STUDY = tiny_study(fixed={"model.depth": 1})


ablate = run_ablate


def _runs(cwd: Path) -> dict[str, str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return {r.info.run_id: r.info.lifecycle_stage
            for r in client.search_runs(experiments, run_view_type=ViewType.ALL)}


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """A folder with two finished studies: ``x`` in runs/x/journal.log, ``y`` in an SQLite storage."""
    cwd = tmp_path_factory.mktemp("studies")
    (cwd / "sweeps").mkdir()
    (cwd / "sweeps" / "x.yaml").write_text(STUDY)
    for args in (["x"], ["x", "name=y", f"storage=sqlite:///{cwd / 'optuna.db'}"]):
        done = ablate(cwd, "sweep", *args)
        assert done.returncode == 0, done.stderr[-2000:]
    return cwd


def test_list_shows_kind_progress_best_and_storage(swept):
    done = ablate(swept, "studies")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:6] == ["study", "kind", "finished", "running", "failed", "best"]
    [x] = rows  # runs/*/journal.log only
    cells = x.split()
    assert cells[:5] == ["x", "search", "2/2", "0", "0"]
    assert cells[6] == "val_acc" and 0 < float(cells[5]) <= 1
    assert x.endswith(str(swept / "runs" / "x" / "journal.log"))
    rdb = ablate(swept, "studies", "--storage", f"sqlite:///{swept / 'optuna.db'}")
    assert rdb.returncode == 0 and rdb.stdout.splitlines()[1].split()[:3] == ["y", "search", "2/2"]


def test_an_ablation_is_listed_with_its_verdicts_as_plan_and_the_report_judge_them(tmp_path):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "abl.yaml").write_text(
        "defaults: [base_study, {sampler: random}, {pruner: none}, _self_]\n"
        "design: leave_one_out\nseeds: 3\nworkers: 2\n"
        "fixed: {data: digits, model: mlp, model.depth: 1, trainer.epochs: 2, trainer.threads: 1}\n"
        "reference: {optimizer: adam, weight_decay: 1e-4}\ntricks: {optimizer: sgd, weight_decay: null}\n")
    done = ablate(tmp_path, "sweep", "abl")
    assert done.returncode == 0, done.stderr[-2000:]
    listed = ablate(tmp_path, "studies")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert "best / verdicts" in header
    assert row.split()[:3] == ["abl", "ablation", "leave_one_out"]
    told = {"helps": 0, "hurts": 0, "no effect": 0, "unresolved": 0}
    for part in row[header.index("best / verdicts"):header.index("last activity")].strip().split(", "):
        count, verdict = part.split(" ", 1)
        told[verdict] = int(count)
    assert sum(told.values()) == 2  # one verdict per trick, as ablate plan states them
    plan = ablate(tmp_path, "plan", "abl")  # its table: trick, effect, sd, seeds, verdict
    assert plan.returncode == 0, plan.stderr
    judged = [m.group(1) for line in plan.stdout.splitlines()
              if (m := re.search(r" pts\s+\d+\s+(helps|hurts|no effect|unresolved)", line))]
    assert len(judged) == 2 and {v: judged.count(v) for v in told} == told


def test_show_prints_the_stored_recipe(swept):
    done = ablate(swept, "studies", "show", "x")
    assert done.returncode == 0, done.stderr
    recipe = yaml.safe_load(done.stdout)
    assert recipe["name"] == "x" and recipe["n_trials"] == 2
    assert recipe["params"] == {"seed": "range(0, 100)"}
    assert recipe["fixed"] == {"trainer.epochs": 1, "model.depth": 1}


def test_delete_without_yes_says_what_and_deletes_nothing(swept):
    before = _runs(swept)
    done = ablate(swept, "studies", "delete", "x")
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("ablate: error: --yes:") and str(swept / "runs" / "x") in line
    assert "MLflow runs" in line
    assert (swept / "runs" / "x" / "journal.log").is_file() and _runs(swept) == before


def test_delete_removes_the_storage_and_marks_the_runs_deleted(swept):
    before = _runs(swept)
    assert len(before) == 6 and set(before.values()) == {"active"}  # two studies: parent + 2 trials each
    done = ablate(swept, "studies", "delete", "x", "--yes")
    assert done.returncode == 0, done.stderr
    assert not (swept / "runs" / "x").exists()
    deleted = [r for r, stage in _runs(swept).items() if stage == "deleted"]
    assert len(deleted) == 3  # x's parent and its two trials; y's stay
    done = ablate(swept, "studies", "delete", "y", "--yes", "--storage", f"sqlite:///{swept / 'optuna.db'}")
    assert done.returncode == 0, done.stderr
    assert optuna.get_all_study_names(f"sqlite:///{swept / 'optuna.db'}") == []
    assert set(_runs(swept).values()) == {"deleted"}
    assert ablate(swept, "studies").stdout.startswith("no studies here")
