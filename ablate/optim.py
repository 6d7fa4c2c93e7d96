"""Optimizers, weight-decay groups, learning-rate schedules and gradient clipping.

Builders take plain keyword arguments (no config objects) so they can be tested without Hydra;
:func:`ablate.train.fit` maps the config onto them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ablate.errors import ConfigError
from ablate.menu import CLIP_TARGETS, CLIPS, OPTIMIZERS, SCHEDULES

__all__ = [
    "CLIPS",
    "CLIP_TARGETS",
    "OPTIMIZERS",
    "SCHEDULES",
    "NormalizedGD",
    "build_optimizer",
    "build_schedule",
    "clip_gradients",
    "decay_groups",
    "global_norm",
    "l1_penalty",
    "optimizer_for",
    "stacked_norm",
]



_WEIGHT_NORM_GAIN = "parametrizations.weight.original0"  # g of w = g v / ||v|| (norm=weight)


def decay_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters by shape: weight matrices and kernels are decayed; biases and norm gains are not.

    Shrinking a bias or a BatchNorm gain towards zero does not reduce the model's capacity, it only
    fights normalisation, so (as in nanoGPT and timm) only tensors with two or more dimensions decay.
    Weight normalisation's gain ``g`` (shape ``(out, 1, ...)``) is a gain too and is not decayed; its
    direction ``v`` is.

    Returns:
        ``(decayed, not_decayed)`` lists of trainable parameters.
    """
    decayed: list[nn.Parameter] = []
    other: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decayed if p.ndim >= 2 and not name.endswith(_WEIGHT_NORM_GAIN) else other).append(p)
    return decayed, other


def global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all ``tensors`` together (a 0-d device tensor)."""
    norm: torch.Tensor = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))
    return norm


def stacked_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Per model, the L2 norm of all ``tensors`` together, for K models stacked along dimension 0.

    Returns:
        Shape ``(K,)``: entry k is :func:`global_norm` of the tensors' k-th slices.
    """
    per_tensor = [torch.linalg.vector_norm(t.flatten(1), dim=1) for t in tensors]
    norm: torch.Tensor = torch.linalg.vector_norm(torch.stack(per_tensor, dim=1), dim=1)
    return norm


def _scaled(tensors: list[torch.Tensor], scale: torch.Tensor) -> list[torch.Tensor]:
    """Each stacked tensor times its model's entry of ``scale`` (shape ``(K,)``)."""
    return [t * scale.view(-1, *[1] * (t.dim() - 1)) for t in tensors]


def _scale_(tensors: list[torch.Tensor], scale: torch.Tensor) -> None:
    for t in tensors:
        t.mul_(scale.view(-1, *[1] * (t.dim() - 1)))


class NormalizedGD(torch.optim.Optimizer):
    """The normalised gradient step: every parameter moves along the direction of the gradient only.

    With ``g`` the gradient of all parameters together (plus ``weight_decay * w`` on the decayed
    group, as an L2 term) and ``||g||`` its one global L2 norm per step::

        d = g / ||g||                       (d = 0 when g = 0)
        b = momentum * b + d                (b = d when momentum = 0)
        w = w - lr * b

    Without momentum every step moves the parameters by exactly ``lr`` in global norm, whatever the
    gradient's size, so vanishing and exploding gradients change the direction only, never the step.

    Args:
        params: Parameters or parameter groups (``weight_decay`` per group).
        lr: The step length.
        momentum: Heavy-ball coefficient on the normalised directions, 0 <= momentum < 1.
        weight_decay: L2 coefficient added to the gradient before normalising.
        stacked: The parameters are K models stacked along their first dimension
            (:mod:`ablate.fused`): ``||g||`` is each model's own norm over its slices.
    """

    def __init__(self, params: Any, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, *,
                 stacked: bool = False) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
        self.stacked = stacked

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One normalised step over every group together."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads: list[torch.Tensor] = [p.grad for p in params]
            if group["weight_decay"]:
                grads = list(torch._foreach_add(grads, params, alpha=group["weight_decay"]))
            groups.append((group, params, grads))
        if not groups:
            return loss
        all_grads = [g for _, _, grads in groups for g in grads]
        norm = stacked_norm(all_grads) if self.stacked else global_norm(all_grads)
        # 1/||g||, and 0 for a zero gradient (no step) rather than inf * 0 = NaN.
        inverse = torch.where(norm > 0, 1.0 / norm, torch.zeros_like(norm))
        for group, params, grads in groups:
            directions = (_scaled(grads, inverse) if self.stacked
                          else list(torch._foreach_mul(grads, inverse)))
            if group["momentum"]:
                buffers = []
                for p, d in zip(params, directions, strict=True):
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                    buffers.append(state["momentum_buffer"])
                directions = buffers
            torch._foreach_add_(params, directions, alpha=-group["lr"])
        return loss


def build_optimizer(model: nn.Module, name: str, *, lr: float, weight_decay: float = 0.0,
                    **options: Any) -> torch.optim.Optimizer:
    """Build an optimizer over ``model``'s parameters with weight decay on matrices only.

    Adam and AdamW use the fused kernel (CPU and CUDA): small models spend their step in Python,
    and it was 1.2-1.4x faster end to end here. It rounds differently from the per-tensor loop, no
    less deterministically. The others keep torch's default (foreach on CUDA; on the CPU foreach
    SGD measured slower for small models).

    Args:
        model: The model whose parameters are optimised.
        name: One of :data:`OPTIMIZERS`. ``momentum`` and ``nesterov`` are SGD with heavy-ball or
            Nesterov momentum (default 0.9); ``adamw`` applies ``weight_decay`` decoupled from the
            gradient, every other optimizer as an L2 term added to the gradient.
        lr: Learning rate.
        weight_decay: L2 coefficient (lambda) for weight matrices and kernels.
        **options: The optimizer's own parameters: ``momentum``, ``nesterov`` (SGD family);
            ``lr_decay``, ``eps`` (adagrad); ``alpha``, ``eps``, ``momentum`` (rmsprop);
            ``beta1``, ``beta2``, ``eps`` (adam, adamw); ``momentum`` (normalized,
            default 0: :class:`NormalizedGD`).
    """
    decayed, other = decay_groups(model)
    return optimizer_for(decayed, other, name, lr=lr, weight_decay=weight_decay, **options)


def optimizer_for(decayed: Sequence[torch.Tensor], other: Sequence[torch.Tensor], name: str, *, lr: float,
                  weight_decay: float = 0.0, stacked: bool = False,
                  **options: Any) -> torch.optim.Optimizer:
    """:func:`build_optimizer` over parameters already split by :func:`decay_groups`.

    Args:
        decayed: Parameters that take ``weight_decay``.
        other: Parameters that do not.
        name: One of :data:`OPTIMIZERS`.
        lr: Learning rate.
        weight_decay: L2 coefficient of ``decayed``.
        stacked: The parameters are K models stacked along dimension 0 (:mod:`ablate.fused`). Every
            optimizer but ``normalized`` works element by element, so stacking changes nothing;
            ``normalized`` then takes each model's own gradient norm.
        **options: As for :func:`build_optimizer`.
    """
    groups: list[dict[str, Any]] = [{"params": list(decayed), "weight_decay": weight_decay},
                                    {"params": list(other), "weight_decay": 0.0}]
    if weight_decay == 0:  # one group: fewer, larger foreach kernels per step
        groups = [{"params": [*decayed, *other], "weight_decay": 0.0}]
    o = dict(options)
    if name in ("sgd", "momentum", "nesterov"):
        momentum = o.get("momentum", 0.0 if name == "sgd" else 0.9)
        nesterov = bool(o.get("nesterov", name == "nesterov"))
        if nesterov and momentum <= 0:
            raise ConfigError("optimizer.momentum", momentum, "a number > 0 with nesterov")
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr, lr_decay=o.get("lr_decay", 0.0),
                                   eps=o.get("eps", 1e-10))
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=o.get("alpha", 0.99),
                                   eps=o.get("eps", 1e-8), momentum=o.get("momentum", 0.0))
    if name in ("adam", "adamw"):
        cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        betas = (o.get("beta1", 0.9), o.get("beta2", 0.999))
        return cls(groups, lr=lr, betas=betas, eps=o.get("eps", 1e-8), fused=True)
    if name == "normalized":
        return NormalizedGD(groups, lr=lr, momentum=o.get("momentum", 0.0), stacked=stacked)
    raise ConfigError("optimizer.name", name, "one of: " + ", ".join(OPTIMIZERS))


def build_schedule(optimizer: torch.optim.Optimizer, name: str, *, epochs: int,
                   **options: Any) -> torch.optim.lr_scheduler.LRScheduler:
    """Build a learning-rate schedule stepped once per epoch.

    With ``lr0`` the optimizer's learning rate and ``e`` the number of finished epochs:

    - ``constant``: ``lr0``.
    - ``exponential``: ``lr0 * gamma**e`` (``gamma`` default 0.98).
    - ``step``: ``lr0 * gamma**floor(e / step_size)``.
    - ``cosine``: ``min_lr + (lr0 - min_lr) * (1 + cos(pi * e / (epochs - 1))) / 2``, so the last
      epoch trains at ``min_lr``.
    """
    sched = torch.optim.lr_scheduler
    if name == "constant":
        return sched.LambdaLR(optimizer, lambda e: 1.0)
    if name == "exponential":
        return sched.ExponentialLR(optimizer, gamma=options.get("gamma", 0.98))
    if name == "step":
        return sched.StepLR(optimizer, step_size=options.get("step_size", 10),
                            gamma=options.get("gamma", 0.5))
    if name == "cosine":
        min_lr: float = options.get("min_lr", 0.0)
        span = max(epochs - 1, 1)

        def factor(e: int, lr0: float) -> float:
            return (min_lr + (lr0 - min_lr) * (1 + math.cos(math.pi * min(e, span) / span)) / 2) / lr0

        def for_group(lr0: float) -> Callable[[int], float]:
            return lambda e: factor(e, lr0)

        lambdas = [for_group(g["lr"]) for g in optimizer.param_groups]
        return sched.LambdaLR(optimizer, lambdas)
    raise ConfigError("schedule.name", name, "one of: " + ", ".join(SCHEDULES))


def clip_gradients(parameters: Iterable[torch.Tensor], name: str, *,
                   threshold: float = 1.0, to: str = "threshold", stacked: bool = False) -> None:
    """Clip gradients in place before the optimizer step.

    - ``none``: nothing.
    - ``norm``: when the global L2 norm ``||g||`` of all gradients together exceeds ``threshold``
      (theta), rescale them together: to norm theta (``to="threshold"``, ``g * theta / ||g||``), or
      to norm 1 (``to="unit"``, ``g / ||g||``: the rule that "divides the gradient by its norm");
      gradients of norm <= theta are left unchanged either way. The two agree at theta = 1.
    - ``value``: clamp every gradient element into ``[-threshold, threshold]``.

    With ``stacked`` the parameters are K models stacked along dimension 0 (:mod:`ablate.fused`):
    ``||g||`` is then each model's own norm, and each model's slices are rescaled by their own factor.
    """
    if name == "none":
        return
    if to not in CLIP_TARGETS:
        raise ConfigError("clip.to", to, "one of: " + ", ".join(CLIP_TARGETS))
    if name == "norm":
        if to == "threshold" and not stacked:
            torch.nn.utils.clip_grad_norm_(parameters, threshold, foreach=True)
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        if to == "threshold":  # stacked: clip_grad_norm_'s own rule, per model
            norm = stacked_norm(grads)
            _scale_(grads, torch.clamp(threshold / (norm + 1e-6), max=1.0))
            return
        norm = stacked_norm(grads) if stacked else global_norm(grads)
        # 1/||g|| above theta, else 1: one device-side select, no host sync.
        scale = torch.where(norm > threshold, 1.0 / norm, torch.ones_like(norm))
        if stacked:
            _scale_(grads, scale)
        else:
            torch._foreach_mul_(grads, scale)
    elif name == "value":
        torch.nn.utils.clip_grad_value_(parameters, threshold, foreach=True)
    else:
        raise ConfigError("clip.name", name, "one of: " + ", ".join(CLIPS))


def l1_penalty(weights: list[nn.Parameter] | list[torch.Tensor], strength: float, *,
               stacked: bool = False) -> torch.Tensor:
    """``strength * sum(|w|)`` over ``weights`` (the decayed group), added to the loss.

    With ``stacked`` (K models along dimension 0) one penalty per model, shape ``(K,)``.
    """
    if stacked:
        return strength * torch.stack([w.abs().flatten(1).sum(dim=1) for w in weights]).sum(dim=0)
    return strength * torch.stack([w.abs().sum() for w in weights]).sum()
