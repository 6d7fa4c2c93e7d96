"""Which model's predictions count: the plain network, an ensemble of independently trained
members, or an EMA / SWA average of the weights (torch's ``AveragedModel``)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["Ensemble", "Evaluator", "Member"]


class Member(Protocol):
    """A trained network (``fit`` holds one per ensemble member, each with its own optimizer)."""

    model: nn.Module


class Ensemble(nn.Module):
    """Independently trained members whose class probabilities are averaged.

    ``forward`` returns ``log(mean_k softmax(member_k(x)))``: log-probabilities, so ``argmax`` and
    ``nll_loss`` apply as to logits.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).softmax(dim=1) for m in self.members]).mean(dim=0)
        return probs.clamp_min(1e-12).log()


class Evaluator:
    """The model whose predictions count: plain, ensembled, EMA- or SWA-averaged."""

    def __init__(self, cfg: DictConfig, members: Sequence[Member]) -> None:
        self.kind = cfg.averaging.name
        self.members = members
        self.averaged: AveragedModel | None = None
        model = members[0].model
        if self.kind == "ema":
            # torch leaves get_ema_multi_avg_fn unannotated.
            ema = get_ema_multi_avg_fn(cfg.averaging.decay)  # type: ignore[no-untyped-call]
            self.averaged = AveragedModel(model, multi_avg_fn=ema, use_buffers=True)
        elif self.kind == "swa":
            self.averaged = AveragedModel(model, use_buffers=True)
            self.swa_start = math.floor(cfg.averaging.start * cfg.trainer.epochs)

    def after_step(self) -> None:
        if self.kind == "ema":
            assert self.averaged is not None
            self.averaged.update_parameters(self.members[0].model)

    def after_epoch(self, epoch_index: int) -> None:
        if self.kind == "swa" and epoch_index >= self.swa_start:
            assert self.averaged is not None
            self.averaged.update_parameters(self.members[0].model)

    def selected(self) -> nn.Module:
        """The model whose predictions count now.

        SWA's averaged copy counts once it holds an average, as its own count (``n_averaged``, a
        buffer restored with the weights) says: weights restored by early stopping from before SWA
        began come with a copy that holds only the weights it was made with, the untrained network.
        """
        if self.kind == "ensemble":
            return Ensemble([m.model for m in self.members])
        if self.averaged is not None and (self.kind == "ema" or int(self.averaged.n_averaged) > 0):
            return self.averaged
        return self.members[0].model

    @torch.no_grad()
    def evaluate_sums(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
        """``[summed cross-entropy, number correct]`` as a device tensor (no host sync).

        For an ensemble the loss is that of the averaged probabilities: log_softmax is idempotent,
        so one cross-entropy serves logits and an ensemble's log-probabilities.
        """
        model = self.selected()
        model.eval()
        sums = []
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            out = model(xb)
            sums.append(torch.stack([F.cross_entropy(out, yb, reduction="sum"),
                                     (out.argmax(dim=1) == yb).sum().to(out.dtype)]))
        for m in self.members:
            m.model.train()
        return sums[0] if len(sums) == 1 else torch.stack(sums).sum(dim=0)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
        """Mean cross-entropy and accuracy."""
        loss, correct = self.evaluate_sums(x, y, batch_size).tolist()
        return loss / len(y), correct / len(y)

    def state(self) -> list[dict[str, torch.Tensor]]:
        modules = [m.model for m in self.members] + ([self.averaged] if self.averaged else [])
        return [copy.deepcopy(m.state_dict()) for m in modules]

    def load(self, state: list[dict[str, torch.Tensor]]) -> None:
        modules = [m.model for m in self.members] + ([self.averaged] if self.averaged else [])
        for module, sd in zip(modules, state, strict=True):  # state() of the same modules
            module.load_state_dict(sd)
