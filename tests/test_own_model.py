"""A user's own model: named by import path, registered from Python or by an entry point; checked
against its factory's signature when the config is composed; every model-free trick applied to it."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.config_store import ConfigStore
from torch import nn

import ablate
from ablate import registry
from ablate.averaging import Ensemble
from ablate.config import compose, register_configs, trick_summary
from ablate.errors import AblateError, ConfigError
from ablate.sweep.composer import check_trial_configs
from ablate.sweep.spec import compose_study
from ablate.train import fit, load_data

NETS = '''
from torch import nn

CALLS = []


def make_net(input_shape, num_classes, *, hidden=8, norm="none", dropout=0.0, depth=1):
    """Declares norm, dropout, depth and a field of its own, hidden; not width, activation, residual."""
    CALLS.append(dict(input_shape=input_shape, num_classes=num_classes, hidden=hidden, norm=norm,
                      dropout=dropout, depth=depth))
    layers = [nn.Flatten()]
    width = 1
    for d in input_shape:
        width *= d
    for _ in range(depth):
        layers.append(nn.Linear(width, hidden))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def plain_net(input_shape, num_classes):
    """Declares no trick knob at all."""
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], num_classes))


def no_shape(num_classes):
    return nn.Linear(4, num_classes)


def not_a_module(input_shape, num_classes):
    return "a string"


def three_logits(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], 3))


def needs_size(input_shape, num_classes, size):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], num_classes))


def load_waves():
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 1, 16)).astype("float32")
    y = (x[:, 0, :4].sum(axis=1) > 0).astype("int64")
    return x, y
'''


def _arrays(folder: Path, *, n: int = 80, features: int = 16, classes: int = 3) -> Path:
    """A small learnable dataset: the class is which third of the features is largest."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, features)).astype(np.float32)
    y = np.array([int(np.argmax([r[:5].sum(), r[5:10].sum(), r[10:].sum()])) for r in x[:, 0]], np.int64)
    path = folder / "toy.npz"
    np.savez(path, x_train=x, y_train=y % classes)
    return path


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A fresh working folder holding the user's ``ownnets.py`` and ``toy.npz``; restored after."""
    (tmp_path / "ownnets.py").write_text(NETS)
    _arrays(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(registry, "_models", dict(registry._models))
    monkeypatch.setattr(registry, "_datasets", dict(registry._datasets))
    register_configs()
    repo = ConfigStore.instance().repo
    before = {group: set(repo[group]) for group in ("model", "data")}
    yield tmp_path
    sys.modules.pop("ownnets", None)
    for group, names in before.items():
        for name in set(repo[group]) - names:
            repo[group].pop(name)


TINY = ["data=arrays", "data.path=toy.npz", "trainer.epochs=2", "trainer.batch_size=16", "seed=0"]


def _calls() -> list[dict]:
    import ownnets

    return ownnets.CALLS


# --- the three ways of naming a model ---------------------------------------------------------


def test_a_factory_named_by_import_path_is_called_with_the_knobs_it_declares(folder):
    cfg = compose(["model=custom", "model.factory=ownnets:make_net", "+model.hidden=5", "norm=batch",
                   "dropout=0.2", "model.depth=2", *TINY])
    result = fit(cfg)
    assert result.stop_reason == "completed" and result.epochs_run == 2
    call = _calls()[-1]
    assert call == {"input_shape": (1, 16), "num_classes": 3, "hidden": 5, "norm": "batch",
                    "dropout": 0.2, "depth": 2}
    assert [type(m).__name__ for m in result.model.modules()].count("BatchNorm1d") == 2
    assert "ownnets:make_net depth=2 hidden=5" in trick_summary(cfg)


def test_knobs_left_at_null_are_not_passed_so_the_factory_defaults_hold(folder):
    fit(compose(["model=custom", "model.factory=ownnets:make_net", *TINY]))
    assert _calls()[-1] == {"input_shape": (1, 16), "num_classes": 3, "hidden": 8, "norm": "none",
                            "dropout": 0.0, "depth": 1}


def test_a_model_registered_from_python_is_an_option(folder):
    sys.path.insert(0, str(folder))
    import ownnets

    ablate.register_model("regnet", ownnets.make_net)
    cfg = compose(["model=regnet", *TINY])
    assert cfg.model.name == "regnet" and cfg.model.factory == "ownnets:make_net"  # for other processes
    assert fit(cfg).epochs_run == 2

    # One defined in __main__ (or a closure) cannot be imported elsewhere: it is found by name here.
    def local_net(input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(16, num_classes))

    ablate.register_model("localnet", local_net)
    cfg = compose(["model=localnet", *TINY])
    assert cfg.model.factory is None and fit(cfg).epochs_run == 2


def test_register_refuses_a_builtin_name_or_a_non_callable(folder):
    with pytest.raises(ConfigError, match=r"^model: 'mlp' is not allowed"):
        ablate.register_model("mlp", lambda **_: None)
    with pytest.raises(ConfigError, match="a callable"):
        ablate.register_model("mine", "ownnets:make_net")  # type: ignore[arg-type]


def _dist(root: Path, entry_points: str) -> None:
    info = root / "ownpkg-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ownpkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_an_installed_entry_point_is_an_option(folder, tmp_path_factory, monkeypatch):
    site = tmp_path_factory.mktemp("site")
    _dist(site, """\
        [ablate.models]
        epnet = ownnets:make_net
        [ablate.datasets]
        epwaves = ownnets:load_waves
        """)
    monkeypatch.syspath_prepend(str(site))
    cfg = compose(["model=epnet", "data=epwaves", "trainer.epochs=1", "norm=batch"])
    assert (cfg.model.name, cfg.model.factory, cfg.data.function) == ("epnet", "ownnets:make_net",
                                                                      "ownnets:load_waves")
    result = fit(cfg)
    assert result.epochs_run == 1 and _calls()[-1]["norm"] == "batch"
    assert load_data(cfg).input_shape == (1, 16)


def test_the_users_conf_folder_adds_options_and_cannot_shadow_shipped_ones(folder):
    (folder / "conf" / "model").mkdir(parents=True)
    (folder / "conf" / "model" / "mine.yaml").write_text(
        "name: mine\nfactory: ownnets:make_net\nhidden: 6\ndepth: 1\n")
    cfg = compose(["model=mine", "model.hidden=4", *TINY])  # its own field, no + needed
    fit(cfg)
    assert _calls()[-1]["hidden"] == 4
    (folder / "conf" / "model" / "mlp.yaml").write_text("name: mlp\n")
    with pytest.raises(AblateError, match=r"model=mlp is a shipped option"):
        compose(["model=mine"])


# --- compose-time checks against the factory's signature -----------------------------------------


@pytest.mark.parametrize(("override", "line"), [
    ("norm=batch", "norm=batch: model 'ownnets:plain_net' does not take 'norm'"),
    ("dropout=0.1", "dropout=0.1: model 'ownnets:plain_net' does not take 'dropout'"),
    ("model.depth=3", "model.depth=3: model 'ownnets:plain_net' does not take 'depth'"),
    ("model.width=3", "model.width=3: model 'ownnets:plain_net' does not take 'width'"),
    ("model.activation=tanh", "model.activation=tanh: model 'ownnets:plain_net' does not take 'activation'"),
    ("model.residual=true", "model.residual=true: model 'ownnets:plain_net' does not take 'residual'"),
    ("+model.hidden=3", "model.hidden=3: model 'ownnets:plain_net' does not take 'hidden'"),
])
def test_a_knob_the_factory_does_not_take_is_one_line_at_compose_time(folder, override, line):
    with pytest.raises(AblateError) as err:
        compose(["model=custom", "model.factory=ownnets:plain_net", override, *TINY])
    assert str(err.value).startswith(line) and "\n" not in str(err.value)
    assert "ownnets" not in sys.modules or not _calls()  # refused before any model was built


def test_a_study_that_switches_a_knob_the_factory_does_not_take_is_refused_before_it_starts(folder):
    (folder / "sweeps").mkdir()
    (folder / "sweeps" / "plain_ablation.yaml").write_text(textwrap.dedent("""\
        defaults: [base_study, {sampler: random}, {pruner: none}, {launcher: local}, _self_]
        design: leave_one_out
        seeds: 1
        fixed: {data: arrays, data.path: toy.npz, model: custom, model.factory: "ownnets:plain_net"}
        reference: {norm: batch, optimizer: adam}
        tricks: {norm: null, optimizer: sgd}
        """))
    (folder / "sweeps" / "plain_search.yaml").write_text(textwrap.dedent("""\
        defaults: [base_study, {sampler: random}, {pruner: none}, {launcher: local}, _self_]
        n_trials: 2
        fixed: {data: arrays, data.path: toy.npz, model: custom, model.factory: "ownnets:plain_net"}
        params:
          norm: choice(none, batch)
        """))
    for study in ("plain_ablation", "plain_search"):
        with pytest.raises(AblateError, match=r"^norm=batch: model 'ownnets:plain_net' does not take 'norm'"):
            check_trial_configs(compose_study(study, cwd=folder))


@pytest.mark.parametrize(("factory", "field", "allowed"), [
    ("nowhere:make_net", "model.factory", "an importable module (ModuleNotFoundError"),
    ("ownnets:absent", "model.factory", "has no 'absent'"),
    ("ownnets", "model.factory", "an import path module:function"),
    ("ownnets:no_shape", "model.factory", "taking the keywords input_shape and num_classes"),
    ("ownnets:needs_size", "model.size", "requires it"),
])
def test_a_factory_that_cannot_be_used_is_one_line_at_compose_time(folder, factory, field, allowed):
    with pytest.raises(ConfigError) as err:
        compose(["model=custom", f"model.factory={factory}", *TINY])
    assert err.value.field == field and allowed in str(err.value) and "\n" not in str(err.value)


def test_custom_without_a_factory_says_how_to_name_one(folder):
    with pytest.raises(ConfigError, match=r"^model.factory: None .*model=custom model.factory="):
        compose(["model=custom", *TINY])


@pytest.mark.parametrize(("factory", "data", "allowed"), [
    ("ownnets:not_a_module", TINY, "returning a torch.nn.Module (it returned str)"),
    ("ownnets:three_logits", ["data=digits", "trainer.epochs=1"],
     "a model that takes inputs shaped (1, 8, 8)"),
    ("ownnets:three_logits", [*TINY[:2], "data.num_classes=4", "trainer.epochs=1"],
     "logits shaped (N, 4) for 4 classes (it gave (2, 3)"),
])
def test_a_model_that_does_not_fit_the_data_is_one_line_before_training(folder, factory, data, allowed):
    cfg = compose(["model=custom", f"model.factory={factory}", *data])
    epochs: list[int] = []
    with pytest.raises(ConfigError) as err:
        fit(cfg, on_epoch=lambda epoch, metrics: epochs.append(epoch))
    assert err.value.field == "model" and allowed in str(err.value) and "\n" not in str(err.value)
    assert epochs == []


# --- every trick that needs no help from the model --------------------------------------------


CUSTOM = ["model=custom", "model.factory=ownnets:make_net", "+model.hidden=12", *TINY]


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for n, p in model.named_parameters() if p.dim() > 1])


def _first_linear(model: nn.Module) -> torch.Tensor:
    return next(m for m in model.modules() if isinstance(m, nn.Linear)).weight.detach()


@pytest.mark.parametrize(("init", "std"), [("normal", lambda n_in: 1.0),
                                           ("gaussian", lambda n_in: 1 / math.sqrt(n_in)),
                                           ("kaiming", lambda n_in: math.sqrt(2 / n_in))])
def test_init(folder, init, std):
    # lr this small leaves the drawn weights as drawn.
    cfg = compose([*CUSTOM, f"init={init}", "optimizer.lr=1e-12", "trainer.epochs=1", "model.hidden=256"])
    w = _first_linear(fit(cfg).model)
    assert w.std().item() == pytest.approx(std(16), rel=0.1)


def test_optimizer_and_its_learning_rate(folder):
    sgd = fit(compose([*CUSTOM, "optimizer=sgd", "optimizer.lr=0.05"]))
    adam = fit(compose([*CUSTOM, "optimizer=adam", "optimizer.lr=0.005"]))
    assert [h["lr"] for h in sgd.history] == [0.05, 0.05] and adam.history[0]["lr"] == 0.005
    assert sgd.history[-1]["train_loss"] != adam.history[-1]["train_loss"]


def test_weight_decay_shrinks_the_weight_matrices_not_the_biases(folder):
    base = [*CUSTOM, "optimizer.lr=0.1", "trainer.epochs=3"]
    plain, decayed = fit(compose(base)).model, fit(compose([*base, "weight_decay=0.5"])).model
    assert _weights(decayed).norm() < 0.9 * _weights(plain).norm()
    from ablate.optim import decay_groups

    decay, no_decay = decay_groups(decayed)
    assert {p.dim() for p in decay} == {2} and {p.dim() for p in no_decay} == {1}


def test_l1_drives_weights_towards_zero(folder):
    base = [*CUSTOM, "optimizer.lr=0.1", "trainer.epochs=3"]
    plain, sparse = fit(compose(base)).model, fit(compose([*base, "l1=0.05"])).model
    assert _weights(sparse).abs().sum() < 0.8 * _weights(plain).abs().sum()


@pytest.mark.parametrize("clip", ["clip=value", "clip=norm"])
def test_clipping_bounds_each_step(folder, clip):
    base = [*CUSTOM, "optimizer.lr=0.5", "trainer.epochs=1"]
    start = _weights(fit(compose([*base, "optimizer.lr=1e-12"])).model)
    free = _weights(fit(compose(base)).model) - start
    clipped = _weights(fit(compose([*base, clip, "clip.threshold=1e-4"])).model) - start
    assert clipped.abs().max() < 0.01 * free.abs().max()


@pytest.mark.parametrize("schedule", ["exponential", "step", "cosine"])
def test_schedules_lower_the_rate(folder, schedule):
    step = ["schedule.step_size=1"] if schedule == "step" else []
    history = fit(compose([*CUSTOM, f"schedule={schedule}", "trainer.epochs=3", *step])).history
    assert history[-1]["lr"] < history[0]["lr"]


@pytest.mark.parametrize(("averaging", "kind"), [("ensemble", Ensemble), ("ema", nn.Module),
                                                 ("swa", nn.Module)])
def test_averaging(folder, averaging, kind):
    extra = ["averaging.members=2"] if averaging == "ensemble" else []
    result = fit(compose([*CUSTOM, f"averaging={averaging}", *extra]))
    assert isinstance(result.model, kind)
    if averaging != "ensemble":  # an averaged copy of the user's network, not the network itself
        assert type(result.model).__name__ != "Sequential"
    assert math.isfinite(result.final["test_acc"])


def test_early_stopping(folder):
    # No learning: val_acc never improves after the first epoch, so patience 1 stops at epoch 2.
    result = fit(compose([*CUSTOM, "optimizer.lr=1e-12", "trainer.epochs=6", "early_stopping.patience=1"]))
    assert (result.stop_reason, result.epochs_run) == ("early_stopped", 2)


def test_diagnostics_probe_the_users_layers(folder):
    history = fit(compose(CUSTOM)).history
    layers = [name for name, m in fit(compose(CUSTOM)).model.named_modules() if isinstance(m, nn.Linear)]
    assert layers and all(f"grad_norm/{n}" in history[-1] and f"act_std/{n}" in history[-1] for n in layers)
    assert not any(k.startswith("grad_norm/") for k in fit(compose([*CUSTOM, "trainer.diagnostics=false"]))
                   .history[-1])


@pytest.mark.parametrize(("scaling", "low", "high"), [("unit", 0.0, 1.0), ("symmetric", -1.0, 1.0)])
def test_input_scaling(folder, scaling, low, high):
    cfg = compose([*CUSTOM, f"data.scaling={scaling}"])
    x = load_data(cfg).x_train
    assert (x.min().item(), x.max().item()) == pytest.approx((low, high), abs=1e-6)
    assert fit(cfg).epochs_run == 2
