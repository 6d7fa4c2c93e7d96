"""The multi-layer perceptron: ``depth`` dense blocks and a linear head."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ablate.models.layers import Knobs, norm_layer
from ablate.models.layers import activation as make_activation
from ablate.models.layers import dropout as make_dropout

__all__ = ["DenseBlock", "mlp_net"]


class DenseBlock(nn.Module):
    """``linear -> norm -> act -> drop``, plus ``x + block(x)`` when residual and widths match.

    Args:
        in_features: Input width.
        out_features: Output width.
        activation: One of :data:`ablate.menu.ACTIVATIONS`.
        norm: One of :data:`ablate.menu.NORMS`.
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
        self.norm = norm_layer(norm, 0, out_features)
        self.act = make_activation(activation)
        self.drop = make_dropout(dropout)
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


def mlp_net(features: int, knobs: Knobs) -> nn.Module:
    """flatten, ``depth`` dense blocks of ``width`` units, linear head."""
    num_classes, depth, width = knobs.num_classes, knobs.depth, knobs.width
    activation, norm, dropout, residual = knobs.activation, knobs.norm, knobs.dropout, knobs.residual
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
