"""Diagnostics that make vanishing and exploding gradients visible: per-layer gradient norms and
activation spreads of every Linear / Conv layer, read once per epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["Probe"]


class Probe:
    """Per-layer activation std (forward hooks) and gradient norm of every Linear / Conv layer.

    Armed for one training batch per epoch, so the cost is a few small reductions per epoch.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = [(name, m) for name, m in model.named_modules()
                       if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
        self.act_std: list[torch.Tensor] = []
        self.handles: list[Any] = []

    def arm(self) -> None:
        self.act_std = [torch.zeros(())] * len(self.layers)
        for i, (_, m) in enumerate(self.layers):
            self.handles.append(m.register_forward_hook(self._hook(i)))

    def _hook(self, i: int) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self.act_std[i] = output.detach().std()
        return hook

    @property
    def names(self) -> list[str]:
        return ([f"grad_norm/{name}" for name, _ in self.layers]
                + [f"act_std/{name}" for name, _ in self.layers])

    def read(self) -> torch.Tensor:
        """Call after ``backward`` and before clipping: the gradients as the loss produced them.

        Returns:
            Gradient norms then activation stds, one per layer, in :attr:`names` order (a device
            tensor: the epoch reads it with its other metrics in a single host sync).
        """
        for h in self.handles:
            h.remove()
        self.handles = []
        weights = [m.weight for _, m in self.layers]
        grads = [w.grad if w.grad is not None else torch.zeros_like(w) for w in weights]
        return torch.stack([*torch._foreach_norm(grads), *self.act_std]).float()
