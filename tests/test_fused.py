"""``fit_seeds``: each fused seed is the run ``fit`` makes with that seed, and seeds never touch.

Tolerance: vectorized, the fused model computes in float32 with batched kernels (a batched matmul or
grouped convolution adds in another order than K single ones), so per-epoch metrics agree with ``fit``
up to rounding: losses and diagnostics within a relative 1e-4, accuracies within one example. Measured
differences are ~1e-7 (in float64 they stay at float32's own rounding of the reported metrics).
Normalised conv nets on digits amplify rounding within an epoch or two (a 1e-7 weight difference became
1e-3 in one step of a BN ResNet, in float32 only), so vectorized they are compared over a few larger
batches. Looped (conv nets on the CPU), the kernels are fit's own and runs agree to ~1e-7 throughout.
"""

from __future__ import annotations

import copy
import math
import sys
import time

import pytest
import torch
from torch import nn

from ablate import fused as fused_module
from ablate.config import compose
from ablate.errors import ConfigError
from ablate.fused import FusedModel, fit_seeds
from ablate.train import fit, load_data

torch.set_num_threads(1)

REL = 1e-4  # losses, lr and diagnostics, relative
SEEDS = [0, 3]
TINY = ["model.width=16", "trainer.epochs=2"]
# For recipes that amplify rounding (normalised conv nets on digits; Adam, whose step is as large for a
# gradient of pure rounding noise, such as a bias's in front of BatchNorm, as for a real one): the first
# epoch, in three steps.
AMPLIFYING = "trainer.epochs=1 trainer.batch_size=512"


@pytest.fixture(scope="module")
def digits():
    return load_data(compose([]))


def _close(a: float, b: float, rel: float = REL) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-3)


def assert_same_run(fused_result, ref, digits) -> None:
    """One fused seed against ``fit`` with that seed: every epoch, every field, the final model."""
    assert fused_result.stop_reason == ref.stop_reason
    assert len(fused_result.history) == len(ref.history)
    one_val, one_test = 1 / len(digits.y_val), 1 / len(digits.y_test)
    for got, want in zip(fused_result.history, ref.history, strict=True):
        assert set(got) == set(want)
        for key, value in want.items():
            if key == "epoch_time":
                continue
            if key in ("val_acc", "train_acc"):
                assert abs(got[key] - value) <= one_val + 1e-9, (key, got[key], value)
            else:
                assert _close(got[key], value), (key, got[key], value)
    assert set(fused_result.final) == set(ref.final)
    for key in ("best_epoch", "epochs_run", "n_params"):
        assert fused_result.final[key] == ref.final[key], key
    assert _close(fused_result.final["test_loss"], ref.final["test_loss"])
    if math.isnan(ref.final["test_acc"]):
        assert math.isnan(fused_result.final["test_acc"])
    else:
        assert abs(fused_result.final["test_acc"] - ref.final["test_acc"]) <= one_test + 1e-9
    model = fused_result.model
    assert type(model) is type(ref.model) and not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())  # unstacked, off the meta device
    if not math.isnan(ref.final["test_acc"]):
        with torch.no_grad():
            acc = (model(digits.x_test).argmax(1) == digits.y_test).float().mean().item()
        assert acc == pytest.approx(fused_result.final["test_acc"], abs=1e-6)


def _check(digits, overrides, seeds=SEEDS, **kwargs):
    results = fit_seeds(compose(overrides), seeds, data=digits, **kwargs)
    assert len(results) == len(seeds)
    for seed, result in zip(seeds, results, strict=True):
        assert_same_run(result, fit(compose([*overrides, f"seed={seed}"]), data=digits), digits)
    return results


RECIPES = [
    "",
    "norm=batch", "norm=layer", "norm=weight",
    "model=cnn", "model=cnn norm=layer", "model=cnn norm=batch",  # on the CPU: looped
    "model=resnet model.width=8", "model=resnet model.width=8 norm=layer",
    "model=resnet model.width=8 norm=batch",
    "model=inception model.width=8 model.depth=1",
    "optimizer=momentum", "optimizer=nesterov", "optimizer=adagrad", "optimizer=rmsprop",
    "optimizer=adam", "optimizer=adamw weight_decay=0.05", "optimizer=normalized optimizer.momentum=0.5",
    "clip=norm clip.threshold=0.5", "clip=norm clip.threshold=0.5 clip.to=unit",
    "clip=value clip.threshold=0.01",
    "schedule=exponential schedule.gamma=0.5", "schedule=step schedule.step_size=1", "schedule=cosine",
    "weight_decay=0.01", "l1=0.001",
    "averaging=ema", "averaging=swa averaging.start=0.5", "averaging=ensemble averaging.members=2",
    "optimizer=adam averaging=ema clip=norm l1=0.0005 weight_decay=0.01",
    # The pre-BN biases' Adam steps are noise in fit too; they move the raw layer outputs act_std reads.
    f"optimizer=adam norm=batch trainer.diagnostics=false {AMPLIFYING}",
]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r or "default")
def test_each_seed_is_the_run_fit_makes_with_it(digits, recipe):
    _check(digits, [*TINY, *recipe.split()])


@pytest.mark.parametrize("recipe", [
    "model=cnn", f"model=cnn norm=batch {AMPLIFYING}", f"model=cnn norm=layer {AMPLIFYING}",
    "model=resnet model.width=8", f"model=resnet model.width=8 norm=batch {AMPLIFYING}",
    f"model=inception model.width=8 model.depth=1 norm=batch {AMPLIFYING}",
    "model=cnn norm=weight optimizer=normalized clip=norm averaging=swa",
])
def test_conv_nets_vectorized_as_on_a_gpu(digits, recipe):
    _check(digits, [*TINY, *recipe.split()], vectorize=True)


@pytest.mark.parametrize("recipe", [
    "", "norm=batch", "averaging=ensemble averaging.members=2", "averaging=ema clip=norm",
    "optimizer=normalized l1=0.001 weight_decay=0.01",
])
def test_dense_nets_looped(digits, recipe):
    _check(digits, [*TINY, *recipe.split()], vectorize=False)


def test_diagnostics_are_per_seed_and_off_when_off(digits):
    results = _check(digits, ["model.width=16", "trainer.epochs=1", "model.depth=3"])
    first = [r.history[0]["grad_norm/blocks.0.linear"] for r in results]
    assert first[0] != first[1]
    off = fit_seeds(compose([*TINY, "trainer.diagnostics=false"]), SEEDS, data=digits)
    assert not any(k.startswith(("grad_norm/", "act_std/")) for r in off for k in r.history[0])


@pytest.mark.parametrize("recipe", [
    "", "averaging=ensemble averaging.members=2", "averaging=ema early_stopping.min_delta=0.02",
    "averaging=swa averaging.start=0.3 early_stopping.min_delta=0.02", "model=cnn norm=batch",
])
def test_early_stopping_is_per_seed_and_restores_each_seeds_best(digits, recipe):
    """Seeds stop at different epochs and leave the stack; the others go on as fit trains them."""
    overrides = ["model.width=16", "early_stopping.patience=1", "optimizer.lr=0.5", "trainer.epochs=6",
                 *recipe.split()]
    seeds = [0, 1, 2]
    results = fit_seeds(compose(overrides), seeds, data=digits)
    assert len({r.epochs_run for r in results}) > 1  # they stopped at different epochs
    assert any(r.stop_reason == "early_stopped" for r in results)

    def val_acc(model):
        with torch.no_grad():
            return (model(digits.x_val).argmax(1) == digits.y_val).float().mean().item()

    for seed, r in zip(seeds, results, strict=True):
        ref = fit(compose([*overrides, f"seed={seed}"]), data=digits)
        assert_same_run(r, ref, digits)
        # The restored weights are fit's. (Under EMA / SWA with min_delta they need not score the
        # history's best val_acc, in fit too: the stopper's best epoch is not always best_epoch.)
        assert val_acc(r.model) == pytest.approx(val_acc(ref.model), abs=1 / len(digits.y_val) + 1e-9)


def test_a_diverging_seed_leaves_the_others_as_fit_trains_them(digits, monkeypatch):
    """Seed 1's weights are NaN from the start; seeds 0 and 2 train as if alone."""
    built = []
    initialised = fused_module._initialised

    def poison_the_second_seed(cfg, data, device):
        model = initialised(cfg, data, device)
        built.append(model)
        if len(built) == 2:
            with torch.no_grad():
                model.head.weight.fill_(math.nan)
        return model

    monkeypatch.setattr(fused_module, "_initialised", poison_the_second_seed)
    overrides = [*TINY, "norm=batch", "clip=norm", "trainer.epochs=3"]
    results = fit_seeds(compose(overrides), [0, 1, 2], data=digits)
    assert results[1].stop_reason == "diverged" and results[1].epochs_run == 1
    assert math.isnan(results[1].final["test_acc"])
    for seed in (0, 2):
        assert_same_run(results[seed], fit(compose([*overrides, f"seed={seed}"]), data=digits), digits)


def test_the_callback_is_per_seed_and_stops_only_its_seed(digits):
    calls = []

    def on_epoch(index, epoch, metrics):
        calls.append((index, epoch))
        return index == 0 and epoch == 2

    overrides = ["model.width=16", "trainer.epochs=4"]
    results = fit_seeds(compose(overrides), [5, 6], on_epoch, data=digits)
    assert calls == [(0, 1), (1, 1), (0, 2), (1, 2), (1, 3), (1, 4)]
    assert results[0].stop_reason == "stopped" and results[0].epochs_run == 2
    assert results[1].stop_reason == "completed"
    assert_same_run(results[1], fit(compose([*overrides, "seed=6"]), data=digits), digits)


def test_after_epoch_sees_every_seeds_epoch_and_can_stop_them_all(digits):
    # a search's repeats prune on the seeds' mean: it is known only once every seed reported the epoch
    calls = []
    results = fit_seeds(compose(["model.width=16", "trainer.epochs=4"]), [5, 6],
                        lambda index, epoch, metrics: calls.append((index, epoch)),
                        after_epoch=lambda epoch: calls.append(("after", epoch)) or epoch == 2, data=digits)
    assert calls == [(0, 1), (1, 1), ("after", 1), (0, 2), (1, 2), ("after", 2)]
    assert [(r.stop_reason, r.epochs_run) for r in results] == [("stopped", 2), ("stopped", 2)]


def test_train_times_are_shares_of_the_wall_time(digits):
    t0 = time.perf_counter()
    results = fit_seeds(compose(TINY), [0, 1, 2], data=digits)
    wall = time.perf_counter() - t0
    assert 0 < sum(r.final["train_time"] for r in results) <= wall
    for r in results:
        assert r.final["train_time"] == pytest.approx(sum(h["epoch_time"] for h in r.history))


@pytest.mark.parametrize("vectorized", [True, False])
def test_dropout_masks_are_drawn_per_network(vectorized):
    torch.manual_seed(0)
    x = torch.randn(64, 8).expand(2, 64, 8)

    def net(p):
        return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(p), nn.Linear(32, 3))

    with_dropout = net(0.5)
    fused = FusedModel([with_dropout, copy.deepcopy(with_dropout)], vectorized=vectorized)  # same weights
    out = fused(x)
    assert not torch.equal(out[0], out[1])
    fused.eval()
    with torch.no_grad():
        shared = fused.forward_shared(x[0])
    assert torch.equal(shared[0], shared[1])
    plain = net(0.0)
    out = FusedModel([plain, copy.deepcopy(plain)], vectorized=vectorized)(x)
    assert torch.equal(out[0], out[1])


def test_a_recipe_with_dropout_trains_and_its_seeds_differ(digits):
    results = fit_seeds(compose([*TINY, "dropout=0.3"]), SEEDS, data=digits)
    assert all(r.stop_reason == "completed" and math.isfinite(r.final["test_loss"]) for r in results)
    assert results[0].history != results[1].history


@pytest.mark.parametrize("seeds", [[], [1, 1], [0, "1"], [True], "01"])
def test_seeds_must_be_distinct_integers(digits, seeds):
    with pytest.raises(ConfigError, match=r"^seeds: .* a non-empty list of distinct integers$"):
        fit_seeds(compose(TINY), seeds, data=digits)


OWN_NETS = '''
from torch import nn


class Peeking(nn.Module):
    """Reads a value on the host in its forward: vmap cannot batch that."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = self.linear(self.flatten(x))
        return out if out.sum().item() != 1.5 else out


def peeking(input_shape, num_classes):
    return Peeking(input_shape, num_classes)


def plain(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))
'''


@pytest.fixture
def own_nets(tmp_path, monkeypatch):
    (tmp_path / "fusednets.py").write_text(OWN_NETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("fusednets", None)


def test_a_users_model_fuses_when_vmap_can_run_it(digits, own_nets):
    _check(digits, ["model=custom", "model.factory=fusednets:plain", "trainer.epochs=2"])


def test_a_users_model_vmap_cannot_run_trains_looped(digits, own_nets):
    overrides = ["model=custom", "model.factory=fusednets:peeking", "trainer.epochs=2"]
    _check(digits, overrides)
    with pytest.raises(ConfigError, match=r"^model: 'fusednets:peeking' .*vmap can run.*leave vectorize "
                                          r"unset to loop over the seeds instead$") as info:
        fit_seeds(compose(overrides), SEEDS, data=digits, vectorize=True)
    assert "\n" not in str(info.value)
