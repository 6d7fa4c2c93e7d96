from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from ablate.errors import ConfigError
from ablate.space import format_override, parse_space


def _one(expression):
    return parse_space({"x": expression}).distributions["x"]


@pytest.mark.parametrize(("expression", "expected"), [
    ("choice(sgd, adam)", CategoricalDistribution(["sgd", "adam"])),
    ("choice(0.0, 1e-4)", CategoricalDistribution([0.0, 1e-4])),
    ("choice(true, false)", CategoricalDistribution([True, False])),
    ("shuffle(choice(1, 2, 3))", CategoricalDistribution([1, 2, 3])),
    # range is Python's: the stop is excluded
    ("range(1, 4)", IntDistribution(1, 3)),
    ("range(1, 10, 3)", IntDistribution(1, 7, step=3)),
    ("range(2, 11, 2)", IntDistribution(2, 10, step=2)),
    ("shuffle(range(1, 4))", IntDistribution(1, 3)),
    ("range(0.0, 0.5, 0.1)", FloatDistribution(0.0, 0.4, step=0.1)),
    # interval bounds are both included
    ("interval(0.1, 0.9)", FloatDistribution(0.1, 0.9)),
    ("int(interval(1, 10))", IntDistribution(1, 10)),
    ("tag(log, interval(1e-4, 1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
    ("tag(log, int(interval(16, 256)))", IntDistribution(16, 256, log=True)),
])
def test_grammar_to_distribution(expression, expected):
    assert _one(expression) == expected


def test_plain_values_are_fixed_overrides():
    space = parse_space({"optimizer": "adam", "trainer.epochs": 5, "norm": "choice(none, batch)"},
                        {"data": "digits", "model.residual": True, "optimizer.lr": 0.01})
    assert list(space.distributions) == ["norm"]
    assert space.fixed == ["data=digits", "model.residual=true", "optimizer.lr=0.01", "optimizer=adam",
                           "trainer.epochs=5"]


@pytest.mark.parametrize(("key", "value", "override"), [
    ("optimizer", "adam", "optimizer=adam"),
    ("optimizer.lr", 0.30000000000000004, "optimizer.lr=0.3"),
    ("optimizer.lr", 1e-05, "optimizer.lr=1e-05"),
    ("weight_decay", 0.0, "weight_decay=0.0"),
    ("model.depth", 3, "model.depth=3"),
    ("model.residual", False, "model.residual=false"),
    ("tracking.run_name", None, "tracking.run_name=null"),
    ("tracking.run_name", "my run, 2", "tracking.run_name='my run, 2'"),
])
def test_value_to_override_round_trips(key, value, override):
    text = format_override(key, value)
    assert text == override
    parsed = OverridesParser.create().parse_override(text).value()
    assert parsed == value or (isinstance(value, float) and parsed == pytest.approx(value))


def test_sampled_params_become_overrides_in_order():
    space = parse_space({"optimizer": "choice(sgd, adam)", "optimizer.lr": "tag(log, interval(1e-4, 1))",
                         "model.depth": "range(1, 4)"}, {"data": "digits"})
    assert space.overrides({"optimizer": "adam", "optimizer.lr": 0.001, "model.depth": 2}) == [
        "data=digits", "optimizer=adam", "optimizer.lr=0.001", "model.depth=2"]
    assert space.representative() == {"optimizer": "sgd", "optimizer.lr": 1e-4, "model.depth": 1}


@pytest.mark.parametrize(("params", "field", "allowed"), [
    ({"x": "choice(a, b"}, "params.x", "grammar"),
    ({"x": "range(5, 1)"}, "params.x", "at least one value"),
    ({"x": "range(1, 5, -1)"}, "params.x", "step > 0"),
    ({"x": "interval(1, 1)"}, "params.x", "low < high"),
    ({"x": "tag(log, interval(0, 1))"}, "params.x", "low > 0"),
    ({"x": "tag(log, choice(1, 2))"}, "params.x", "log only on interval"),
    ({"x": "tag(log, range(1, 5))"}, "params.x", "log only on interval"),
    ({"x": "5"}, "params", "at least one searched parameter"),
    ({}, "params", "at least one searched parameter"),
])
def test_bad_spaces_are_one_line_errors(params, field, allowed):
    with pytest.raises(ConfigError) as err:
        parse_space(params)
    assert err.value.field == field and allowed in str(err.value) and "\n" not in str(err.value)


def test_searched_value_in_fixed_is_refused():
    with pytest.raises(ConfigError, match=r"fixed\.norm"):
        parse_space({"x": "choice(1, 2)"}, {"norm": "choice(none, batch)"})
