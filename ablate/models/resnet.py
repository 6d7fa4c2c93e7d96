"""The ResNet: a stem, ``depth`` basic blocks in up to 3 stages, global average pooling, a linear head."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ablate.models.layers import Knobs, classifier, conv, norm_layer, stage_plan
from ablate.models.layers import activation as make_activation
from ablate.models.layers import dropout as make_dropout

__all__ = ["BasicBlock", "resnet_net", "stem"]


class BasicBlock(nn.Module):
    """ResNet basic block: ``conv1-norm1-act1-drop-conv2-norm2 (+ shortcut) -> act2``.

    Args:
        dims: 1 for signals (N, C, L), 2 for images (N, C, H, W).
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of ``conv1`` (and of the projection): 1, or 2 to halve the spatial size.
        activation: One of :data:`ablate.menu.ACTIVATIONS`.
        norm: One of :data:`ablate.menu.NORMS`.
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
        self.conv1 = conv(dims, in_channels, out_channels, 3, stride)
        self.norm1 = norm_layer(norm, dims, out_channels)
        self.act1 = make_activation(activation)
        self.drop = make_dropout(dropout)
        self.conv2 = conv(dims, out_channels, out_channels, 3)
        self.norm2 = norm_layer(norm, dims, out_channels)
        self.residual = residual
        self.shortcut: nn.Module | None = None
        if residual and (stride != 1 or in_channels != out_channels):
            layers: OrderedDict[str, nn.Module] = OrderedDict(
                conv=conv(dims, in_channels, out_channels, 1, stride)
            )
            projection_norm = norm_layer(norm, dims, out_channels)
            if projection_norm is not None:
                # Normalised like the main branch so neither side of the sum dominates at init.
                layers["norm"] = projection_norm
            self.shortcut = nn.Sequential(layers)
        self.act2 = make_activation(activation)

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


def stem(dims: int, in_channels: int, width: int, activation: str, norm: str) -> nn.Module:
    """``conv (k=3, in_channels -> width) -> norm -> act``: lifts the input to the blocks' width."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(conv=conv(dims, in_channels, width, 3))
    stem_norm = norm_layer(norm, dims, width)
    if stem_norm is not None:
        layers["norm"] = stem_norm
    layers["act"] = make_activation(activation)
    return nn.Sequential(layers)


def resnet_net(shape: tuple[int, ...], knobs: Knobs) -> nn.Module:
    """Stem, ``depth`` basic blocks (width, 2*width, 4*width channels by stage), pooling, linear head."""
    num_classes, depth, width = knobs.num_classes, knobs.depth, knobs.width
    activation, norm, dropout, residual = knobs.activation, knobs.norm, knobs.dropout, knobs.residual
    dims = len(shape) - 1
    first = stem(dims, shape[0], width, activation, norm)  # built first: its weights are drawn first
    blocks = []
    channels = width
    for stage, stride in stage_plan(depth, min(shape[1:])):
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
    return classifier(dims, blocks, channels, num_classes, stem=first)
