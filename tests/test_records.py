"""The vocabulary runs and trials are recorded in: names, states, and the one best-value rule."""

from __future__ import annotations

import math

import pytest

from ablate import records as R


def test_best_value_takes_the_best_finite_epoch_in_the_studys_direction():
    history = [{"val_acc": 0.5, "val_loss": 1.2}, {"val_acc": math.nan, "val_loss": math.inf},
               {"val_acc": 0.7, "val_loss": 0.9}, {"val_acc": 0.6, "val_loss": 0.8}]
    assert R.best_value(history, "val_acc", "maximize") == 0.7
    assert R.best_value(history, "val_loss", "minimize") == 0.8
    assert R.best_value(history, "val_loss", "maximize") == 1.2  # inf is not a value


@pytest.mark.parametrize("history", [[], [{"val_acc": math.nan}], [{"train_loss": 0.3}]])
def test_best_value_is_nan_without_a_finite_epoch(history):
    assert math.isnan(R.best_value(history, "val_acc"))


def test_best_value_refuses_an_unknown_direction():
    with pytest.raises(ValueError, match="direction: 'up'"):
        R.best_value([{"val_acc": 0.5}], "val_acc", "up")


def test_metric_names_follow_the_metric():
    assert R.best_metric("val_loss") == "best_val_loss"
    assert R.count_metric(R.PRUNED) == "n_pruned"


@pytest.mark.parametrize(("status", "tags", "state"), [
    ("FINISHED", {R.TAG_STATUS: R.COMPLETED}, R.FINISHED),  # a sweep's trial
    ("FINISHED", {R.TAG_STATUS: R.FINISHED}, R.FINISHED),  # ablate train
    ("FINISHED", {R.TAG_STATUS: R.PRUNED}, R.PRUNED),
    ("FINISHED", {R.TAG_STATUS: R.DIVERGED}, R.DIVERGED),
    ("FINISHED", {R.TAG_OPTUNA_STATE: "PRUNED"}, R.PRUNED),  # an older store's pruned trial
    ("FAILED", {R.TAG_STATUS: R.FAILED}, R.FAILED),
    ("KILLED", {}, R.KILLED),
    ("RUNNING", {R.TAG_STATUS: R.RUNNING}, R.RUNNING),
    ("SCHEDULED", {}, R.RUNNING),
])
def test_run_state_reads_mlflows_status_and_our_tags(status, tags, state):
    assert R.run_state(status, tags) == state


def test_every_tag_is_listed_once_and_every_state_is_known():
    tags = [v for k, v in vars(R).items() if k.startswith("TAG_")]
    assert sorted(tags) == sorted(R.TAGS) and len(set(R.TAGS)) == len(R.TAGS)
    attrs = [v for k, v in vars(R).items() if k.startswith("ATTR_")]
    assert len(set(attrs)) == len(attrs) and all(a.startswith("ablate.") for a in attrs)
    assert set(R.KEPT_STATES) <= set(R.RUN_STATES) and set(R.OUTCOMES) - {R.SURPLUS} <= set(R.RUN_STATES)
