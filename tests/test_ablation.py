from __future__ import annotations

import json

import pytest

from ablate import records as R
from ablate.ablation import build_design
from ablate.errors import ConfigError
from ablate.space import AblationSpace
from ablate.sweep import compose_study

REFERENCE = {"norm": "batch", "dropout": 0.1, "optimizer": "adam", "model.depth": 3}
TRICKS = {"norm": None, "dropout": None, "optimizer": "sgd"}


def test_leave_one_out_switches_each_trick_off_from_the_reference():
    d = build_design("leave_one_out", reference=REFERENCE, tricks=TRICKS)
    assert list(d.arms) == ["reference", "-norm=batch", "-dropout=0.1", "-optimizer=adam"]
    assert d.arms["reference"] == ["model.depth=3", "norm=batch", "dropout=0.1", "optimizer=adam"]
    assert d.arms["-dropout=0.1"] == ["model.depth=3", "norm=batch", "dropout=0.0", "optimizer=adam"]
    assert d.arms["-optimizer=adam"][-1] == "optimizer=sgd"
    assert d.comparisons[1] == {"label": "dropout=0.1", "with_arm": "reference",
                                "without_arm": "-dropout=0.1"}


def test_add_one_in_switches_each_trick_on_alone():
    d = build_design("add_one_in", reference=REFERENCE, tricks=TRICKS)
    assert d.arms["baseline"] == ["model.depth=3", "norm=none", "dropout=0.0", "optimizer=sgd"]
    assert d.arms["+norm=batch"] == ["model.depth=3", "norm=batch", "dropout=0.0", "optimizer=sgd"]
    assert all(c["without_arm"] == "baseline" for c in d.comparisons)


def test_cumulative_adds_tricks_in_order_and_compares_each_step_with_the_last():
    d = build_design("cumulative", reference=REFERENCE, tricks=["dropout", "norm"])
    assert list(d.arms) == ["baseline", "+dropout=0.1", "+norm=batch"]
    assert d.arms["+norm=batch"] == ["optimizer=adam", "model.depth=3", "dropout=0.1", "norm=batch"]
    assert [(c["with_arm"], c["without_arm"]) for c in d.comparisons] == [
        ("+dropout=0.1", "baseline"), ("+norm=batch", "+dropout=0.1")]


def test_factorial_has_every_combination_and_its_factors():
    d = build_design("factorial", reference=REFERENCE, tricks=TRICKS)
    assert len(d.arms) == 8 and "baseline" in d.arms and "norm=batch + dropout=0.1 + optimizer=adam" in d.arms
    assert sum(d.factors["norm=batch"].values()) == 4
    assert set(d.factors) == {"norm=batch", "dropout=0.1", "optimizer=adam"}


@pytest.mark.parametrize(("design", "tricks", "field"), [
    ("halving", TRICKS, "design"),
    ("leave_one_out", {"optimizer": None}, "tricks.optimizer"),          # no off value in the menu
    ("leave_one_out", {"clip": None}, "tricks.clip"),                    # the reference does not set it
    ("leave_one_out", {"norm": "batch"}, "reference.norm"),              # on equals off
    ("leave_one_out", [], "tricks"),
    ("factorial", {f"t{i}": 0 for i in range(7)}, "tricks"),
])
def test_bad_designs_are_one_line_errors(design, tricks, field):
    reference = {**REFERENCE, **{f"t{i}": 1 for i in range(7)}}
    with pytest.raises(ConfigError) as err:
        build_design(design, reference=reference, tricks=tricks)
    assert err.value.field == field and "\n" not in str(err.value)


def test_shipped_ablation_studies_compose():
    for name, design in (("ablation_digits", "leave_one_out"), ("factorial_digits", "factorial"),
                         ("cumulative_digits", "cumulative")):
        spec = compose_study(name)
        assert spec.design == design and spec.pruner["name"] == "none"
        assert spec.n_trials == len(spec.arms) * len(spec.seeds)
        space = spec.space
        assert isinstance(space, AblationSpace)
        assert len(space.trials()) == spec.n_trials
        assert space.trials()[: len(spec.arms)] == [{"arm": a, "seed": 0} for a in spec.arms]


def test_resolve_reaches_the_stored_spec_and_bad_values_are_one_line():
    spec = compose_study("ablation_digits", ["resolve.margin=0.01", "resolve.confidence=0.9"])
    assert spec.resolve == {"margin": 0.01, "confidence": 0.9}
    assert json.loads(spec.to_json())["resolve"] == {"margin": 0.01, "confidence": 0.9}
    assert compose_study("ablation_digits").resolve == {"margin": None, "confidence": 0.95}
    assert compose_study("ablation_digits", ["metric=val_loss", "direction=minimize",
                                             "resolve.margin=0.02"]).resolve["margin"] == 0.02


@pytest.mark.parametrize(("overrides", "field"), [
    (["resolve.margin=0"], "resolve.margin"),
    (["resolve.margin=-0.5"], "resolve.margin"),
    (["metric=val_loss", "direction=minimize"], "resolve.margin"),  # no default margin for a loss
    (["resolve.confidence=1.0"], "resolve.confidence"),
    (["resolve.confidence=0.4"], "resolve.confidence"),
])
def test_bad_resolve_values_are_one_line_config_errors(overrides, field):
    with pytest.raises(ConfigError) as err:
        compose_study("ablation_digits", overrides)
    assert err.value.field == field and "\n" not in str(err.value)


def test_arm_overrides_win_over_fixed_ones():
    space = AblationSpace({"a": ["norm=batch", "trainer.epochs=5"]}, [0, 1],
                          ["data=digits", "trainer.epochs=20"])
    assert space.overrides({"arm": "a", "seed": 1}) == [
        "data=digits", "trainer.epochs=5", "norm=batch", "seed=1"]


@pytest.mark.slow
def test_small_leave_one_out_end_to_end(tmp_path):
    """ablate sweep runs every (arm, seed) as a child of the study's parent run; the report's
    per-arm table lists every arm with n = seeds."""
    import subprocess
    import sys

    from markdown_it import MarkdownIt
    from mlflow.tracking import MlflowClient

    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "tiny_loo.yaml").write_text(
        "defaults: [base_study, {sampler: random}, {pruner: none}, _self_]\n"
        "design: leave_one_out\nseeds: 2\nworkers: 2\n"
        "fixed: {data: digits, model: mlp, trainer.epochs: 3}\n"
        "reference: {norm: batch, optimizer: adam}\n"
        "tricks: {norm: null, optimizer: sgd}\n")
    run = subprocess.run([sys.executable, "-m", "ablate", "sweep", "tiny_loo"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    report = subprocess.run([sys.executable, "-m", "ablate", "report", "tiny_loo", "--out", "reports"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert report.returncode == 0, report.stderr

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny_loo")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(R.TAG_KIND) == R.KIND_STUDY]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    arms = ["reference", "-norm=batch", "-optimizer=adam"]
    assert sorted((r.data.tags[R.TAG_ARM], r.data.params["seed"]) for r in children) == sorted(
        (a, str(s)) for a in arms for s in (0, 1))
    assert all(r.info.status == "FINISHED" for r in children)

    text = (tmp_path / "reports" / "tiny_loo" / "report.md").read_text(encoding="utf-8")
    tokens = MarkdownIt().enable("table").parse(text)
    tables, rows, cells, current = [], None, None, None
    for tok in tokens:
        if tok.type == "table_open":
            rows = []
        elif tok.type == "tr_open":
            cells = []
        elif tok.type == "inline" and cells is not None:
            current = tok.content
        elif tok.type in ("th_close", "td_close"):
            cells.append(current)
        elif tok.type == "tr_close":
            rows.append(cells)
            cells = None
        elif tok.type == "table_close":
            tables.append(rows)
    per_arm = next(t for t in tables if t[0][:2] == ["arm", "n"])
    assert sorted(r[0].replace("\\", "") for r in per_arm[1:]) == sorted(arms)
    assert all(r[1] == "2" for r in per_arm[1:])


def test_the_lesson_tricks_are_ablatable_with_the_menus_off_values():
    """norm=weight and clip.to=unit switch off to the existing defaults (none, threshold); the
    normalised step and the inception net are compared with a named alternative."""
    from ablate.config import compose

    reference = {"model": "inception", "norm": "weight", "optimizer": "normalized", "clip": "norm",
                 "clip.threshold": 10, "clip.to": "unit"}
    tricks = {"norm": None, "clip.to": None, "optimizer": "sgd", "model": "cnn"}
    d = build_design("leave_one_out", reference=reference, tricks=tricks)
    assert list(d.arms) == ["reference", "-norm=weight", "-clip.to=unit", "-optimizer=normalized",
                            "-model=inception"]
    configs = {arm: compose([*overrides, "trainer.epochs=1"]) for arm, overrides in d.arms.items()}
    assert (configs["reference"].norm, configs["reference"].clip.to) == ("weight", "unit")
    assert configs["-norm=weight"].norm == "none"
    assert configs["-clip.to=unit"].clip.to == "threshold" and configs["-clip.to=unit"].clip.threshold == 10
    assert configs["-optimizer=normalized"].optimizer.name == "sgd"
    assert configs["-model=inception"].model.name == "cnn"
