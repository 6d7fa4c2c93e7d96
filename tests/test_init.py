"""Tests for ablate.init: each scheme draws from the distribution its docstring states."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ablate.errors import ConfigError
from ablate.init import INITS, apply_init, fans
from ablate.models import build_model, weight_layers

torch.set_num_threads(1)

# Large enough that the empirical std is within ~0.3% of the true one, so a 3% tolerance never flakes.
LAYERS = {
    "linear": lambda: nn.Linear(512, 512),
    "conv2d": lambda: nn.Conv2d(64, 128, 3),
    "conv1d": lambda: nn.Conv1d(128, 96, 5),
}
GAINS = {"relu": math.sqrt(2.0), "tanh": 5.0 / 3.0, "sigmoid": 1.0}
BOUND = 0.05


def expected_std(scheme: str, weight: torch.Tensor, activation: str) -> float:
    n_in, n_out = fans(weight)
    return {
        "default": 1.0 / math.sqrt(3.0 * n_in),
        "uniform": BOUND / math.sqrt(3.0),
        "normal": 1.0,
        "gaussian": 1.0 / math.sqrt(n_in),
        "xavier": math.sqrt(2.0 / (n_in + n_out)),
        "kaiming": GAINS[activation] / math.sqrt(n_in),
    }[scheme]


def test_fans_of_linear_and_conv_weights() -> None:
    assert fans(nn.Linear(30, 20).weight) == (30, 20)
    assert fans(nn.Conv1d(16, 32, 5).weight) == (80, 160)
    assert fans(nn.Conv2d(64, 128, 3).weight) == (576, 1152)


@pytest.mark.parametrize("layer_kind", sorted(LAYERS))
@pytest.mark.parametrize(
    ("scheme", "activation"),
    [(s, "relu") for s in INITS if s != "kaiming"] + [("kaiming", a) for a in GAINS],
)
def test_weight_std_matches_formula(scheme: str, activation: str, layer_kind: str) -> None:
    torch.manual_seed(0)
    layer = LAYERS[layer_kind]()
    apply_init(layer, scheme, activation=activation, bound=BOUND)
    weight = layer.weight.detach()
    std = expected_std(scheme, weight, activation)
    assert weight.std().item() == pytest.approx(std, rel=0.03)
    assert abs(weight.mean().item()) < 0.02 * std
    if scheme == "uniform":
        assert weight.abs().max().item() <= BOUND
    if scheme != "default":
        assert torch.count_nonzero(layer.bias) == 0


def test_default_leaves_pytorch_init_untouched() -> None:
    torch.manual_seed(3)
    fresh = nn.Conv2d(8, 16, 3)
    torch.manual_seed(3)
    layer = nn.Conv2d(8, 16, 3)
    apply_init(layer, "default")
    assert torch.equal(layer.weight, fresh.weight)
    assert torch.equal(layer.bias, fresh.bias)
    assert torch.count_nonzero(layer.bias) > 0


def test_default_does_not_consume_randomness() -> None:
    layer = nn.Linear(16, 16)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    apply_init(layer, "default")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("scheme", [s for s in INITS if s != "default"])
def test_every_weight_layer_of_a_model_is_reinitialised(scheme: str) -> None:
    torch.manual_seed(0)
    model = build_model(
        "resnet", input_shape=(3, 8, 8), num_classes=5, depth=3, width=4, norm="batch", residual=True
    )
    before = {name: layer.weight.detach().clone() for name, layer in weight_layers(model)}
    assert any(name.endswith("shortcut.conv") for name in before)
    apply_init(model, scheme)
    for name, layer in weight_layers(model):
        assert not torch.equal(layer.weight, before[name]), name
        assert torch.count_nonzero(layer.bias) == 0, name


@pytest.mark.parametrize("scheme", INITS)
@pytest.mark.parametrize(("name", "norm"), [("resnet", "batch"), ("cnn", "layer"), ("mlp", "layer")])
def test_norm_layers_untouched(scheme: str, name: str, norm: str) -> None:
    torch.manual_seed(0)
    shape = (24,) if name == "mlp" else (2, 8, 8)
    model = build_model(name, input_shape=shape, num_classes=3, depth=3, width=6, norm=norm, residual=True)
    model(torch.randn(4, *shape))  # moves batch-norm running statistics away from their initial values
    norm_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
    norms = [m for m in model.modules() if isinstance(m, norm_types)]
    assert norms
    with torch.no_grad():
        for m in norms:
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    apply_init(model, scheme)
    for m, state in zip(norms, before, strict=True):
        for key, value in m.state_dict().items():
            assert torch.equal(value, state[key]), (m, key)


@pytest.mark.parametrize("scheme", INITS)
def test_same_seed_gives_identical_weights(scheme: str) -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        model = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, depth=3, width=8, residual=True)
        apply_init(model, scheme, activation="tanh")
        return [p.detach().clone() for p in model.parameters()]

    first, again, other = weights(7), weights(7), weights(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"scheme": "he"}, "init.name"),
        ({"scheme": "Kaiming"}, "init.name"),
        ({"scheme": None}, "init.name"),
        ({"bound": 0.0}, "init.bound"),
        ({"bound": -0.1}, "init.bound"),
        ({"bound": float("nan")}, "init.bound"),
        ({"bound": float("inf")}, "init.bound"),
        ({"bound": "0.1"}, "init.bound"),
        ({"activation": "gelu"}, "model.activation"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict, field: str) -> None:
    layer = nn.Linear(4, 4)
    before = layer.weight.detach().clone()
    arguments = {"scheme": "uniform", **kwargs}
    with pytest.raises(ConfigError) as excinfo:
        apply_init(layer, arguments.pop("scheme"), **arguments)
    assert excinfo.value.field == field
    assert str(excinfo.value).startswith(f"{field}: ")
    assert torch.equal(layer.weight, before)


def test_unknown_scheme_message_lists_the_schemes() -> None:
    with pytest.raises(
        ConfigError, match="expected one of: default, uniform, normal, gaussian, xavier, kaiming"
    ):
        apply_init(nn.Linear(2, 2), "orthogonal")


@pytest.mark.parametrize("scheme", INITS)
@pytest.mark.parametrize("name", ["mlp", "cnn", "inception"])
def test_under_weight_norm_a_scheme_draws_the_direction_and_the_gain_is_its_norm(scheme: str,
                                                                                  name: str) -> None:
    """``w = g v / ||v||`` starts as the very weight the scheme draws without weight norm."""
    shape = (24,) if name == "mlp" else (1, 8, 8)

    def built(norm: str) -> nn.Module:
        torch.manual_seed(3)
        model = build_model(name, input_shape=shape, num_classes=3, depth=2, width=8, norm=norm)
        apply_init(model, scheme, activation="relu")
        return model

    plain, normed = built("none"), built("weight")
    for (layer_name, a), (_, b) in zip(weight_layers(plain), weight_layers(normed), strict=True):
        g, v = b.parametrizations.weight.original0, b.parametrizations.weight.original1
        torch.testing.assert_close(v, a.weight, msg=layer_name)  # the scheme's draw, into v
        torch.testing.assert_close(g, v.flatten(1).norm(dim=1).view_as(g), msg=layer_name)
        torch.testing.assert_close(b.weight, a.weight, msg=layer_name)
        torch.testing.assert_close(b.bias, a.bias, msg=layer_name)
