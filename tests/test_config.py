from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from ablate.config import AVERAGINGS, CONF_DIR, RULES, compose, flatten, trick_summary
from ablate.data import DATASETS
from ablate.errors import ConfigError
from ablate.init import INITS
from ablate.menu import USER_DATASETS, USER_MODEL
from ablate.models import MODELS
from ablate.optim import CLIPS, OPTIMIZERS, SCHEDULES

GROUPS = {"data": DATASETS, "model": MODELS, "init": INITS, "optimizer": OPTIMIZERS, "clip": CLIPS,
          "schedule": SCHEDULES, "averaging": AVERAGINGS}
# The user's own options, which need a path or a factory to compose (tests/test_own_model.py).
OWN = {"data": USER_DATASETS, "model": (USER_MODEL,)}


def test_default_recipe():
    cfg = compose()
    assert (cfg.data.name, cfg.model.name, cfg.optimizer.name, cfg.norm) == ("digits", "mlp", "sgd", "none")
    assert cfg.trainer.device == "auto" and cfg.trainer.threads == 1
    assert cfg.tracking.uri == "sqlite:///mlflow.db"
    assert "hydra" not in cfg


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_implemented_option_has_a_yaml_and_composes(group):
    on_disk = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
    assert on_disk == set(GROUPS[group]) | set(OWN.get(group, ()))
    for option in GROUPS[group]:
        cfg = compose([f"{group}={option}"])
        assert cfg[group].name == option


def test_each_trick_has_an_off_value():
    cfg = compose()
    off = {"init": "default", "clip": "none", "schedule": "constant", "averaging": "none"}
    assert {k: cfg[k].name for k in off} == off
    off_values = (cfg.norm, cfg.dropout, cfg.weight_decay, cfg.l1, cfg.early_stopping.patience)
    assert off_values == ("none", 0, 0, 0, 0)


def test_optimizer_specific_fields():
    assert compose(["optimizer=nesterov"]).optimizer.nesterov is True
    assert compose(["optimizer=momentum"]).optimizer.momentum == 0.9
    assert compose(["optimizer=adam", "optimizer.beta2=0.99"]).optimizer.beta2 == 0.99
    assert compose(["optimizer=rmsprop"]).optimizer.alpha == 0.99
    assert compose(["clip=norm"]).clip.threshold == 1.0
    assert compose(["schedule=exponential"]).schedule.gamma == 0.98


@pytest.mark.parametrize(("overrides", "field", "allowed"), [
    (["norm=group"], "norm", "one of: none, batch, layer"),
    (["dropout=1.5"], "dropout", "< 1"),
    (["optimizer.lr=-1"], "optimizer.lr", "> 0"),
    (["trainer.epochs=0"], "trainer.epochs", ">= 1"),
    (["trainer.epochs=abc"], "trainer.epochs", "integer"),
    (["dropout=high"], "dropout", "float"),
    (["trainer.diagnostics=maybe"], "trainer.diagnostics", "bool"),
    (["optimizer=lbfgs"], "optimizer",
     "one of: adagrad, adam, adamw, momentum, nesterov, normalized, rmsprop, sgd"),
    (["model=transformer"], "model", "one of: cnn, custom, inception, mlp, resnet"),
    (["optimizer=adam", "optimizer.momentum=0.9"], "optimizer.momentum", "beta1"),
    (["init.bound=0.1"], "init.bound", "a field of init"),
    (["trainer.nope=1"], "trainer.nope", "a field of trainer"),
    (["dropout=[1"], "override", "override grammar"),
    (["data.scaling=minmax"], "data.scaling", "standard"),
    (["data.val_fraction=1"], "data.val_fraction", "< 1"),
    (["trainer.device=tpu"], "trainer.device", "cuda:N"),
    (["early_stopping.monitor=loss"], "early_stopping.monitor", "val_acc"),
    (["schedule=exponential", "schedule.gamma=1.5"], "schedule.gamma", "<= 1"),
    (["averaging=ensemble", "averaging.members=0"], "averaging.members", ">= 1"),
    (["weight_decay=-0.1"], "weight_decay", ">= 0"),
    (["optimizer.lr=nan"], "optimizer.lr", "> 0"),
])
def test_bad_input_is_one_line_naming_field_and_allowed(overrides, field, allowed):
    with pytest.raises(ConfigError) as err:
        compose(overrides)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{field}: ")
    assert err.value.field == field
    assert allowed in message


def test_every_rule_names_a_real_field():
    cfgs = [compose([f"{g}={o}"]) for g, options in GROUPS.items() for o in options]
    keys = {k for cfg in cfgs for k, _ in flatten(cfg)}
    assert set(RULES) <= keys


def test_flatten_and_summary():
    cfg = compose(["optimizer=adam", "norm=batch", "dropout=0.1", "clip=norm", "schedule=cosine",
                   "averaging=ema", "early_stopping.patience=3", "weight_decay=0.01"])
    flat = dict(flatten(cfg))
    assert flat["optimizer.lr"] == 0.001 and flat["model.depth"] == 2 and flat["tracking.run_name"] is None
    summary = trick_summary(cfg)
    for part in ("norm=batch", "dropout=0.1", "adam lr=0.001", "wd=0.01", "clip=norm(1)", "schedule=cosine",
                 "early_stop=3", "avg=ema"):
        assert part in summary
    assert "\n" not in summary
    assert OmegaConf.to_container(cfg)  # plain, serialisable
