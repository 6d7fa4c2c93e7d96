"""The plain convolutional net: ``depth`` conv blocks, global average pooling, a linear head."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ablate.models.layers import Knobs, classifier, conv, norm_layer, stage_plan
from ablate.models.layers import activation as make_activation
from ablate.models.layers import dropout as make_dropout

__all__ = ["ConvBlock", "cnn_net"]


class ConvBlock(nn.Module):
    """``conv (k=3) -> norm -> act -> drop``, with an optional skip around the whole block.

    The skip is the identity when input and output shapes match and a strided 1x1 conv
    (``shortcut.conv``) when channels or length/size change.

    Args:
        dims: 1 for signals (N, C, L), 2 for images (N, C, H, W).
        in_channels: Input channels.
        out_channels: Output channels.
        stride: 1, or 2 to halve the spatial size.
        activation: One of :data:`ablate.menu.ACTIVATIONS`.
        norm: One of :data:`ablate.menu.NORMS`.
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
        self.conv = conv(dims, in_channels, out_channels, 3, stride)
        self.norm = norm_layer(norm, dims, out_channels)
        self.act = make_activation(activation)
        self.drop = make_dropout(dropout)
        self.residual = residual
        self.shortcut: nn.Module | None = None
        if residual and (stride != 1 or in_channels != out_channels):
            # A plain 1x1 conv, as asked of this "cnn + skips" variant; the resnet's projection also
            # normalises because its main branch ends in a norm layer.
            self.shortcut = nn.Sequential(OrderedDict(conv=conv(dims, in_channels, out_channels, 1, stride)))

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


def cnn_net(shape: tuple[int, ...], knobs: Knobs) -> nn.Module:
    """``depth`` conv blocks of ``width`` channels (stride 2 at stage starts), pooling, linear head."""
    num_classes, depth, width = knobs.num_classes, knobs.depth, knobs.width
    activation, norm, dropout, residual = knobs.activation, knobs.norm, knobs.dropout, knobs.residual
    dims = len(shape) - 1
    blocks = []
    channels = shape[0]
    for _, stride in stage_plan(depth, min(shape[1:])):
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
    return classifier(dims, blocks, width, num_classes)
