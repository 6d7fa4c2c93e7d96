"""Model builders (MLP, plain CNN, ResNet, Inception) whose tricks can be switched on and off one at a time.

Every trick the framework ablates at the architecture level (normalisation, activation, dropout, skip
connections, depth, width) is a plain keyword argument of :func:`build_model`, so an ablation changes
exactly one argument and nothing else about the network.

Layer order inside every block is ``weights -> norm -> activation -> dropout``. Optional layers that are
switched off are *absent* (not ``nn.Identity``), so ``model.named_modules()`` lists exactly the layers
that run. Names are stable and readable because per-layer diagnostics are keyed by them::

    mlp        flatten, blocks.<i>.{linear,norm,act,drop}, head
    cnn        blocks.<i>.{conv,norm,act,drop,shortcut.conv}, pool, flatten, head
    resnet     stem.{conv,norm,act},
               blocks.<i>.{conv1,norm1,act1,drop,conv2,norm2,shortcut.conv,shortcut.norm,act2},
               pool, flatten, head
    inception  stem.{conv,norm,act},
               blocks.<i>.{downsample, branch1.{conv,norm,act},
                           branch3.{conv_reduce,norm_reduce,act_reduce,conv,norm,act},
                           branch5.{conv_reduce,...,conv1,norm1,act1,conv2,norm2,act2},
                           branch_pool.{pool,conv,norm,act}, drop},
               pool, flatten, head

Every weight layer keeps ``bias=True``, even in front of a norm layer where the bias is redundant, so
that an init scheme touches the same set of parameters whatever the norm setting.

One module per architecture (:mod:`.mlp`, :mod:`.cnn`, :mod:`.resnet`, :mod:`.inception`); the layers
they share, weight normalisation among them, are in :mod:`.layers`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, cast

from torch import nn

from ablate.errors import ConfigError
from ablate.menu import ACTIVATIONS, MODELS, NORMS
from ablate.models.cnn import ConvBlock, cnn_net
from ablate.models.inception import MIN_WIDTH, InceptionBlock, inception_net
from ablate.models.layers import WEIGHT_LAYERS, Knobs, apply_weight_norm, is_weight_normed, weight_parameters
from ablate.models.mlp import DenseBlock, mlp_net
from ablate.models.resnet import BasicBlock, resnet_net

__all__ = [
    "ACTIVATIONS",
    "MODELS",
    "NORMS",
    "WEIGHT_LAYERS",
    "BasicBlock",
    "ConvBlock",
    "DenseBlock",
    "InceptionBlock",
    "apply_weight_norm",
    "build_model",
    "is_weight_normed",
    "weight_layers",
    "weight_parameters",
]

_BUILDERS = {"cnn": cnn_net, "resnet": resnet_net, "inception": inception_net}


def _one_of(values: tuple[str, ...]) -> str:
    return "one of: " + ", ".join(values)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _validate(
    name: Any,
    input_shape: Any,
    num_classes: Any,
    depth: Any,
    width: Any,
    activation: Any,
    norm: Any,
    dropout: Any,
) -> None:
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError("model.name", name, _one_of(MODELS))
    if not _is_int(depth) or depth < 1:
        raise ConfigError("model.depth", depth, "an integer >= 1")
    if not _is_int(width) or width < 1:
        raise ConfigError("model.width", width, "an integer >= 1")
    if name == "inception" and width < MIN_WIDTH:
        raise ConfigError("model.width", width, f"an integer >= {MIN_WIDTH} for inception (one channel "
                          "per branch)")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ConfigError("model.activation", activation, _one_of(ACTIVATIONS))
    if not isinstance(norm, str) or norm not in NORMS:
        raise ConfigError("norm", norm, _one_of(NORMS))
    # The chained comparison is False for NaN, so NaN is rejected too.
    # (typeshed's numbers.Real has no __ge__ for mypy; any Real compares with ints at run time.)
    if (not isinstance(dropout, numbers.Real) or isinstance(dropout, bool)
            or not 0 <= cast(float, dropout) < 1):
        raise ConfigError("dropout", dropout, "a number p with 0 <= p < 1")
    # input_shape and num_classes come from the dataset, not from the user's config, so a bad value is a
    # bug in the caller: a plain ValueError, not a ConfigError.
    shape = tuple(input_shape)
    if not 1 <= len(shape) <= 3 or not all(_is_int(s) and s >= 1 for s in shape):
        raise ValueError(
            f"input_shape must be (F,), (C, L) or (C, H, W) of positive ints, got {input_shape!r}"
        )
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if name != "mlp" and len(shape) == 1:
        raise ConfigError(
            "model.name",
            name,
            f"mlp for flat inputs of shape {shape}; cnn, resnet and inception need 1-D signals (C, L) "
            "or images (C, H, W)",
        )


def build_model(
    name: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int,
    width: int,
    activation: str = "relu",
    norm: str = "none",
    dropout: float = 0.0,
    residual: bool = False,
) -> nn.Module:
    """Build a classifier whose architectural tricks are set one keyword at a time.

    - ``mlp``: flatten, ``depth`` blocks ``Linear(width) -> norm -> act -> dropout``, Linear head.
      ``residual`` gives every block whose input and output widths match (all but the first) ``x + block(x)``.
    - ``cnn``: ``depth`` blocks ``Conv(k=3, width channels) -> norm -> act -> dropout`` (Conv1d for (C, L),
      Conv2d for (C, H, W)), stride 2 at the first block of the 2nd and 3rd thirds of the depth while the
      smallest side is >= 4, global average pooling, Linear head. ``residual`` adds identity skips where
      shapes match and a strided 1x1 conv projection where they don't (always at block 0 unless
      C == width).
    - ``resnet``: stem ``Conv(C->width) -> norm -> act``, then ``depth`` basic blocks in up to 3 stages
      (width, 2*width, 4*width channels; stride 2 at stage starts under the same rule as cnn), global
      average pooling, Linear head. Projection shortcuts (1x1 conv + norm) where shapes change.
      ``residual=False`` (the default!) drops every shortcut: pass ``residual=True`` for a real ResNet.
    - ``inception``: the resnet's stem, then ``depth`` Inception blocks of ``width`` channels (four
      parallel branches 1x1 / 1x1->3x3 / 1x1->3x3->3x3 / maxpool->1x1 concatenated, see
      :mod:`ablate.models.inception`), a stride-2 max-pool before the block at stage starts under the
      same rule as cnn, global average pooling, Linear head. ``residual`` adds each block's input.

    Norms: "batch" is BatchNorm1d/2d; "layer" is LayerNorm(width) in the mlp and GroupNorm(1, C) in conv
    nets (layer norm over channels and positions, independent of the input's spatial size); "weight"
    adds no layer and reparametrises every Linear / Conv weight as ``w = g * v / ||v||``
    (:func:`ablate.models.layers.apply_weight_norm`).

    Args:
        name: One of :data:`MODELS`.
        input_shape: Shape of one example: (F,) features, (C, L) signals or (C, H, W) images. The mlp
            flattens any of them; cnn, resnet and inception need (C, L) or (C, H, W).
        num_classes: Number of output logits.
        depth: Number of hidden blocks (mlp, cnn), basic blocks (resnet) or Inception blocks, >= 1.
        width: Units per hidden layer (mlp), channels (cnn), first-stage channels (resnet), >= 1;
            the channels of every block (inception), >= 4.
        activation: One of :data:`ACTIVATIONS`.
        norm: One of :data:`NORMS`.
        dropout: Probability p, 0 <= p < 1, of zeroing an activation after each block's activation;
            no dropout layer at all when 0.
        residual: Use skip connections (see above).

    Returns:
        A module mapping a batch of shape (N, *input_shape) to logits of shape (N, num_classes).

    Raises:
        ConfigError: An unknown name, activation or norm; depth or width < 1 (< 4 for inception);
            dropout outside [0, 1); a conv net asked for flat (F,) inputs (field ``model.name``).
        ValueError: ``input_shape`` or ``num_classes`` is malformed (they come from the dataset).
    """
    _validate(name, input_shape, num_classes, depth, width, activation, norm, dropout)
    shape = tuple(int(s) for s in input_shape)
    knobs = Knobs(num_classes, int(depth), int(width), activation, norm, float(dropout), bool(residual))
    model = mlp_net(math.prod(shape), knobs) if name == "mlp" else _BUILDERS[name](shape, knobs)
    return apply_weight_norm(model) if norm == "weight" else model


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's Linear/Conv layers with their ``named_modules()`` names, in registration order.

    Args:
        model: Any module, typically one from :func:`build_model`.

    Returns:
        ``(name, layer)`` pairs for every instance of :data:`WEIGHT_LAYERS`; the first is the input
        layer and (for models from :func:`build_model`) the last is ``head``.
    """
    return [(name, module) for name, module in model.named_modules() if isinstance(module, WEIGHT_LAYERS)]
