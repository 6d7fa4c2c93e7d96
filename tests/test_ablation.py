from __future__ import annotations

import pytest

from ablate.ablation import build_design
from ablate.errors import ConfigError
from ablate.space import AblationSpace
from ablate.study import compose_study

REFERENCE = {"norm": "batch", "dropout": 0.1, "optimizer": "adam", "model.depth": 3}
TRICKS = {"norm": None, "dropout": None, "optimizer": "sgd"}


def test_leave_one_out_switches_each_trick_off_from_the_reference():
    d = build_design("leave_one_out", reference=REFERENCE, tricks=TRICKS)
    assert list(d.arms) == ["reference", "-norm=batch", "-dropout=0.1", "-optimizer=adam"]
    assert d.arms["reference"] == ["model.depth=3", "norm=batch", "dropout=0.1", "optimizer=adam"]
    assert d.arms["-dropout=0.1"] == ["model.depth=3", "norm=batch", "dropout=0.0", "optimizer=adam"]
    assert d.arms["-optimizer=adam"][-1] == "optimizer=sgd"
    assert d.comparisons[1] == {"label": "dropout=0.1", "with_arm": "reference", "without_arm": "-dropout=0.1"}


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
        space = spec.space()
        assert isinstance(space, AblationSpace)
        assert len(space.trials()) == spec.n_trials
        assert space.trials()[: len(spec.arms)] == [{"arm": a, "seed": 0} for a in spec.arms]


def test_arm_overrides_win_over_fixed_ones():
    space = AblationSpace({"a": ["norm=batch", "trainer.epochs=5"]}, [0, 1], ["data=digits", "trainer.epochs=20"])
    assert space.overrides({"arm": "a", "seed": 1}) == ["data=digits", "trainer.epochs=5", "norm=batch", "seed=1"]
