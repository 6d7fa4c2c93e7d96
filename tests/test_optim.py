from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from ablate.errors import ConfigError
from ablate.optim import (
    OPTIMIZERS,
    SCHEDULES,
    NormalizedGD,
    build_optimizer,
    build_schedule,
    clip_gradients,
    decay_groups,
    l1_penalty,
)

torch.set_num_threads(1)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 20), nn.BatchNorm1d(20), nn.ReLU(), nn.Linear(20, 3))


def test_decay_groups_split_by_shape():
    decayed, other = decay_groups(_net())
    assert [tuple(p.shape) for p in decayed] == [(20, 10), (3, 20)]
    assert sorted(tuple(p.shape) for p in other) == [(3,), (20,), (20,), (20,)]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_reduces_a_convex_loss(name):
    torch.manual_seed(0)
    model = nn.Linear(5, 1)
    x = torch.randn(64, 5)
    y = x @ torch.arange(1.0, 6.0).unsqueeze(1)
    # normalized moves exactly lr per step: 100 steps of 0.1 cover the distance to the optimum (~7.4)
    lr = {"adagrad": 0.5, "rmsprop": 0.05, "adam": 0.05, "adamw": 0.05, "normalized": 0.1}.get(name, 0.02)
    opt = build_optimizer(model, name, lr=lr)
    first = None
    for _ in range(100):
        loss = ((model(x) - y) ** 2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_optimizer_family_settings():
    model = _net()
    assert build_optimizer(model, "sgd", lr=0.1).param_groups[0]["momentum"] == 0.0
    mom = build_optimizer(model, "momentum", lr=0.1).param_groups[0]
    assert mom["momentum"] == 0.9 and not mom["nesterov"]
    assert build_optimizer(model, "nesterov", lr=0.1).param_groups[0]["nesterov"]
    assert isinstance(build_optimizer(model, "adamw", lr=0.1), torch.optim.AdamW)
    assert build_optimizer(model, "adam", lr=0.1, beta1=0.8).param_groups[0]["betas"] == (0.8, 0.999)


def test_weight_decay_only_on_matrices():
    opt = build_optimizer(_net(), "sgd", lr=0.1, weight_decay=0.01)
    decayed, other = opt.param_groups
    assert decayed["weight_decay"] == 0.01 and all(p.ndim >= 2 for p in decayed["params"])
    assert other["weight_decay"] == 0.0 and all(p.ndim == 1 for p in other["params"])


def test_weight_decay_shrinks_weights_against_none():
    norms = {}
    for wd in (0.0, 0.1):
        torch.manual_seed(0)
        model = nn.Linear(20, 2)
        x, y = torch.randn(128, 20), torch.randint(0, 2, (128,))
        opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=wd)
        for _ in range(200):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        norms[wd] = model.weight.norm().item()
    assert norms[0.1] < 0.7 * norms[0.0]


def test_l1_penalty_value_and_sparsity():
    w = [nn.Parameter(torch.tensor([[1.0, -2.0]])), nn.Parameter(torch.tensor([[3.0]]))]
    assert l1_penalty(w, 0.5).item() == pytest.approx(3.0)


def _lrs(name: str, epochs: int = 6, **options) -> list[float]:
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, "sgd", lr=1.0)
    sched = build_schedule(opt, name, epochs=epochs, **options)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_give_the_stated_lr_per_epoch():
    assert _lrs("constant") == [1.0] * 6
    assert _lrs("exponential") == pytest.approx([0.98**e for e in range(6)])
    assert _lrs("exponential", gamma=0.5) == pytest.approx([0.5**e for e in range(6)])
    assert _lrs("step", step_size=2, gamma=0.1) == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = _lrs("cosine", epochs=5, min_lr=0.2)
    expected = [0.2 + 0.8 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    assert cosine == pytest.approx(expected)
    assert cosine[0] == pytest.approx(1.0) and cosine[-1] == pytest.approx(0.2)


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_is_non_increasing(name):
    lrs = _lrs(name, epochs=12)
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(lrs))


def _big_grads() -> list[nn.Parameter]:
    ps = [nn.Parameter(torch.zeros(3, 4)), nn.Parameter(torch.zeros(5))]
    ps[0].grad = torch.full((3, 4), 10.0)
    ps[1].grad = torch.full((5,), -7.0)
    return ps


def test_norm_clipping_bounds_the_global_gradient_norm():
    ps = _big_grads()
    clip_gradients(ps, "norm", threshold=1.0)
    total = torch.cat([p.grad.flatten() for p in ps]).norm().item()
    assert total == pytest.approx(1.0, rel=1e-4)
    # direction kept: the ratio between the two tensors' entries is unchanged
    assert ps[0].grad[0, 0].item() / ps[1].grad[0].item() == pytest.approx(10 / -7)


def test_value_clipping_bounds_every_element():
    ps = _big_grads()
    clip_gradients(ps, "value", threshold=0.5)
    assert all(p.grad.abs().max().item() == pytest.approx(0.5) for p in ps)


def test_clip_none_and_small_gradients_untouched():
    ps = _big_grads()
    clip_gradients(ps, "none")
    assert ps[0].grad[0, 0].item() == 10.0
    clip_gradients(ps, "norm", threshold=1e6)
    assert ps[0].grad[0, 0].item() == pytest.approx(10.0)


@pytest.mark.parametrize("call", [
    lambda m: build_optimizer(m, "lbfgs", lr=0.1),
    lambda m: build_schedule(build_optimizer(m, "sgd", lr=0.1), "linear", epochs=3),
    lambda m: clip_gradients(m.parameters(), "max"),
])
def test_unknown_names_raise_config_error(call):
    with pytest.raises(ConfigError) as err:
        call(_net())
    assert "\n" not in str(err.value) and "one of:" in str(err.value)


# ---------------------------------------------------------------- the normalised step and clip.to=unit


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().flatten() for t in tensors])


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_the_normalised_step_moves_all_parameters_by_exactly_lr_in_global_norm(weight_decay, scale):
    model = _net()  # two groups under weight decay: one global norm over both
    x = torch.randn(16, 10)
    opt = build_optimizer(model, "normalized", lr=0.03, weight_decay=weight_decay)
    assert isinstance(opt, NormalizedGD) and len(opt.param_groups) == (2 if weight_decay else 1)
    before = _flat(model.parameters())
    (scale * model(x).square().mean()).backward()
    grads = _flat(p.grad + (weight_decay * p if p.ndim >= 2 else 0) for p in model.parameters())
    opt.step()
    moved = _flat(model.parameters()) - before
    assert moved.norm().item() == pytest.approx(0.03, rel=1e-4)
    # along the (decayed) gradient's direction, whatever its size
    torch.testing.assert_close(moved, -0.03 * grads / grads.norm(), rtol=1e-3, atol=1e-6)  # float32 w - step


def test_the_normalised_step_with_momentum_accumulates_unit_directions():
    p = nn.Parameter(torch.zeros(2))
    opt = NormalizedGD([p], lr=0.1, momentum=0.5)
    for grad in ([3.0, 4.0], [30.0, 40.0]):
        p.grad = torch.tensor(grad)
        opt.step()
    # b1 = (0.6, 0.8); b2 = 0.5 * b1 + (0.6, 0.8) = 1.5 * (0.6, 0.8); w = -0.1 * (b1 + b2)
    torch.testing.assert_close(p.detach(), -0.1 * 2.5 * torch.tensor([0.6, 0.8]))


def test_the_normalised_step_skips_a_zero_gradient():
    p = nn.Parameter(torch.ones(3))
    p.grad = torch.zeros(3)
    NormalizedGD([p], lr=0.1).step()
    assert torch.equal(p.detach(), torch.ones(3))


def test_clip_to_unit_divides_by_the_norm_above_the_threshold_only():
    ps = _big_grads()  # global norm sqrt(12 * 100 + 5 * 49) ~ 38
    clip_gradients(ps, "norm", threshold=10.0, to="unit")
    assert _flat(p.grad for p in ps).norm().item() == pytest.approx(1.0, rel=1e-5)
    assert ps[0].grad[0, 0].item() / ps[1].grad[0].item() == pytest.approx(10 / -7)
    small = _big_grads()
    clip_gradients(small, "norm", threshold=100.0, to="unit")  # norm ~ 38 <= 100: unchanged
    assert torch.equal(small[0].grad, torch.full((3, 4), 10.0))
    assert torch.equal(small[1].grad, torch.full((5,), -7.0))


def test_clip_to_threshold_and_unit_agree_at_threshold_one():
    a, b = _big_grads(), _big_grads()
    clip_gradients(a, "norm", threshold=1.0, to="threshold")
    clip_gradients(b, "norm", threshold=1.0, to="unit")
    torch.testing.assert_close(_flat(p.grad for p in a), _flat(p.grad for p in b))


def test_clip_to_must_be_threshold_or_unit():
    expected = r"^clip.to: 'half' is not allowed; expected one of: threshold, unit$"
    with pytest.raises(ConfigError, match=expected):
        clip_gradients(_big_grads(), "norm", threshold=1.0, to="half")


def test_weight_norm_gains_are_not_decayed():
    from ablate.models import build_model
    model = build_model("mlp", input_shape=(10,), num_classes=3, depth=1, width=4, norm="weight")
    decayed, other = decay_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decayed) == ["blocks.0.linear.parametrizations.weight.original1",
                                                     "head.parametrizations.weight.original1"]
    assert all(names[id(p)].endswith(("bias", "original0")) for p in other)
