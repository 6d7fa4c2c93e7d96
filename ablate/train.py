"""``fit``: one training run of a composed recipe.

The loop knows nothing of Optuna or MLflow. It reports each epoch's metrics to an ``on_epoch``
callback, which may stop the run (that is how a sweep's pruner and the MLflow logger plug in).
Datasets stay tensors on the device and are batched by index: on small data torch's DataLoader
costs more than the model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ablate.averaging import Ensemble, Evaluator
from ablate.data import Dataset, load_dataset
from ablate.diagnostics import Probe
from ablate.errors import ConfigError
from ablate.init import apply_init
from ablate.menu import MODELS
from ablate.models import build_model
from ablate.models.custom import build_user_model
from ablate.optim import build_optimizer, build_schedule, clip_gradients, decay_groups, l1_penalty
from ablate.records import best_metric, best_value
from ablate.registry import model_call

__all__ = ["STOP_REASONS", "EarlyStopping", "Ensemble", "EpochCallback", "RunResult", "Steps", "check_device",
           "finish_result", "fit", "load_data", "resolve_device"]

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


def check_device(name: str) -> None:
    """Refuse a ``trainer.device`` this machine does not have, before anything is loaded or recorded.

    Raises:
        ConfigError: ``cuda`` / ``cuda:N`` without CUDA or with N beyond its devices, ``mps`` without MPS.
    """
    if name in ("auto", "cpu"):
        return
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("trainer.device", name, "cpu or auto (this machine has no MPS device)")
        return
    if not name.startswith("cuda"):
        return  # not a device name at all: validate() names what is allowed
    if not torch.cuda.is_available():
        raise ConfigError("trainer.device", name, "cpu or auto (this machine has no CUDA device)")
    index = int(name.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError("trainer.device", name, f"cuda or cuda:0 to cuda:{count - 1} (this machine has "
                          f"{count} CUDA device{'s' if count != 1 else ''})")


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
                        data_seed=d.data_seed, path=d.get("path"), num_classes=d.get("num_classes"),
                        function=d.get("function"))


def _options(node: DictConfig, *, keep_name: bool = False) -> dict[str, Any]:
    opts = OmegaConf.to_container(node, resolve=True)
    assert isinstance(opts, dict)
    if not keep_name:
        opts.pop("name", None)
    return cast("dict[str, Any]", opts)  # OmegaConf types keys as str | bytes | int | ...; a config's are str


def _build(cfg: DictConfig, data: Dataset) -> nn.Module:
    """The built-in model the config names, or the user's, built by their factory and checked."""
    m = cfg.model
    if m.name in MODELS:
        return build_model(m.name, input_shape=data.input_shape, num_classes=data.num_classes,
                           depth=m.depth, width=m.width, activation=m.activation, norm=cfg.norm,
                           dropout=cfg.dropout, residual=m.residual)
    call = model_call(_options(m, keep_name=True), norm=cfg.norm, dropout=cfg.dropout)
    return build_user_model(call, input_shape=data.input_shape, num_classes=data.num_classes,
                            sample=data.x_train[:2].cpu())


def _initialised(cfg: DictConfig, data: Dataset, device: torch.device) -> nn.Module:
    """The config's model with its init scheme applied, on ``device`` (draws from torch's global RNG)."""
    model = _build(cfg, data)
    # A user's model may not say its activation; Kaiming's gain then assumes ReLU, as torch's does.
    apply_init(model, cfg.init.name, activation=cfg.model.get("activation") or "relu",
               **({"bound": cfg.init.bound} if "bound" in cfg.init else {}))
    return model.to(device)


def _seeded(seed: int) -> torch.Generator:
    """Seed torch's global RNG (initial weights, dropout) and return the data order's own generator.

    A run's random stream is, in order: this call, then each member's :func:`_initialised` model.
    """
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _members(cfg: DictConfig) -> int:
    """Independently initialised models per run: the ensemble's members, else 1."""
    return int(cfg.averaging.members) if cfg.averaging.name == "ensemble" else 1


class _Member:
    """One independently initialised model with its optimizer and schedule."""

    def __init__(self, cfg: DictConfig, data: Dataset, device: torch.device) -> None:
        self.model = _initialised(cfg, data, device)
        opt = _options(cfg.optimizer)
        lr = opt.pop("lr")
        self.optimizer = build_optimizer(self.model, cfg.optimizer.name, lr=lr,
                                         weight_decay=cfg.weight_decay, **opt)
        # A constant rate needs no scheduler, which would otherwise wrap every optimizer step.
        self.schedule = None if cfg.schedule.name == "constant" else build_schedule(
            self.optimizer, cfg.schedule.name, epochs=cfg.trainer.epochs, **_options(cfg.schedule))
        self.decayed = decay_groups(self.model)[0]
        self.params = [p for p in self.model.parameters() if p.requires_grad]


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


@dataclass(frozen=True)
class Steps:
    """How an epoch is cut into steps, and what a step applies besides the optimizer's update (the
    same for :func:`fit` and :func:`ablate.fused.fit_seeds`)."""

    batch_size: int
    n: int  # training examples
    n_used: int  # those an epoch trains on
    starts: list[int]  # each step's first example in the epoch's order
    batch_sizes: torch.Tensor  # each step's examples (float32, on the device)
    l1: float
    clip_name: str
    clip_threshold: float
    clip_to: str

    @classmethod
    def of(cls, cfg: DictConfig, n: int, device: torch.device) -> Steps:
        bs = int(cfg.trainer.batch_size)
        # A last batch of one example breaks BatchNorm in training mode and says little: drop it.
        n_used = n - 1 if n % bs == 1 and n > 1 else n
        starts = list(range(0, n_used, bs))
        sizes = torch.tensor([min(bs, n_used - s) for s in starts], device=device, dtype=torch.float32)
        return cls(batch_size=bs, n=n, n_used=n_used, starts=starts, batch_sizes=sizes, l1=float(cfg.l1),
                   clip_name=str(cfg.clip.name), clip_threshold=float(cfg.clip.get("threshold", 0.0)),
                   clip_to=str(cfg.clip.get("to", "threshold")))


class _Run:
    """One run of :func:`fit`: what its epochs share, and the steps of an epoch.

    The construction order is the random stream's order: the global seed, the data order's own
    generator, then each member's initial weights.
    """

    def __init__(self, cfg: DictConfig, data: Dataset, device: torch.device) -> None:
        self.cfg, self.data, self.device = cfg, data, device
        self.order = _seeded(cfg.seed)
        self.k = _members(cfg)
        self.members = [_Member(cfg, data, device) for _ in range(self.k)]
        self.evaluator = Evaluator(cfg, self.members)
        self.probe = Probe(self.members[0].model) if cfg.trainer.diagnostics else None
        es = cfg.early_stopping
        self.stopper = EarlyStopping(es.patience, es.min_delta, es.monitor)
        self.best_state: list[dict[str, torch.Tensor]] | None = None
        self.steps = Steps.of(cfg, len(data.y_train), device)
        self.result = RunResult()
        self.result.final["n_params"] = float(sum(p.numel() for p in self.members[0].params))

    def epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch, evaluate on the validation split; the epoch's metrics (one host sync)."""
        t0 = time.perf_counter()
        lr = self.members[0].optimizer.param_groups[0]["lr"]
        losses, outputs, ys, probed = self._train()
        for member in self.members:
            if member.schedule is not None:
                member.schedule.step()
        self.evaluator.after_epoch(epoch - 1)
        steps = self.steps
        train_loss = sum((torch.stack(ls).float() @ steps.batch_sizes for ls in losses), torch.zeros(()))
        train_correct = sum(((torch.cat(out).argmax(dim=1) == ys[:steps.n_used]).sum() for out in outputs),
                            torch.zeros((), dtype=torch.int64))
        data, cfg = self.data, self.cfg
        val_sums = self.evaluator.evaluate_sums(data.x_val, data.y_val, cfg.trainer.eval_batch_size)
        parts = [train_loss.reshape(1), train_correct.reshape(1).float(), val_sums.float()]
        if probed is not None:
            parts.append(probed)
        flat = torch.cat(parts).tolist()  # the epoch's one host sync
        n_seen = self.steps.n_used * self.k
        metrics = {
            "train_loss": flat[0] / n_seen,
            "train_acc": flat[1] / n_seen,
            "val_loss": flat[2] / len(data.y_val),
            "val_acc": flat[3] / len(data.y_val),
            "lr": lr,
            "epoch_time": time.perf_counter() - t0,
        }
        if self.probe is not None and probed is not None:
            metrics.update(zip(self.probe.names, flat[4:], strict=True))
        self.result.history.append({"epoch": float(epoch), **metrics})
        if self.stopper.update(epoch, metrics) and cfg.early_stopping.patience > 0:
            self.best_state = self.evaluator.state()
        return metrics

    def _train(self) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]], torch.Tensor,
                              torch.Tensor | None]:
        """One pass over the shuffled training split: per-member losses and logits (device tensors).

        Per step only references are kept; reducing them once per epoch saves small ops a step.
        """
        data, steps, probe = self.data, self.steps, self.probe
        bs = steps.batch_size
        perm = torch.randperm(steps.n, generator=self.order).to(self.device)
        xs, ys = data.x_train[perm], data.y_train[perm]
        losses: list[list[torch.Tensor]] = [[] for _ in self.members]
        outputs: list[list[torch.Tensor]] = [[] for _ in self.members]
        probed: torch.Tensor | None = None
        last = len(steps.starts) - 1
        for i, start in enumerate(steps.starts):
            xb, yb = xs[start:start + bs], ys[start:start + bs]
            for j, member in enumerate(self.members):
                probing = probe is not None and i == last and j == 0
                if probing:
                    probe.arm()  # type: ignore[union-attr]  # probing implies a probe
                logits = member.model(xb)
                loss = F.cross_entropy(logits, yb)
                objective = loss + l1_penalty(member.decayed, steps.l1) if steps.l1 else loss
                member.optimizer.zero_grad(set_to_none=True)
                objective.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
                if probing:
                    probed = probe.read()  # type: ignore[union-attr]
                if steps.clip_name != "none":
                    clip_gradients(member.params, steps.clip_name, threshold=steps.clip_threshold,
                                   to=steps.clip_to)
                member.optimizer.step()
                losses[j].append(loss.detach())
                outputs[j].append(logits.detach())
            self.evaluator.after_step()
        return losses, outputs, ys, probed

    def stop_reason(self, metrics: Mapping[str, float], stop_requested: bool) -> str | None:
        """Why the run ends after this epoch, or None to go on."""
        if not (math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])):
            return "diverged"
        if stop_requested:
            return "stopped"
        if self.stopper.should_stop:
            return "early_stopped"
        return None

    def finish(self, train_time: float) -> RunResult:
        """Restore the best weights (early stopping), evaluate on the test split, fill ``final``."""
        if self.best_state is not None:
            self.evaluator.load(self.best_state)
        return finish_result(self.result, self.evaluator, self.data, self.cfg, train_time)


def finish_result(result: RunResult, evaluator: Evaluator, data: Dataset, cfg: DictConfig,
                  train_time: float) -> RunResult:
    """Evaluate the selected model (weights already restored) on the test split and fill ``final``
    and ``model``: how :func:`fit` and :func:`ablate.fused.fit_seeds` end a run."""
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
        "train_time": train_time,
    })
    result.model = evaluator.selected().eval()
    return result


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
    run = _Run(cfg, (data if data is not None else load_data(cfg)).to(device), device)
    started = time.perf_counter()
    callbacks = 0.0  # the caller's time, left out of train_time
    for epoch in range(1, cfg.trainer.epochs + 1):
        metrics = run.epoch(epoch)
        stop_requested = False
        if on_epoch is not None:
            t_callback = time.perf_counter()
            stop_requested = bool(on_epoch(epoch, metrics))
            callbacks += time.perf_counter() - t_callback
        reason = run.stop_reason(metrics, stop_requested)
        if reason is not None:
            run.result.stop_reason = reason
            break
    return run.finish(time.perf_counter() - started - callbacks)
