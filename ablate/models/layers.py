"""The layers every model is built from: weights, norms, activations, dropout, pooling, the stage plan,
and weight normalisation.

Optional layers that are switched off are *absent* (``None`` here, no ``nn.Identity``), so a model's
``named_modules()`` lists exactly the layers that run.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

__all__ = [
    "WEIGHT_LAYERS",
    "Knobs",
    "activation",
    "apply_weight_norm",
    "classifier",
    "conv",
    "dropout",
    "is_weight_normed",
    "norm_layer",
    "pool",
    "stage_plan",
    "weight_parameters",
]

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""The layer types that carry the network's weights: what init schemes and per-layer diagnostics act on."""

@dataclass(frozen=True)
class Knobs:
    """The architecture-level tricks every model builder takes (checked by ``build_model``)."""

    num_classes: int
    depth: int
    width: int
    activation: str
    norm: str
    dropout: float
    residual: bool


# Not in-place: an in-place ReLU would overwrite the norm layer's output, which forward hooks used for
# per-layer activation statistics may still hold.
_ACTIVATION_TYPES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def activation(name: str) -> nn.Module:
    return _ACTIVATION_TYPES[name]()


def norm_layer(kind: str, dims: int, features: int) -> nn.Module | None:
    """The norm layer for ``features`` channels of a ``dims``-D signal (0 = flat features), or None.

    For conv nets "layer" is ``GroupNorm(1, C)``: it normalises each example over its channels *and*
    positions, which is what layer norm means for a feature map, but unlike ``nn.LayerNorm((C, H, W))``
    it does not fix the spatial size at construction and its affine parameters are per channel (like
    batch norm's), so "batch" vs "layer" differs only in where the statistics come from.

    "weight" adds no layer: it reparametrises the weights themselves (:func:`apply_weight_norm`).
    """
    if kind in ("none", "weight"):
        return None
    if kind == "batch":
        return nn.BatchNorm2d(features) if dims == 2 else nn.BatchNorm1d(features)
    if dims == 0:
        return nn.LayerNorm(features)
    return nn.GroupNorm(1, features)


def conv(dims: int, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Module:
    conv_type = nn.Conv2d if dims == 2 else nn.Conv1d
    return conv_type(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)


def dropout(p: float) -> nn.Module | None:
    # Element-wise dropout in conv nets too (not Dropout2d), so p means the same fraction of zeroed
    # activations in every architecture.
    return nn.Dropout(p) if p > 0 else None


def pool(dims: int) -> nn.Module:
    """Global average pooling over the positions of a ``dims``-D feature map."""
    return nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1)


def classifier(dims: int, blocks: Sequence[nn.Module], channels: int, num_classes: int,
               stem: nn.Module | None = None) -> nn.Module:
    """``[stem], blocks, pool, flatten, head``: a conv net ending in global average pooling and a
    Linear head from the last block's ``channels`` (built last, so it draws its weights last)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if stem is not None:
        layers["stem"] = stem
    layers.update(blocks=nn.Sequential(*blocks), pool=pool(dims), flatten=nn.Flatten(),
                  head=nn.Linear(channels, num_classes))
    return nn.Sequential(layers)


def stage_plan(depth: int, smallest_side: int) -> list[tuple[int, int]]:
    """(stage, stride) for each of ``depth`` blocks split into up to 3 stages.

    Block ``i`` is in stage ``3 * i // depth``, so stages 1 and 2 start at the first block of the 2nd and
    3rd thirds of the depth. A stage start downsamples (stride 2) only while the smallest side is >= 4,
    so small inputs (8x8 digits, length-40 signals) never shrink below 2 whatever the depth.
    """
    plan = []
    size = smallest_side
    previous_stage = 0
    for i in range(depth):
        stage = 3 * i // depth
        stride = 1
        if stage != previous_stage and size >= 4:
            stride = 2
            # kernel 3, padding 1, stride 2 (and the 1x1 projection) give ceil(size / 2).
            size = (size + 1) // 2
        plan.append((stage, stride))
        previous_stage = stage
    return plan


def apply_weight_norm(model: nn.Module) -> nn.Module:
    """Weight normalisation (Salimans & Kingma, 2016) on every Linear / Conv layer of ``model``.

    Each weight becomes ``w = g * v / ||v||``, the norm taken per output unit (over every dimension
    but the first), with ``g`` (shape ``(out, 1, ...)``) and ``v`` (the weight's shape) the trained
    parameters: ``parametrizations.weight.original0`` and ``original1``. At construction ``v`` is the
    layer's weight and ``g = ||v||``, so ``w`` is unchanged; :func:`ablate.init.apply_init` draws
    its schemes into ``v`` and resets ``g`` to ``||v||``, so every init scheme sets the direction
    and the gain starts at the drawn weight's norm (the initial ``w`` equals the unnormalised one).
    """
    for module in model.modules():
        if isinstance(module, WEIGHT_LAYERS) and not is_weight_normed(module):
            weight_norm(module, name="weight", dim=0)
    return model


def is_weight_normed(module: nn.Module) -> bool:
    """True when ``module.weight`` is computed by :func:`apply_weight_norm`'s parametrisation."""
    return parametrize.is_parametrized(module, "weight")


def weight_parameters(module: nn.Module) -> list[torch.Tensor]:
    """The trained tensors behind a layer's weight: ``[weight]``, or ``[g, v]`` under weight norm."""
    if is_weight_normed(module):
        return [module.get_parameter(f"parametrizations.weight.original{i}") for i in (0, 1)]
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return [weight]
