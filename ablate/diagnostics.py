"""Diagnostics that make vanishing and exploding gradients visible: per-layer gradient norms and
activation spreads of every Linear / Conv layer, read once per epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ablate.models import WEIGHT_LAYERS, weight_parameters

__all__ = ["Probe"]


class Probe:
    """Per-layer activation std (forward hooks) and gradient norm of every Linear / Conv layer.

    A layer's gradient norm is that of its weight; under weight normalisation, of its two trained
    tensors together, ``sqrt(||dL/dg||^2 + ||dL/dv||^2)``. Armed for one training batch per epoch, so
    the cost is a few small reductions per epoch.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]
        self.weights = [weight_parameters(m) for _, m in self.layers]
        self.one_tensor_each = all(len(w) == 1 for w in self.weights)
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
        flat = [w for ws in self.weights for w in ws]
        norms = list(torch._foreach_norm([w.grad if w.grad is not None else torch.zeros_like(w)
                                          for w in flat]))
        if not self.one_tensor_each:  # weight norm: combine each layer's g and v norms
            per_layer: list[torch.Tensor] = []
            i = 0
            for ws in self.weights:
                per_layer.append(torch.linalg.vector_norm(torch.stack(norms[i:i + len(ws)])))
                i += len(ws)
            norms = per_layer
        return torch.stack([*norms, *self.act_std]).float()
