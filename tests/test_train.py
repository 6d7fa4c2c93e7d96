from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ablate.config import compose
from ablate.train import STOP_REASONS, EarlyStopping, Ensemble, fit, load_data

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return load_data(compose([]))


def _fit(digits, *overrides, on_epoch=None):
    return fit(compose(list(overrides)), on_epoch, data=digits)


def _without_times(history):
    return [{k: v for k, v in h.items() if k != "epoch_time"} for h in history]


def test_default_digits_mlp_learns(digits):
    result = _fit(digits)  # the default recipe, default epochs
    assert result.stop_reason == "completed"
    assert result.epochs_run == 20
    assert max(h["val_acc"] for h in result.history) >= 0.90
    assert result.final["test_acc"] >= 0.85


def test_same_config_and_seed_give_identical_metrics(digits):
    overrides = ("optimizer=adam", "norm=batch", "dropout=0.2", "trainer.epochs=3")
    a, b = _fit(digits, *overrides), _fit(digits, *overrides)
    assert _without_times(a.history) == _without_times(b.history)
    assert a.final["test_acc"] == b.final["test_acc"]
    c = _fit(digits, *overrides, "seed=1")
    assert _without_times(c.history) != _without_times(a.history)


def test_metrics_and_diagnostics_per_epoch(digits):
    result = _fit(digits, "model.depth=3", "trainer.epochs=2")
    layers = ["blocks.0.linear", "blocks.1.linear", "blocks.2.linear", "head"]
    for h in result.history:
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time"):
            assert math.isfinite(h[key])
        for layer in layers:
            assert h[f"grad_norm/{layer}"] > 0
            assert h[f"act_std/{layer}"] > 0
    assert [h["epoch"] for h in result.history] == [1.0, 2.0]
    for key in ("test_acc", "test_loss", "best_val_acc", "best_epoch", "epochs_run", "n_params"):
        assert key in result.final
    off = _fit(digits, "trainer.epochs=1", "trainer.diagnostics=false")
    assert not any(k.startswith(("grad_norm/", "act_std/")) for k in off.history[0])


def test_diagnostics_show_vanishing_gradients(digits):
    deep = ("model.depth=10", "model.activation=sigmoid", "init=uniform", "trainer.epochs=1")
    vanishing = _fit(digits, *deep).history[0]
    healthy = _fit(digits, "model.depth=10", "init=kaiming", "norm=batch", "trainer.epochs=1").history[0]

    def ratio(h):
        return h["grad_norm/blocks.0.linear"] / h["grad_norm/head"]

    assert ratio(vanishing) < 1e-3 * ratio(healthy)


def test_scripted_early_stopping_curve():
    curve = [0.50, 0.60, 0.70, 0.69, 0.70, 0.65, 0.90]
    stopper = EarlyStopping(patience=2, min_delta=0.0, monitor="val_acc")
    stopped_at = None
    for epoch, value in enumerate(curve, start=1):
        stopper.update(epoch, {"val_acc": value})
        if stopper.should_stop:
            stopped_at = epoch
            break
    assert (stopped_at, stopper.best_epoch) == (5, 3)  # 0.70 at epoch 5 does not beat 0.70


def test_early_stopping_min_delta_and_val_loss():
    stopper = EarlyStopping(patience=2, min_delta=0.05, monitor="val_loss")
    for epoch, loss in enumerate([1.0, 0.9, 0.88, 0.86, 0.7], start=1):
        stopper.update(epoch, {"val_loss": loss})
        if stopper.should_stop:
            break
    assert (epoch, stopper.best_epoch) == (4, 2)  # 0.88 and 0.86 improve by < 0.05
    never = EarlyStopping(patience=0, min_delta=0.0, monitor="val_acc")
    for epoch in range(1, 50):
        never.update(epoch, {"val_acc": 0.5})
    assert not never.should_stop


def test_early_stopping_stops_and_restores_best_weights(digits):
    result = _fit(digits, "early_stopping.patience=2", "trainer.epochs=60", "optimizer.lr=0.5")
    assert result.stop_reason == "early_stopped"
    val_accs = [h["val_acc"] for h in result.history]
    best = int(result.final["best_epoch"])
    assert result.epochs_run == best + 2 < 60
    assert val_accs[best - 1] == max(val_accs)
    with torch.no_grad():
        restored = (result.model(digits.x_val).argmax(1) == digits.y_val).float().mean().item()
    assert restored == pytest.approx(val_accs[best - 1])
    assert restored > val_accs[-1]


@pytest.mark.parametrize("engine", ["fit", "fit_seeds"])
def test_swa_with_early_stopping_restored_before_swa_began_is_the_network_not_the_initial_weights(
        digits, engine):
    # min_delta 0.5: only epoch 1 improves, so its weights are restored after SWA has begun (epoch 4 on);
    # the averaged copy restored with them holds no average yet, only the weights it was made with
    # (the untrained network): the restored network is the model that counts, as without SWA.
    overrides = ["trainer.epochs=10", "averaging=swa", "averaging.start=0.3", "early_stopping.patience=5",
                 "early_stopping.min_delta=0.5"]
    if engine == "fit":
        result = _fit(digits, *overrides)
    else:
        from ablate.fused import fit_seeds

        (result,) = fit_seeds(compose(["trainer.threads=1", *overrides]), [0], data=digits)
    assert result.stop_reason == "early_stopped" and result.epochs_run == 6
    after_one_epoch = _fit(digits, "trainer.epochs=1")  # the same network at epoch 1, no averaging
    assert result.final["test_acc"] == pytest.approx(after_one_epoch.final["test_acc"])
    assert result.final["test_acc"] > 0.5  # the untrained network scores about 0.1


def test_callback_can_stop_the_run(digits):
    seen = []

    def on_epoch(epoch, metrics):
        seen.append((epoch, metrics["val_acc"]))
        return epoch == 3

    result = _fit(digits, "trainer.epochs=10", on_epoch=on_epoch)
    assert result.stop_reason == "stopped" and result.epochs_run == 3
    assert [e for e, _ in seen] == [1, 2, 3]


def test_train_time_leaves_out_the_callers_time(digits):
    """A sweep's per-epoch reporting is the caller's time: train_time does not count it."""
    import time

    def slow(epoch, metrics):
        time.sleep(0.1)  # what a caller does per epoch (here: nothing but taking time)

    t0 = time.perf_counter()
    result = _fit(digits, "trainer.epochs=3", on_epoch=slow)
    wall = time.perf_counter() - t0
    assert 0 < result.final["train_time"] <= wall - 0.3


def test_nan_loss_ends_as_diverged_without_exception(digits):
    result = _fit(digits, "optimizer.lr=1e4", "init=normal", "data.scaling=none", "trainer.epochs=20")
    assert result.stop_reason == "diverged"
    assert result.epochs_run < 20
    assert not math.isfinite(result.history[-1]["train_loss"])
    assert math.isnan(result.final["test_acc"])
    assert set(STOP_REASONS) == {"completed", "early_stopped", "diverged", "stopped"}


def test_schedule_lr_is_logged_per_epoch(digits):
    result = _fit(digits, "schedule=step", "schedule.step_size=2", "schedule.gamma=0.5", "trainer.epochs=5")
    assert [h["lr"] for h in result.history] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_ensemble_averages_member_probabilities(digits):
    result = _fit(digits, "averaging=ensemble", "averaging.members=3", "trainer.epochs=2")
    model = result.model
    assert isinstance(model, Ensemble) and len(model.members) == 3
    w = [m.blocks[0].linear.weight for m in model.members]
    assert not torch.equal(w[0], w[1])  # independently initialised
    x = digits.x_val[:16]
    with torch.no_grad():
        expected = torch.stack([m(x).softmax(1) for m in model.members]).mean(0)
        assert torch.allclose(model(x).exp(), expected, atol=1e-6)


def test_ema_and_swa_average_weights(digits):
    epochs, n_train, bs = 4, len(digits.y_train), 128
    steps = epochs * math.ceil(n_train / bs) - (1 if n_train % bs == 1 else 0)
    ema = _fit(digits, "averaging=ema", f"trainer.epochs={epochs}").model
    assert isinstance(ema, AveragedModel) and int(ema.n_averaged) == steps
    swa = _fit(digits, "averaging=swa", "averaging.start=0.5", f"trainer.epochs={epochs}").model
    assert isinstance(swa, AveragedModel) and int(swa.n_averaged) == 2  # epochs 3 and 4


def test_weight_decay_and_l1_shrink_weights(digits):
    def norm(result, p):
        return sum(m.weight.norm(p=p).item() for m in result.model.modules() if isinstance(m, nn.Linear))

    base = _fit(digits, "trainer.epochs=10")
    assert norm(_fit(digits, "weight_decay=0.1", "trainer.epochs=10"), 2) < 0.8 * norm(base, 2)
    assert norm(_fit(digits, "l1=0.003", "trainer.epochs=10"), 1) < 0.8 * norm(base, 1)


def test_batch_norm_in_the_trained_model(digits):
    result = _fit(digits, "norm=batch", "trainer.epochs=1")
    bns = [m for m in result.model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 2
    assert all(bn.running_mean.abs().sum() > 0 for bn in bns)


@pytest.mark.parametrize("override", [
    "optimizer=sgd", "optimizer=momentum", "optimizer=nesterov", "optimizer=adagrad", "optimizer=rmsprop",
    "optimizer=adam", "optimizer=adamw", "init=uniform", "init=normal", "init=gaussian", "init=xavier",
    "init=kaiming", "clip=norm", "clip=value", "schedule=exponential", "schedule=cosine", "norm=layer",
    "model=cnn", "model=resnet", "data.scaling=unit", "data.scaling=symmetric", "model.activation=tanh",
    "norm=weight", "model=inception", "optimizer=normalized", "clip=norm clip.threshold=10 clip.to=unit",
])
def test_every_option_trains(digits, override):
    result = _fit(digits, *override.split(), "trainer.epochs=2", "model.width=16")
    assert result.stop_reason == "completed" and result.epochs_run == 2
    assert math.isfinite(result.final["test_loss"])


def test_threads_setting_applies(digits):
    _fit(digits, "trainer.epochs=1", "trainer.threads=1")
    assert torch.get_num_threads() == 1


def test_best_val_acc_and_its_first_epoch(digits):
    """best_val_acc is records.best_value of the history; best_epoch the first epoch reaching it."""
    from ablate.records import best_value

    result = _fit(digits, "optimizer.lr=1e-9", "trainer.epochs=4")  # too small a step to change val_acc
    val_accs = [h["val_acc"] for h in result.history]
    assert val_accs.count(max(val_accs)) > 1  # a tie
    assert result.final["best_val_acc"] == max(val_accs) == best_value(result.history, "val_acc")
    assert result.final["best_epoch"] == val_accs.index(max(val_accs)) + 1


def test_the_digits_defaults_with_inception_reach_90_percent(digits):
    result = _fit(digits, "model=inception")  # 3 blocks of 64 channels with skips, 20 epochs of SGD
    assert result.final["best_val_acc"] >= 0.90, result.history[-1]


def test_weight_norm_diagnostics_read_the_gradients_of_g_and_v(digits):
    result = _fit(digits, "norm=weight", "trainer.epochs=1")
    model = result.model
    grads = {k: v for k, v in result.history[0].items() if k.startswith("grad_norm/")}
    assert set(grads) == {"grad_norm/blocks.0.linear", "grad_norm/blocks.1.linear", "grad_norm/head"}
    assert all(v > 0 and math.isfinite(v) for v in grads.values())
    assert model is not None and any("original0" in n for n, _ in model.named_parameters())


def test_the_normalised_optimizer_trains_the_digits_mlp(digits):
    result = _fit(digits, "optimizer=normalized")  # lr 0.5, conf/optimizer/normalized.yaml
    assert result.final["best_val_acc"] >= 0.9
