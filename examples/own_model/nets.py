"""A small 1-D convolutional network of your own, for ``model=tinyconv`` (conf/model/tinyconv.yaml).

ablate calls ``make_net`` with ``input_shape`` and ``num_classes``, plus those trick knobs its
signature declares: here ``depth``, ``activation``, ``norm`` and ``dropout``, and a field of its own,
``channels``. It does not declare ``width`` or ``residual``, so a study that switches them is
refused before it starts (``model.residual=true: model 'tinyconv' does not take 'residual'``).
Init schemes, optimizers, weight decay, L1, clipping, schedules, averaging, early stopping,
diagnostics and input scaling need nothing from the network: they apply as they are.
"""

from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def make_net(input_shape: tuple[int, ...], num_classes: int, *, depth: int = 2, channels: int = 16,
             activation: str = "relu", norm: str = "none", dropout: float = 0.0) -> nn.Module:
    """``depth`` blocks ``Conv1d(k=5) -> norm -> activation -> dropout``, global pooling, a linear head.

    Args:
        input_shape: ``(C, L)``: channels and length of one signal.
        num_classes: Number of logits.
        depth: Convolutional blocks.
        channels: Channels of every block.
        activation: relu, tanh or sigmoid.
        norm: none, batch or layer (GroupNorm with one group).
        dropout: Drop probability after each block; 0 = no dropout layer.
    """
    if len(input_shape) != 2:
        raise ValueError(f"tinyconv takes signals shaped (C, L), not {tuple(input_shape)}")
    if norm not in ("none", "batch", "layer"):
        raise ValueError(f"tinyconv supports norm none, batch or layer, not {norm!r}")
    layers: list[nn.Module] = []
    in_channels = input_shape[0]
    for _ in range(depth):
        layers.append(nn.Conv1d(in_channels, channels, kernel_size=5, padding=2))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(channels))
        elif norm == "layer":
            layers.append(nn.GroupNorm(1, channels))
        layers.append(_ACTIVATIONS[activation]())
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_channels = channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(channels, num_classes))


if __name__ == "__main__":  # a quick look: python nets.py
    net = make_net((1, 64), 3)
    print(net, net(torch.zeros(2, 1, 64)).shape)
