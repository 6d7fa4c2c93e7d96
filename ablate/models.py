"""Model builders (MLP, plain CNN, ResNet) whose tricks can be switched on and off one at a time.

Every trick the framework ablates at the architecture level (normalisation, activation, dropout, skip
connections, depth, width) is a plain keyword argument of :func:`build_model`, so an ablation changes
exactly one argument and nothing else about the network.

Layer order inside every block is ``weights -> norm -> activation -> dropout``. Optional layers that are
switched off are *absent* (not ``nn.Identity``), so ``model.named_modules()`` lists exactly the layers
that run. Names are stable and readable because per-layer diagnostics are keyed by them::

    mlp     flatten, blocks.<i>.{linear,norm,act,drop}, head
    cnn     blocks.<i>.{conv,norm,act,drop,shortcut.conv}, pool, flatten, head
    resnet  stem.{conv,norm,act},
            blocks.<i>.{conv1,norm1,act1,drop,conv2,norm2,shortcut.conv,shortcut.norm,act2},
            pool, flatten, head

Every weight layer keeps ``bias=True``, even in front of a norm layer where the bias is redundant, so
that an init scheme touches the same set of parameters whatever the norm setting.
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from typing import Any, cast

import torch
from torch import nn

from ablate.errors import ConfigError
from ablate.menu import ACTIVATIONS, MODELS, NORMS

__all__ = [
    "ACTIVATIONS",
    "MODELS",
    "NORMS",
    "WEIGHT_LAYERS",
    "BasicBlock",
    "ConvBlock",
    "DenseBlock",
    "build_model",
    "weight_layers",
]


WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
"""The layer types that carry the network's weights: what init schemes and per-layer diagnostics act on."""

# Not in-place: an in-place ReLU would overwrite the norm layer's output, which forward hooks used for
# per-layer activation statistics may still hold.
_ACTIVATION_TYPES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def _one_of(values: tuple[str, ...]) -> str:
    return "one of: " + ", ".join(values)


def _activation(name: str) -> nn.Module:
    return _ACTIVATION_TYPES[name]()


def _norm(kind: str, dims: int, features: int) -> nn.Module | None:
    """The norm layer for ``features`` channels of a ``dims``-D signal (0 = flat features), or None.

    For conv nets "layer" is ``GroupNorm(1, C)``: it normalises each example over its channels *and*
    positions, which is what layer norm means for a feature map, but unlike ``nn.LayerNorm((C, H, W))``
    it does not fix the spatial size at construction and its affine parameters are per channel (like
    batch norm's), so "batch" vs "layer" differs only in where the statistics come from.
    """
    if kind == "none":
        return None
    if kind == "batch":
        return nn.BatchNorm2d(features) if dims == 2 else nn.BatchNorm1d(features)
    if dims == 0:
        return nn.LayerNorm(features)
    return nn.GroupNorm(1, features)


def _conv(dims: int, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Module:
    conv_type = nn.Conv2d if dims == 2 else nn.Conv1d
    return conv_type(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)


def _dropout(p: float) -> nn.Module | None:
    # Element-wise dropout in conv nets too (not Dropout2d), so p means the same fraction of zeroed
    # activations in every architecture.
    return nn.Dropout(p) if p > 0 else None


class DenseBlock(nn.Module):
    """``linear -> norm -> act -> drop``, plus ``x + block(x)`` when residual and widths match.

    Args:
        in_features: Input width.
        out_features: Output width.
        activation: One of :data:`ACTIVATIONS`.
        norm: One of :data:`NORMS`.
        dropout: Dropout probability; no dropout layer when 0.
        residual: Add the input to the output; ignored (no skip) when the widths differ.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: str,
        norm: str,
        dropout: float,
        residual: bool,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.norm = _norm(norm, 0, out_features)
        self.act = _activation(activation)
        self.drop = _dropout(dropout)
        self.residual = residual and in_features == out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` of shape (N, in_features)."""
        out: torch.Tensor = self.linear(x)  # a Module's call is typed Any: the annotation keeps out a Tensor
        if self.norm is not None:
            out = self.norm(out)
        out = self.act(out)
        if self.drop is not None:
            out = self.drop(out)
        return x + out if self.residual else out

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


class ConvBlock(nn.Module):
    """``conv (k=3) -> norm -> act -> drop``, with an optional skip around the whole block.

    The skip is the identity when input and output shapes match and a strided 1x1 conv
    (``shortcut.conv``) when channels or length/size change.

    Args:
        dims: 1 for signals (N, C, L), 2 for images (N, C, H, W).
        in_channels: Input channels.
        out_channels: Output channels.
        stride: 1, or 2 to halve the spatial size.
        activation: One of :data:`ACTIVATIONS`.
        norm: One of :data:`NORMS`.
        dropout: Dropout probability; no dropout layer when 0.
        residual: Add the (projected) input to the output.
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        activation: str,
        norm: str,
        dropout: float,
        residual: bool,
    ) -> None:
        super().__init__()
        self.conv = _conv(dims, in_channels, out_channels, 3, stride)
        self.norm = _norm(norm, dims, out_channels)
        self.act = _activation(activation)
        self.drop = _dropout(dropout)
        self.residual = residual
        self.shortcut: nn.Module | None = None
        if residual and (stride != 1 or in_channels != out_channels):
            # A plain 1x1 conv, as asked of this "cnn + skips" variant; the resnet's projection also
            # normalises because its main branch ends in a norm layer.
            self.shortcut = nn.Sequential(OrderedDict(conv=_conv(dims, in_channels, out_channels, 1, stride)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` of shape (N, C, L) or (N, C, H, W)."""
        out: torch.Tensor = self.conv(x)
        if self.norm is not None:
            out = self.norm(out)
        out = self.act(out)
        if self.drop is not None:
            out = self.drop(out)
        if not self.residual:
            return out
        return out + (x if self.shortcut is None else self.shortcut(x))

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


class BasicBlock(nn.Module):
    """ResNet basic block: ``conv1-norm1-act1-drop-conv2-norm2 (+ shortcut) -> act2``.

    Args:
        dims: 1 for signals (N, C, L), 2 for images (N, C, H, W).
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of ``conv1`` (and of the projection): 1, or 2 to halve the spatial size.
        activation: One of :data:`ACTIVATIONS`.
        norm: One of :data:`NORMS`.
        dropout: Dropout probability between the two convs; no dropout layer when 0.
        residual: Keep the shortcut. False gives the same block without any skip (a plain net), so
            skips can be ablated at equal depth.
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        *,
        stride: int,
        activation: str,
        norm: str,
        dropout: float,
        residual: bool,
    ) -> None:
        super().__init__()
        self.conv1 = _conv(dims, in_channels, out_channels, 3, stride)
        self.norm1 = _norm(norm, dims, out_channels)
        self.act1 = _activation(activation)
        self.drop = _dropout(dropout)
        self.conv2 = _conv(dims, out_channels, out_channels, 3)
        self.norm2 = _norm(norm, dims, out_channels)
        self.residual = residual
        self.shortcut: nn.Module | None = None
        if residual and (stride != 1 or in_channels != out_channels):
            layers: OrderedDict[str, nn.Module] = OrderedDict(
                conv=_conv(dims, in_channels, out_channels, 1, stride)
            )
            projection_norm = _norm(norm, dims, out_channels)
            if projection_norm is not None:
                # Normalised like the main branch so neither side of the sum dominates at init.
                layers["norm"] = projection_norm
            self.shortcut = nn.Sequential(layers)
        self.act2 = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` of shape (N, C, L) or (N, C, H, W)."""
        out: torch.Tensor = self.conv1(x)
        if self.norm1 is not None:
            out = self.norm1(out)
        out = self.act1(out)
        if self.drop is not None:
            out = self.drop(out)
        out = self.conv2(out)
        if self.norm2 is not None:
            out = self.norm2(out)
        if self.residual:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        out = self.act2(out)
        return out

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


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
            f"mlp for flat inputs of shape {shape}; cnn and resnet need 1-D signals (C, L) "
            "or images (C, H, W)",
        )


def _stage_plan(depth: int, smallest_side: int) -> list[tuple[int, int]]:
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


def _mlp(
    features: int,
    num_classes: int,
    depth: int,
    width: int,
    activation: str,
    norm: str,
    dropout: float,
    residual: bool,
) -> nn.Module:
    blocks = [
        DenseBlock(
            features if i == 0 else width,
            width,
            activation=activation,
            norm=norm,
            dropout=dropout,
            residual=residual,
        )
        for i in range(depth)
    ]
    return nn.Sequential(
        OrderedDict(flatten=nn.Flatten(), blocks=nn.Sequential(*blocks), head=nn.Linear(width, num_classes))
    )


def _pool(dims: int) -> nn.Module:
    return nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1)


def _cnn(
    shape: tuple[int, ...],
    num_classes: int,
    depth: int,
    width: int,
    activation: str,
    norm: str,
    dropout: float,
    residual: bool,
) -> nn.Module:
    dims = len(shape) - 1
    blocks = []
    channels = shape[0]
    for _, stride in _stage_plan(depth, min(shape[1:])):
        blocks.append(
            ConvBlock(
                dims,
                channels,
                width,
                stride=stride,
                activation=activation,
                norm=norm,
                dropout=dropout,
                residual=residual,
            )
        )
        channels = width
    return nn.Sequential(
        OrderedDict(
            blocks=nn.Sequential(*blocks),
            pool=_pool(dims),
            flatten=nn.Flatten(),
            head=nn.Linear(width, num_classes),
        )
    )


def _resnet(
    shape: tuple[int, ...],
    num_classes: int,
    depth: int,
    width: int,
    activation: str,
    norm: str,
    dropout: float,
    residual: bool,
) -> nn.Module:
    dims = len(shape) - 1
    stem: OrderedDict[str, nn.Module] = OrderedDict(conv=_conv(dims, shape[0], width, 3))
    stem_norm = _norm(norm, dims, width)
    if stem_norm is not None:
        stem["norm"] = stem_norm
    stem["act"] = _activation(activation)
    blocks = []
    channels = width
    for stage, stride in _stage_plan(depth, min(shape[1:])):
        # Channels double at every stage start, even where the input is too small to downsample.
        out_channels = width * 2**stage
        blocks.append(
            BasicBlock(
                dims,
                channels,
                out_channels,
                stride=stride,
                activation=activation,
                norm=norm,
                dropout=dropout,
                residual=residual,
            )
        )
        channels = out_channels
    return nn.Sequential(
        OrderedDict(
            stem=nn.Sequential(stem),
            blocks=nn.Sequential(*blocks),
            pool=_pool(dims),
            flatten=nn.Flatten(),
            head=nn.Linear(channels, num_classes),
        )
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

    Norms: "batch" is BatchNorm1d/2d; "layer" is LayerNorm(width) in the mlp and GroupNorm(1, C) in conv
    nets (layer norm over channels and positions, independent of the input's spatial size).

    Args:
        name: One of :data:`MODELS`.
        input_shape: Shape of one example: (F,) features, (C, L) signals or (C, H, W) images. The mlp
            flattens any of them; cnn and resnet need (C, L) or (C, H, W).
        num_classes: Number of output logits.
        depth: Number of hidden blocks (mlp, cnn) or basic blocks (resnet), >= 1.
        width: Units per hidden layer (mlp), channels (cnn), first-stage channels (resnet), >= 1.
        activation: One of :data:`ACTIVATIONS`.
        norm: One of :data:`NORMS`.
        dropout: Probability p, 0 <= p < 1, of zeroing an activation after each block's activation;
            no dropout layer at all when 0.
        residual: Use skip connections (see above).

    Returns:
        A module mapping a batch of shape (N, *input_shape) to logits of shape (N, num_classes).

    Raises:
        ConfigError: An unknown name, activation or norm; depth or width < 1; dropout outside [0, 1);
            cnn or resnet asked for flat (F,) inputs (field ``model.name``).
        ValueError: ``input_shape`` or ``num_classes`` is malformed (they come from the dataset).
    """
    _validate(name, input_shape, num_classes, depth, width, activation, norm, dropout)
    shape = tuple(int(s) for s in input_shape)
    args = (num_classes, int(depth), int(width), activation, norm, float(dropout), bool(residual))
    if name == "mlp":
        return _mlp(math.prod(shape), *args)
    if name == "cnn":
        return _cnn(shape, *args)
    return _resnet(shape, *args)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's Linear/Conv layers with their ``named_modules()`` names, in registration order.

    Args:
        model: Any module, typically one from :func:`build_model`.

    Returns:
        ``(name, layer)`` pairs for every instance of :data:`WEIGHT_LAYERS`; the first is the input
        layer and (for models from :func:`build_model`) the last is ``head``.
    """
    return [(name, module) for name, module in model.named_modules() if isinstance(module, WEIGHT_LAYERS)]
