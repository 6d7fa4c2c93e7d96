"""``fit``: one training run of a composed recipe.

The loop knows nothing of Optuna or MLflow. It reports each epoch's metrics to an ``on_epoch``
callback, which may stop the run (that is how a sweep's pruner and the MLflow logger plug in).
Datasets stay tensors on the device and are batched by index: on small data torch's DataLoader
costs more than the model.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ablate.data import Dataset, load_dataset
from ablate.init import apply_init
from ablate.models import build_model
from ablate.optim import build_optimizer, build_schedule, clip_gradients, decay_groups, l1_penalty
from ablate.records import best_metric, best_value

__all__ = ["STOP_REASONS", "EpochCallback", "RunResult", "fit", "load_data", "resolve_device"]

STOP_REASONS = ("completed", "early_stopped", "diverged", "stopped")

EpochCallback = Callable[[int, Mapping[str, float]], Any]
"""``on_epoch(epoch, metrics)``, called after every epoch (1-based); a truthy return stops the run."""


@dataclass
class RunResult:
    """What one run produced.

    Attributes:
        history: One dict per epoch: ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``,
            ``val_acc``, ``lr``, ``epoch_time`` and, with diagnostics on, ``grad_norm/<layer>``
            and ``act_std/<layer>``.
        final: ``test_acc`` and ``test_loss`` of the selected model (the restored best under early
            stopping, else the last; averaged or ensembled when averaging is on), ``best_val_acc``,
            ``best_epoch``, ``epochs_run``, ``train_time`` (seconds), ``n_params``.
        stop_reason: One of :data:`STOP_REASONS`.
        model: The selected model in eval mode (an :class:`Ensemble`, an averaged model or the
            trained network), on the training device.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    stop_reason: str = "completed"
    model: nn.Module | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_data(cfg: DictConfig) -> Dataset:
    """Load (and scale) the dataset a config names; raises DataError / ConfigError on bad input."""
    d = cfg.data
    return load_dataset(d.name, root=d.root, download=d.download, scaling=d.scaling,
                        val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                        data_seed=d.data_seed)


def _options(node: DictConfig) -> dict[str, Any]:
    opts = OmegaConf.to_container(node, resolve=True)
    assert isinstance(opts, dict)
    opts.pop("name", None)
    return cast("dict[str, Any]", opts)  # OmegaConf types keys as str | bytes | int | ...; a config's are str


class _Member:
    """One independently initialised model with its optimizer and schedule."""

    def __init__(self, cfg: DictConfig, data: Dataset, device: torch.device) -> None:
        self.model = build_model(
            cfg.model.name, input_shape=data.input_shape, num_classes=data.num_classes,
            depth=cfg.model.depth, width=cfg.model.width, activation=cfg.model.activation,
            norm=cfg.norm, dropout=cfg.dropout, residual=cfg.model.residual)
        apply_init(self.model, cfg.init.name, activation=cfg.model.activation,
                   **({"bound": cfg.init.bound} if "bound" in cfg.init else {}))
        self.model.to(device)
        opt = _options(cfg.optimizer)
        lr = opt.pop("lr")
        self.optimizer = build_optimizer(self.model, cfg.optimizer.name, lr=lr,
                                         weight_decay=cfg.weight_decay, **opt)
        # A constant rate needs no scheduler, which would otherwise wrap every optimizer step.
        self.schedule = None if cfg.schedule.name == "constant" else build_schedule(
            self.optimizer, cfg.schedule.name, epochs=cfg.trainer.epochs, **_options(cfg.schedule))
        self.decayed = decay_groups(self.model)[0]
        self.params = [p for p in self.model.parameters() if p.requires_grad]


class _Probe:
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


class _Evaluator:
    """The model whose predictions count: plain, ensembled, EMA- or SWA-averaged."""

    def __init__(self, cfg: DictConfig, members: list[_Member]) -> None:
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
        self.swa_updates = 0

    def after_step(self) -> None:
        if self.kind == "ema":
            assert self.averaged is not None
            self.averaged.update_parameters(self.members[0].model)

    def after_epoch(self, epoch_index: int) -> None:
        if self.kind == "swa" and epoch_index >= self.swa_start:
            assert self.averaged is not None
            self.averaged.update_parameters(self.members[0].model)
            self.swa_updates += 1

    def selected(self) -> nn.Module:
        """The model whose predictions count now."""
        if self.kind == "ensemble":
            return Ensemble([m.model for m in self.members])
        if self.averaged is not None and (self.kind == "ema" or self.swa_updates > 0):
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


class EarlyStopping:
    """Patience on a validation metric: ``val_acc`` is maximised, ``val_loss`` minimised.

    An epoch improves when it beats the best so far by more than ``min_delta``; the run stops after
    ``patience`` epochs without improvement (never when ``patience`` is 0).
    """

    def __init__(self, patience: int, min_delta: float, monitor: str) -> None:
        self.patience, self.min_delta, self.monitor = patience, min_delta, monitor
        self.sign = 1.0 if monitor == "val_acc" else -1.0
        self.best = -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Record one epoch; True when it is the new best (by more than ``min_delta``)."""
        value = self.sign * metrics[self.monitor]
        if math.isfinite(value) and value - self.best > self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience


def fit(cfg: DictConfig | Mapping[str, Any], on_epoch: EpochCallback | None = None, *,
        data: Dataset | None = None) -> RunResult:
    """Train one recipe and evaluate the selected model on the test split.

    Args:
        cfg: A composed config (:func:`ablate.config.compose`), or a mapping of the same shape.
        on_epoch: Called as ``on_epoch(epoch, metrics)`` after every epoch (1-based); a truthy
            return stops the run with stop reason ``stopped``.
        data: An already loaded dataset (for instance shared by several runs); else it is loaded
            from ``cfg.data``.

    Returns:
        The run's :class:`RunResult`. A NaN / Inf loss ends the run as ``diverged`` rather than
        raising.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    device = resolve_device(cfg.trainer.device)
    if device.type == "cpu" and torch.get_num_threads() != cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    data = (data if data is not None else load_data(cfg)).to(device)

    torch.manual_seed(cfg.seed)
    order = torch.Generator().manual_seed(cfg.seed)
    k = cfg.averaging.members if cfg.averaging.name == "ensemble" else 1
    members = [_Member(cfg, data, device) for _ in range(k)]
    evaluator = _Evaluator(cfg, members)
    probe = _Probe(members[0].model) if cfg.trainer.diagnostics else None
    es = cfg.early_stopping
    stopper = EarlyStopping(es.patience, es.min_delta, es.monitor)
    best_state = None
    l1 = float(cfg.l1)
    clip_name = cfg.clip.name
    clip_threshold = float(cfg.clip.get("threshold", 0.0))
    bs = cfg.trainer.batch_size
    n = len(data.y_train)
    # A last batch of one example breaks BatchNorm in training mode and says little: drop it.
    n_used = n - 1 if n % bs == 1 and n > 1 else n
    starts = list(range(0, n_used, bs))
    batch_sizes = torch.tensor([min(bs, n_used - s) for s in starts], device=device, dtype=torch.float32)

    result = RunResult()
    result.final["n_params"] = float(sum(p.numel() for p in members[0].params))
    started = time.perf_counter()
    callbacks = 0.0
    for epoch in range(1, cfg.trainer.epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=order).to(device)
        xs, ys = data.x_train[perm], data.y_train[perm]
        # Per step only keep references; reducing them once per epoch saves several small ops a step.
        losses: list[list[torch.Tensor]] = [[] for _ in members]
        outputs: list[list[torch.Tensor]] = [[] for _ in members]
        lr = members[0].optimizer.param_groups[0]["lr"]
        probed: torch.Tensor | None = None
        for i, start in enumerate(starts):
            xb, yb = xs[start:start + bs], ys[start:start + bs]
            probing = probe is not None and i == len(starts) - 1
            for j, member in enumerate(members):
                if probe is not None and probing and j == 0:
                    probe.arm()
                logits = member.model(xb)
                loss = F.cross_entropy(logits, yb)
                objective = loss + l1_penalty(member.decayed, l1) if l1 else loss
                member.optimizer.zero_grad(set_to_none=True)
                # torch leaves Tensor.backward unannotated.
                objective.backward()  # type: ignore[no-untyped-call]
                if probe is not None and probing and j == 0:
                    probed = probe.read()
                if clip_name != "none":
                    clip_gradients(member.params, clip_name, threshold=clip_threshold)
                member.optimizer.step()
                losses[j].append(loss.detach())
                outputs[j].append(logits.detach())
            evaluator.after_step()
        for member in members:
            if member.schedule is not None:
                member.schedule.step()
        evaluator.after_epoch(epoch - 1)
        # Sums over the members (at least one): tensors, never sum()'s start value 0.
        loss_sum = cast(torch.Tensor, sum(torch.stack(ls).float() @ batch_sizes for ls in losses))
        train_correct = cast(torch.Tensor,
                             sum((torch.cat(out).argmax(dim=1) == ys[:n_used]).sum() for out in outputs))
        val_sums = evaluator.evaluate_sums(data.x_val, data.y_val, cfg.trainer.eval_batch_size)
        parts = [loss_sum.reshape(1), train_correct.reshape(1).float(), val_sums.float()]
        if probed is not None:
            parts.append(probed)
        flat = torch.cat(parts).tolist()  # the epoch's one host sync
        metrics = {
            "train_loss": flat[0] / (n_used * k),
            "train_acc": flat[1] / (n_used * k),
            "val_loss": flat[2] / len(data.y_val),
            "val_acc": flat[3] / len(data.y_val),
            "lr": lr,
            "epoch_time": time.perf_counter() - t0,
        }
        if probe is not None and probed is not None:
            metrics.update(zip(probe.names, flat[4:], strict=True))
        train_loss, val_loss = metrics["train_loss"], metrics["val_loss"]
        result.history.append({"epoch": float(epoch), **metrics})
        if stopper.update(epoch, metrics) and es.patience > 0:
            best_state = evaluator.state()
        if on_epoch is not None:
            t_callback = time.perf_counter()
            stop_requested = bool(on_epoch(epoch, metrics))
            callbacks += time.perf_counter() - t_callback  # the caller's time, not training's
        else:
            stop_requested = False
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            result.stop_reason = "diverged"
            break
        if stop_requested:
            result.stop_reason = "stopped"
            break
        if stopper.should_stop:
            result.stop_reason = "early_stopped"
            break

    if best_state is not None:
        evaluator.load(best_state)
    test_loss, test_acc = evaluator.evaluate(data.x_test, data.y_test, cfg.trainer.eval_batch_size)
    if not math.isfinite(test_loss):
        test_acc = math.nan  # the accuracy of NaN weights would be an artefact of argmax
    best_val_acc = best_value(result.history, "val_acc", "maximize")
    val_accs = [h["val_acc"] for h in result.history]
    # The first epoch that reached it (val_acc, a count over the split, is always finite).
    best_epoch = val_accs.index(best_val_acc) if best_val_acc in val_accs else 0
    result.final.update({
        "test_acc": test_acc,
        "test_loss": test_loss,
        best_metric("val_acc"): best_val_acc,
        "best_epoch": float(best_epoch + 1),
        "epochs_run": float(result.epochs_run),
        "train_time": time.perf_counter() - started - callbacks,
    })
    result.model = evaluator.selected().eval()
    return result
