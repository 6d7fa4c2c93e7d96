"""``fit_seeds``: the seeds of one recipe trained as one fused model, in one process.

An honest ablation needs many seeds per arm, and one small model leaves most of a device idle and
much of a CPU core in per-step overhead. Here K copies of the network are stacked
(``torch.func.stack_module_state``) and run as one (``vmap`` over ``functional_call``, dropout
masks drawn independently per copy): one forward, one backward and one optimizer step a batch for
all K. Convolutional models on the CPU run the K forwards in a loop instead (:class:`FusedModel`
says why), still with one backward, one step and one set of metrics.

On one CPU thread, ``fit`` on the benchmark models (digits MLP, mnist1d CNN) already spends most of
its time in the matmul / convolution kernels, which fusing cannot make cheaper: the gain there is
small (``benchmarks/bench_fused.py``). The point is an accelerator, where K small models fill one.

Each seed's run is the run :func:`ablate.train.fit` makes with ``cfg.seed`` set to it: the same
initial weights, the same data order (each seed gathers its own batches from its own permutation),
and the same arithmetic up to float32 rounding (vectorized, a batched matmul adds in another order
than K single ones). Why that is exact, trick by trick:

- Each seed's loss is the mean over its own batch and the objective is their sum, so the stacked
  parameters' gradients are, slice by slice, each seed's own gradient.
- Every optimizer but ``normalized`` works element by element (weight decay and L1 included), so
  stepping the stacked tensors steps each seed alone; ``normalized`` and gradient-norm clipping take
  each seed's own norm (:func:`ablate.optim.stacked_norm`).
- BatchNorm's statistics and running buffers are per slice; EMA and SWA average the stacked tensors
  element by element.
- Diagnostics read each seed's gradient norms from its slices and its activation spreads inside the
  fused forward.
- An ensemble's members are stacked next to each other (seed-major); a seed's members share its
  batches, as in ``fit``.
- One seed's NaN stays in its slices: nothing reduces across the stack.

A seed that stops (diverged, early-stopped, or stopped by its callback) is finished at that epoch
(best weights restored, test split evaluated, exactly as ``fit`` finishes) and dropped from the
stack; the others go on.
"""

from __future__ import annotations

import copy
import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ablate.averaging import Evaluator
from ablate.data import Dataset
from ablate.diagnostics import Probe
from ablate.errors import ConfigError
from ablate.menu import MODELS
from ablate.models import weight_parameters
from ablate.optim import build_schedule, clip_gradients, decay_groups, l1_penalty, optimizer_for
from ablate.train import (
    EarlyStopping,
    RunResult,
    Steps,
    _initialised,
    _members,
    _options,
    _seeded,
    finish_result,
    load_data,
    resolve_device,
)

__all__ = ["FusedModel", "SeedEpochCallback", "fit_seeds"]

SeedEpochCallback = Callable[[int, int, Mapping[str, float]], Any]
"""``on_epoch(index, epoch, metrics)``: after every epoch (1-based), once for each seed still training,
in the order of ``seeds``; ``index`` is the seed's position in ``seeds``. A truthy return stops that
seed (stop reason ``stopped``) and no other."""


class _Stacked(nn.Module):
    """The stacked tensors as a module: what the optimizer steps and ``AveragedModel`` averages."""

    def __init__(self, params: list[torch.Tensor], buffers: list[torch.Tensor]) -> None:
        super().__init__()
        self.weights = nn.ParameterList([nn.Parameter(p.detach(), requires_grad=p.requires_grad)
                                         for p in params])
        for i, b in enumerate(buffers):
            self.register_buffer(f"b{i}", b)

    def tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return list(self.parameters()), list(self.buffers())


class FusedModel:
    """K networks of one architecture as one: parameters and buffers stacked along a new dimension 0.

    The input is stacked too: ``x`` of shape ``(K, B, *input_shape)`` gives logits ``(K, B, classes)``,
    row k from network k alone. In training mode dropout masks are drawn independently per network.

    Two ways to run the K networks, the same mathematics either way:

    - vectorized: one ``vmap`` over ``functional_call``, each operation once for all K (a batched
      matmul, a grouped convolution). Every operation is one kernel launch: what a GPU needs.
    - looped: K ``functional_call`` s on each network's slices of the stacked tensors, then one
      backward, one optimizer step and one set of metrics for all K. On the CPU this is faster for
      convolutions (oneDNN's grouped convolution took ~2x the time of K plain ones here), and it
      runs any model, also one ``vmap`` cannot batch (a forward that reads a value on the host).
      Its kernels are ``fit``'s own, so it also rounds as ``fit`` does.

    Args:
        models: The networks, identical but for their tensors' values (same class and shapes).
            They are copied, not kept: training the fused model leaves them as they were.
        vectorized: Run them vectorized (True) or looped (False).
    """

    def __init__(self, models: Sequence[nn.Module], *, vectorized: bool = True) -> None:
        self.vectorized = vectorized
        first = models[0]
        self.template = copy.deepcopy(first).to("meta")
        # functional_call looks for tied weights on every call unless told there are none.
        self.tied = (len(list(first.named_parameters(remove_duplicate=False)))
                     != len(list(first.named_parameters())))
        params, buffers = stack_module_state(list(models))
        self.param_names, self.buffer_names = list(params), list(buffers)
        self.stack = _Stacked([params[n] for n in self.param_names], [buffers[n] for n in self.buffer_names])
        self.k = len(models)
        self.training = True
        self._states: dict[int, tuple[nn.Module, dict[str, Tensor], dict[str, Tensor]]] = {}
        self._probed = [name for name, _ in Probe(first).layers]
        self._probed_layers = [dict(self.template.named_modules())[n] for n in self._probed]
        if vectorized:
            self._train = vmap(self._call, randomness="different")
            self._train_probed = vmap(self._call_probed, randomness="different")
            self._shared = vmap(self._call, in_dims=(0, 0, None), randomness="different")
        else:
            self._train = self._looped(self._call)
            self._train_probed = self._looped(self._call_probed)
            self._shared = self._looped(self._call, shared_input=True)

    def _looped(self, call: Callable[..., Any], *, shared_input: bool = False) -> Callable[..., Any]:
        """``call`` once per network on its slices, outputs stacked: a loop with ``vmap``'s signature.

        ``unbind`` gives every slice in one operation, and its backward stacks the K gradients in one.
        Buffers are sliced as views, so BatchNorm's in-place updates land in the stack."""
        def run(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Any:
            p_slices = {n: t.unbind(0) for n, t in params.items()}
            b_slices = {n: t.unbind(0) for n, t in buffers.items()}
            xs = [x] * self.k if shared_input else x.unbind(0)
            outs = [call({n: t[k] for n, t in p_slices.items()}, {n: t[k] for n, t in b_slices.items()},
                         xs[k]) for k in range(self.k)]
            if isinstance(outs[0], tuple):
                return tuple(torch.stack(parts) for parts in zip(*outs, strict=True))
            return torch.stack(outs)
        return run

    def _call(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
              x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(self.template, (params, buffers), (x,), tie_weights=self.tied)
        return out

    def _call_probed(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                     x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward and each probed layer's output std (0 for a layer that did not run)."""
        stds: dict[int, torch.Tensor] = {}

        def hook(i: int) -> Callable[..., None]:
            def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
                stds[i] = output.detach().std()
            return record

        handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(self._probed_layers)]
        try:
            out = self._call(params, buffers, x)
        finally:
            for h in handles:
                h.remove()
        zero = out.new_zeros(())
        return out, torch.stack([stds.get(i, zero) for i in range(len(self._probed_layers))])

    def state(self, stack: nn.Module | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Names to stacked tensors, of the live stack or of a copy of it (an averaged one).

        Built once per stack: :meth:`keep` changes the tensors' data, never the tensors."""
        stack = stack or self.stack
        key = id(stack)
        if key not in self._states:
            params, buffers = list(stack.parameters()), list(stack.buffers())
            self._states[key] = (stack, dict(zip(self.param_names, params, strict=True)),
                                 dict(zip(self.buffer_names, buffers, strict=True)))
        _, params_by_name, buffers_by_name = self._states[key]
        return params_by_name, buffers_by_name

    def train(self, mode: bool = True) -> FusedModel:
        self.training = mode
        self.template.train(mode)
        return self

    def eval(self) -> FusedModel:
        return self.train(False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, B, classes)`` of stacked inputs ``(K, B, ...)``."""
        out: torch.Tensor = self._train(*self.state(), x)
        return out

    def forward_probed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits as ``__call__``, and each network's activation std per probed layer ``(K, layers)``."""
        out: tuple[torch.Tensor, torch.Tensor] = self._train_probed(*self.state(), x)
        return out

    def forward_shared(self, x: torch.Tensor, stack: nn.Module | None = None) -> torch.Tensor:
        """Logits ``(K, B, classes)`` of one input ``(B, ...)`` seen by every network."""
        out: torch.Tensor = self._shared(*self.state(stack), x)
        return out

    @property
    def probed_layers(self) -> list[str]:
        """Names of the Linear / Conv layers diagnostics read (:class:`ablate.diagnostics.Probe`'s)."""
        return list(self._probed)

    def keep(self, index: torch.Tensor, optimizer: torch.optim.Optimizer | None = None,
             *stacks: nn.Module) -> None:
        """Keep only the networks at ``index`` (in that order), in place: in the stack, in the
        optimizer's per-parameter state, and in further stacks of the same shapes (averaged copies).
        Tensors keep their identity, so an optimizer and schedule built on them go on as they were."""
        for stack in (self.stack, *stacks):
            for t in [*stack.parameters(), *stack.buffers()]:
                old = t.shape
                if optimizer is not None and stack is self.stack:
                    state = optimizer.state.get(t, {})
                    for key, value in state.items():
                        if isinstance(value, torch.Tensor) and value.shape == old:
                            state[key] = value[index]
                t.data = t.data[index]
        self.k = len(index)

    def load_into(self, position: int, module: nn.Module,
                  tensors: tuple[list[Tensor], list[Tensor]] | None = None) -> nn.Module:
        """Copy network ``position``'s tensors (of the live stack, or of ``tensors``: stacked lists in
        :meth:`state` order) into ``module``, an unstacked network of the same architecture."""
        params, buffers = tensors if tensors is not None else self.stack.tensors()
        with torch.no_grad():
            for name, t in zip(self.param_names, params, strict=True):
                module.get_parameter(name).copy_(t[position])
            for name, t in zip(self.buffer_names, buffers, strict=True):
                module.get_buffer(name).copy_(t[position])
        return module


@dataclass
class _Seed:
    """What is one seed's own: its networks (as built, for the final model), data order, stopping."""

    index: int
    seed: int
    models: list[nn.Module]
    order: torch.Generator
    stopper: EarlyStopping
    result: RunResult = field(default_factory=RunResult)
    best: dict[str, Any] | None = None
    train_time: float = 0.0


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    """The seeds as a list of ints; a repeated seed would train the same run twice."""
    values = list(seeds) if isinstance(seeds, Sequence) and not isinstance(seeds, str) else None
    if (not values or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in values)
            or len(set(values)) != len(values)):
        raise ConfigError("seeds", seeds if values is None else values,
                          "a non-empty list of distinct integers")
    return [int(s) for s in values]


class _FusedRun:
    """The seeds of :func:`fit_seeds` and the steps of a fused epoch."""

    def __init__(self, cfg: DictConfig, seeds: list[int], data: Dataset, device: torch.device,
                 vectorize: bool | None) -> None:
        self.cfg, self.data, self.device = cfg, data, device
        self.m = m = _members(cfg)
        es = cfg.early_stopping
        self.seeds: list[_Seed] = []
        for i, seed in enumerate(seeds):  # fit's order per seed: global seed, data order, members
            order = _seeded(seed)
            models = [_initialised(cfg, data, device) for _ in range(m)]
            stopper = EarlyStopping(es.patience, es.min_delta, es.monitor)
            self.seeds.append(_Seed(i, seed, models, order, stopper))
        models = [model for s in self.seeds for model in s.models]
        first = models[0]
        vectorized = vectorize if vectorize is not None else _vectorize_by_default(first, device)
        self.fused = FusedModel(models, vectorized=vectorized)
        if vectorized and cfg.model.name not in MODELS:
            failure = self._vmap_failure()
            if failure is not None and vectorize:
                raise ConfigError("model", cfg.model.get("factory") or cfg.model.name,
                                  "a model torch.func.vmap can run, to train seeds vectorized (it raised "
                                  f"{failure}); leave vectorize unset to loop over the seeds instead")
            if failure is not None:
                self.fused = FusedModel(models, vectorized=False)
        self.alive = list(range(len(seeds)))  # seed indices, in stack order (each m networks)

        stacked = dict(zip(self.fused.param_names, self.fused.stack.parameters(), strict=True))
        names: dict[Tensor, str] = {p: n for n, p in first.named_parameters()}
        decayed, other = decay_groups(first)
        self.decayed = [stacked[names[p]] for p in decayed]
        opt = _options(cfg.optimizer)
        lr = opt.pop("lr")
        self.optimizer = optimizer_for(self.decayed, [stacked[names[p]] for p in other], cfg.optimizer.name,
                                       lr=lr, weight_decay=cfg.weight_decay, stacked=True, **opt)
        self.schedule = None if cfg.schedule.name == "constant" else build_schedule(
            self.optimizer, cfg.schedule.name, epochs=cfg.trainer.epochs, **_options(cfg.schedule))
        self.params = [p for p in self.fused.stack.parameters() if p.requires_grad]

        self.kind = cfg.averaging.name
        self.averaged: AveragedModel | None = None
        if self.kind == "ema":
            ema = get_ema_multi_avg_fn(cfg.averaging.decay)  # type: ignore[no-untyped-call]
            self.averaged = AveragedModel(self.fused.stack, multi_avg_fn=ema, use_buffers=True)
        elif self.kind == "swa":
            self.averaged = AveragedModel(self.fused.stack, use_buffers=True)
            self.swa_start = math.floor(cfg.averaging.start * cfg.trainer.epochs)
        self.swa_updates = 0

        self.diagnostics = bool(cfg.trainer.diagnostics)
        if self.diagnostics:
            layer_of = dict(first.named_modules())
            self.probe_names = Probe(first).names
            # Per probed layer, the positions in the stack of its weight tensors (two under weight norm).
            param_index = {n: i for i, n in enumerate(self.fused.param_names)}
            self.probe_weights = [[param_index[names[w]] for w in weight_parameters(layer_of[layer])]
                                  for layer in self.fused.probed_layers]
        self.steps = Steps.of(cfg, len(data.y_train), device)
        n_params = float(sum(p.numel() for p in first.parameters() if p.requires_grad))
        for s in self.seeds:
            s.result.final["n_params"] = n_params

    def _vmap_failure(self) -> str | None:
        """Whether a user's model runs under ``vmap``: both modes on two examples, changing nothing;
        the error in one line, or None."""
        fused, x = self.fused, self.data.x_train[:2]
        params, buffers = fused.state()
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                clones = {k: v.clone() for k, v in buffers.items()}
                fused._train(params, clones, x.expand(fused.k, *x.shape))
                fused.eval()
                fused._shared(params, clones, x)
        except Exception as exc:  # noqa: BLE001 - the user's code under vmap: any failure, in one line
            return f"{type(exc).__name__}: " + " ".join(str(exc).split())[:200]
        finally:
            fused.train()
        return None

    def positions(self, j: int) -> slice:
        """The stack rows of the ``j``-th seed still training."""
        return slice(j * self.m, (j + 1) * self.m)

    def epoch(self, epoch: int) -> list[dict[str, float]]:
        """Train one epoch and validate; each seed's metrics, in stack order (one host sync)."""
        t0 = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        losses, correct, probed = self._train()
        if self.schedule is not None:
            self.schedule.step()
        if self.kind == "swa" and epoch - 1 >= self.swa_start:
            assert self.averaged is not None
            self.averaged.update_parameters(self.fused.stack)
            self.swa_updates += 1
        k, m = len(self.alive), self.m
        train_loss = (torch.stack(losses, dim=1).float() @ self.steps.batch_sizes).view(k, m).sum(dim=1)
        parts = [train_loss.unsqueeze(1), correct.view(k, m).sum(dim=1).float().unsqueeze(1),
                 self._evaluate_sums(self.data.x_val, self.data.y_val)]
        if probed is not None:
            parts.append(probed)
        table = torch.cat(parts, dim=1).tolist()  # the epoch's one host sync
        n_seen, n_val = self.steps.n_used * m, len(self.data.y_val)
        seconds = (time.perf_counter() - t0) / k  # each seed's share of the epoch
        out = []
        for j, row in zip(self.alive, table, strict=True):
            metrics = {"train_loss": row[0] / n_seen, "train_acc": row[1] / n_seen,
                       "val_loss": row[2] / n_val, "val_acc": row[3] / n_val, "lr": lr,
                       "epoch_time": seconds}
            if probed is not None:
                metrics.update(zip(self.probe_names, row[4:], strict=True))
            s = self.seeds[j]
            s.result.history.append({"epoch": float(epoch), **metrics})
            s.train_time += seconds
            if s.stopper.update(epoch, metrics) and self.cfg.early_stopping.patience > 0:
                s.best = self._snapshot(self.alive.index(j))
            out.append(metrics)
        return out

    def _train(self) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """One pass over each seed's shuffled training split: per-step losses ``(rows,)``, correct
        predictions per row, and the probe's per-seed readings ``(seeds, 2 * layers)`` (device tensors)."""
        data, steps, fused, m = self.data, self.steps, self.fused, self.m
        bs = steps.batch_size
        perms = torch.stack([torch.randperm(steps.n, generator=self.seeds[j].order) for j in self.alive])
        perms = perms.to(self.device)
        if m > 1:
            perms = perms.repeat_interleave(m, dim=0)  # a seed's members share its batches
        rows = len(perms)
        losses: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        probed: torch.Tensor | None = None
        last = len(steps.starts) - 1
        for i, start in enumerate(steps.starts):
            index = perms[:, start:start + bs]
            # One gather for every network's batch (index_select is cheaper than indexing by a 2-D tensor).
            flat = index.reshape(-1)
            xb = data.x_train.index_select(0, flat).view(rows, -1, *data.input_shape)
            yb = data.y_train.index_select(0, flat).view(rows, -1)
            probing = self.diagnostics and i == last
            if probing:
                logits, act_std = fused.forward_probed(xb)
            else:
                logits = fused(xb)
            per_example = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none")
            loss = per_example.view(rows, -1).mean(dim=1)  # each network's own mean
            objective = loss.sum()
            if steps.l1:
                objective = objective + l1_penalty(self.decayed, steps.l1, stacked=True).sum()
            self.optimizer.zero_grad(set_to_none=True)
            objective.backward()  # type: ignore[no-untyped-call]
            if probing:
                probed = self._read_probe(act_std)
            if steps.clip_name != "none":
                clip_gradients(self.params, steps.clip_name, threshold=steps.clip_threshold, to=steps.clip_to,
                               stacked=True)
            self.optimizer.step()
            if self.kind == "ema":
                assert self.averaged is not None
                self.averaged.update_parameters(self.fused.stack)
            losses.append(loss.detach())
            outputs.append(logits.detach())
            labels.append(yb)
        correct = (torch.cat(outputs, dim=1).argmax(dim=2) == torch.cat(labels, dim=1)).sum(dim=1)
        return losses, correct, probed

    def _read_probe(self, act_std: torch.Tensor) -> torch.Tensor:
        """Gradient norms then activation stds per probed layer, of each seed's first member."""
        params = list(self.fused.stack.parameters())
        norms = []
        for layer in self.probe_weights:
            grads = [params[i].grad for i in layer]
            per_tensor = [torch.linalg.vector_norm(g.flatten(1), dim=1) if g is not None
                          else params[i].new_zeros(len(params[i])) for i, g in zip(layer, grads, strict=True)]
            norms.append(per_tensor[0] if len(per_tensor) == 1
                         else torch.linalg.vector_norm(torch.stack(per_tensor, dim=1), dim=1))
        readings = torch.cat([torch.stack(norms, dim=1), act_std.detach()], dim=1).float()
        return readings[::self.m]

    def _selected_stack(self) -> nn.Module | None:
        """The averaged stack when its predictions count (as :meth:`Evaluator.selected`), else None."""
        if self.averaged is not None and (self.kind == "ema" or self.swa_updates > 0):
            return self.averaged.module
        return None

    @torch.no_grad()
    def _evaluate_sums(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per seed ``[summed cross-entropy, number correct]``, shape ``(seeds, 2)`` (no host sync)."""
        fused, k, m = self.fused, len(self.alive), self.m
        stack = self._selected_stack()
        fused.eval()
        sums = []
        size = self.cfg.trainer.eval_batch_size
        for start in range(0, len(y), size):
            xb, yb = x[start:start + size], y[start:start + size]
            out = fused.forward_shared(xb, stack)
            if self.kind == "ensemble":  # Ensemble's log of the members' mean probabilities
                out = out.softmax(dim=2).view(k, m, *out.shape[1:]).mean(dim=1).clamp_min(1e-12).log()
            loss = F.cross_entropy(out.flatten(0, 1), yb.repeat(k), reduction="none").view(k, -1).sum(dim=1)
            sums.append(torch.stack([loss, (out.argmax(dim=2) == yb).sum(dim=1).to(out.dtype)], dim=1))
        fused.train()
        return sums[0] if len(sums) == 1 else torch.stack(sums).sum(dim=0)

    def _snapshot(self, j: int) -> dict[str, Any]:
        """A copy of the ``j``-th live seed's tensors (its members' and averaged ones)."""
        rows = self.positions(j)
        params, buffers = self.fused.stack.tensors()
        snap: dict[str, Any] = {"live": ([p.detach()[rows].clone() for p in params],
                                         [b[rows].clone() for b in buffers])}
        if self.averaged is not None:
            averaged = self.averaged.module
            snap["averaged"] = ([p.detach()[rows].clone() for p in averaged.parameters()],
                                [b[rows].clone() for b in averaged.buffers()])
            snap["n_averaged"] = int(self.averaged.n_averaged)
        return snap

    def stop_reason(self, metrics: Mapping[str, float], stop_requested: bool, s: _Seed) -> str | None:
        """Why this seed ends after this epoch, or None to go on (``fit``'s rules)."""
        if not (math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])):
            return "diverged"
        if stop_requested:
            return "stopped"
        if s.stopper.should_stop:
            return "early_stopped"
        return None

    def finish(self, j: int, reason: str) -> None:
        """End the ``j``-th live seed as ``fit`` ends a run: restore its best weights into its own
        (unstacked) networks, evaluate the selected model on the test split, fill ``final``."""
        s = self.seeds[self.alive[j]]
        s.result.stop_reason = reason
        state = s.best if s.best is not None else self._snapshot(j)
        evaluator = Evaluator(self.cfg, [SimpleNamespace(model=model) for model in s.models])
        for member, model in enumerate(s.models):
            self.fused.load_into(member, model, state["live"])
        if evaluator.averaged is not None:
            self.fused.load_into(0, evaluator.averaged.module, state["averaged"])
            evaluator.averaged.n_averaged.fill_(state["n_averaged"])  # which model counts (selected)
        finish_result(s.result, evaluator, self.data, self.cfg, s.train_time)

    def drop(self, finished: list[int]) -> None:
        """Take finished seeds (positions among the live ones) out of the stack."""
        keep = [j for j in range(len(self.alive)) if j not in finished]
        if not keep:
            self.alive = []
            return
        rows = torch.tensor([r for j in keep for r in range(j * self.m, (j + 1) * self.m)],
                            device=self.device)
        extra = [self.averaged.module] if self.averaged is not None else []
        self.fused.keep(rows, self.optimizer, *extra)
        self.alive = [self.alive[j] for j in keep]


def _vectorize_by_default(model: nn.Module, device: torch.device) -> bool:
    """Vectorized everywhere but for convolutions on the CPU (see :class:`FusedModel`)."""
    return device.type != "cpu" or not any(isinstance(m, (nn.Conv1d, nn.Conv2d)) for m in model.modules())


def fit_seeds(cfg: DictConfig | Mapping[str, Any], seeds: Sequence[int],
              on_epoch: SeedEpochCallback | None = None, *, data: Dataset | None = None,
              after_epoch: Callable[[int], Any] | None = None,
              vectorize: bool | None = None) -> list[RunResult]:
    """Train one recipe on several seeds as one fused model; one :class:`RunResult` per seed.

    Each result is what ``fit`` returns for the recipe with ``seed`` set to that seed (``cfg.seed``
    itself is not used), up to float32 rounding: same initial weights and data order, per-seed
    clipping, normalised steps, early stopping with best-weight restore, divergence, averaging,
    ensembles and diagnostics. Dropout masks are drawn independently per seed but from one stream, so
    a recipe with dropout is as random as ``fit`` but not draw for draw the same. ``model`` is that
    seed's selected model as a plain module (an :class:`~ablate.averaging.Ensemble`, an averaged model
    or the network), in eval mode, as ``fit`` gives it.

    Times: ``epoch_time`` and ``train_time`` are each seed's share of the fused wall time (an epoch's
    time divided by the seeds that trained in it), so the seeds' train times add up to the wall time.

    Args:
        cfg: A composed config (:func:`ablate.config.compose`), or a mapping of the same shape.
        seeds: Distinct integer seeds, one run each.
        on_epoch: Called as ``on_epoch(index, epoch, metrics)`` (:data:`SeedEpochCallback`) after every
            epoch for each seed still training; a truthy return stops that seed alone.
        data: An already loaded dataset, shared by every seed; else loaded once from ``cfg.data``.
        after_epoch: Called as ``after_epoch(epoch)`` once the epoch's ``on_epoch`` calls are done
            (a search's ``repeats`` prunes on the seeds' mean there); a truthy return stops every seed
            still training (stop reason ``stopped``).
        vectorize: Run the networks vectorized (``vmap``) or looped (:class:`FusedModel`); None
            chooses: vectorized, except convolutional models on the CPU, and a user's model that
            ``vmap`` cannot run.

    Returns:
        One result per seed, in the order of ``seeds``.

    Raises:
        ConfigError: ``seeds`` empty, not integers or repeated (a repeated seed would train the same
            run twice); ``vectorize=True`` for a user's model (``model=custom``) that ``vmap`` cannot
            run. Every trick of the menu trains fused, and any model trains looped.
    """
    seeds = _check_seeds(seeds)
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    device = resolve_device(cfg.trainer.device)
    if device.type == "cpu" and torch.get_num_threads() != cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    run = _FusedRun(cfg, seeds, (data if data is not None else load_data(cfg)).to(device), device, vectorize)
    for epoch in range(1, cfg.trainer.epochs + 1):
        table = run.epoch(epoch)
        finished: list[tuple[int, str]] = []
        for j, metrics in enumerate(table):
            s = run.seeds[run.alive[j]]
            stop_requested = bool(on_epoch(s.index, epoch, metrics)) if on_epoch is not None else False
            reason = run.stop_reason(metrics, stop_requested, s)
            if reason is not None:
                finished.append((j, reason))
        if after_epoch is not None and after_epoch(epoch):
            done = {j for j, _ in finished}
            finished += [(j, "stopped") for j in range(len(table)) if j not in done]
        for j, reason in finished:
            run.finish(j, reason)
        if finished:
            run.drop([j for j, _ in finished])
        if not run.alive:
            break
    for j in range(len(run.alive)):
        run.finish(j, "completed")
    return [s.result for s in run.seeds]
