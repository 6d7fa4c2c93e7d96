"""The worker: ask -> compose the trial's config -> ``fit`` (reporting, pruning) -> tell.

Workers are long-lived processes that share one Optuna storage and pull trials asynchronously: a
freed worker starts the next trial at once, and imports are paid once per worker. ``ablate sweep``
starts them; ``ablate worker <study> --storage URL`` joins a running study from another shell
(:func:`check_join` says whether its study file and overrides match the stored recipe).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from ablate import records as R
from ablate.data import Dataset
from ablate.errors import AblateError, ConfigError
from ablate.sweep.composer import Composed, TrialComposer
from ablate.sweep.confirm import confirmation_done
from ablate.sweep.runs import killed_hook, run_name, trial_tags
from ablate.sweep.samplers import Stream, build_search
from ablate.sweep.spec import compose_study, differ_text, fuse_count, load_spec, recipe_differences
from ablate.sweep.storage import (
    Heartbeat,
    ask_lock,
    budget_held,
    confirm_of,
    fail_and_retry,
    is_finished,
    is_repeat,
    is_surplus,
    open_storage,
    others_hold_the_rest,
    out_of_failures,
    redact,
    redact_text,
    retried_from,
    spent_failures,
    worker_id,
)
from ablate.tracking import WRITER, RunTracker, signals_deferred, track_run
from ablate.train import RunResult, fit, load_data, resolve_device

__all__ = ["Worker", "check_join", "recipe_differences", "run_worker", "suggest"]


def suggest(trial: Trial, key: str, dist: BaseDistribution) -> Any:
    """Sample one parameter through the trial's public ``suggest_*`` API."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"unsupported distribution {dist!r}")


@dataclass
class _Outcome:
    """How a trained trial ended, as Optuna is told and MLflow records it."""

    value: float  # the study's metric at its best epoch (records.best_value)
    outcome: str  # records.COMPLETED | PRUNED | DIVERGED
    state: TrialState
    pruned_at: int | None = None


@dataclass
class _Trial:
    """The trial in hand: Optuna's handle, its storage id and sampled parameters."""

    trial: Trial
    storage_id: int
    params: dict[str, Any] = field(default_factory=dict)
    # A confirmation trial's queued values beside its parameters: seed and ATTR_CONFIRM_OF
    queued: dict[str, Any] = field(default_factory=dict)

    @property
    def confirm_of(self) -> int | None:
        """The search trial this one trains again on another seed (None: a trial of the search)."""
        of = self.queued.get(R.ATTR_CONFIRM_OF)
        return None if of is None else int(of)


class Worker:
    """Runs trials of one study until it has ``n_trials`` finished trials (or the deadline passes).

    Args:
        study_name: The study to join (created by ``ablate sweep``).
        storage_url: Its Optuna storage (journal file path or RDB URL).
        index: This worker's index in its ``ablate sweep`` session (a restarted worker's is
            raised past the session's others): with the session, sets the sampler's seed.
        joining: A worker joining from another shell (``ablate worker``), outside any session:
            its sampler's seed comes from its process and the trials at the moment it joined
            (:mod:`ablate.sweep.samplers` says why no two samplers of a study share a seed).
        deadline: ``time.time()`` after which no new trial starts.
        before_ask: Called before each ask (benchmarks use it to impose a batch barrier).
        verbose: Print a line per trial.
        composed: :attr:`TrialComposer.composed` of this study, made by the supervisor; None
            composes here.

    The environment's ``ABLATE_THREADS`` / ``ABLATE_DEVICE`` (set by the supervisor) set every
    trial's ``trainer.threads`` / ``trainer.device``; ``ABLATE_TRACKING_URI`` gives the MLflow URL
    when the stored one had its password removed.
    """

    def __init__(self, study_name: str, storage_url: str, *, index: int = 0, joining: bool = False,
                 deadline: float | None = None, before_ask: Callable[[], None] | None = None,
                 verbose: bool = True, composed: Composed | None = None) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = open_storage(storage_url, heartbeat_interval=None)
        spec = load_spec(storage, study_name, storage_url).with_secrets(
            storage_url, os.environ.get("ABLATE_TRACKING_URI"))
        self.spec, self.deadline, self.before_ask, self.verbose = spec, deadline, before_ask, verbose
        self.heart: Heartbeat | None = None
        if "://" in storage_url:  # an RDB storage: heartbeats, with the study's own settings
            storage = open_storage(storage_url, heartbeat_interval=spec.heartbeat_interval,
                                   grace_period=spec.grace_period, on_killed=killed_hook(spec.tracking_uri))
            self.heart = Heartbeat(storage, spec.heartbeat_interval)
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        self.storage, self.storage_url = storage, storage_url
        self.study_id = storage.get_study_id_from_name(study_name)
        self.device = os.environ.get("ABLATE_DEVICE")
        self.composer = TrialComposer(spec.space, self._trial_fields(), composed=composed)
        base, _ = self.composer.composed
        search = build_search(spec.sampler, spec.pruner, spec.space.distributions, spec.params,
                              epochs=base.trainer.epochs, stream=self._stream(index, joining))
        self.sampler = search.sampler
        # A grid has as many trials as points: asked past them, a worker would rerun a point that
        # another worker is still running (Optuna's grid re-evaluates one once all have started).
        points = search.points
        self.n_trials = spec.n_trials if points is None else min(spec.n_trials or points, points)
        self.study = optuna.load_study(study_name=study_name, storage=storage, sampler=self.sampler,
                                       pruner=search.pruner)
        self.parent_run_id = self.study.user_attrs.get(R.ATTR_PARENT)
        self.failures_from = int(self.study.user_attrs.get(R.ATTR_SESSION_START, 0))
        self.me = worker_id()
        self.ppid = os.getppid()
        self.data_cache: dict[Any, Dataset] = {}
        self.telling: set[int] = set()  # trials whose last MLflow writes and tell are queued
        self.idle_since: float | None = None  # adaptive seeds: since when no trial is queued or running
        # An ablation's queued seeds of one arm trained together (ablate.fused), up to this many
        device = resolve_device(self.device or str(base.trainer.device)).type
        self.fuse = fuse_count(spec.fuse_seeds, device) if spec.design else 1

    def _stream(self, index: int, joining: bool) -> Stream:
        """Which of the study's samplers this worker's is (:func:`~ablate.sweep.samplers.stream_seed`).

        The session is the number of trials the storage held when the last ``ablate sweep`` of the
        study began, recorded by it before its workers started (0 for a study never resumed).
        """
        session = int(self.storage.get_study_user_attrs(self.study_id).get(R.ATTR_SESSION_START, 0))
        if not joining:
            return (session, index)
        trials = len(self.storage.get_all_trials(self.study_id, deepcopy=False))
        return (session, "join", worker_id(), trials)

    def _trial_fields(self) -> dict[str, Any]:
        """Config fields this worker sets on every trial: where runs go, threads, device."""
        extra: dict[str, Any] = {"tracking.experiment": self.spec.experiment}
        if self.spec.tracking_uri:
            extra["tracking.uri"] = self.spec.tracking_uri
        threads = os.environ.get("ABLATE_THREADS")
        if threads:
            extra["trainer.threads"] = int(threads)
        device = os.environ.get("ABLATE_DEVICE")
        if device:
            extra["trainer.device"] = device
        return extra

    def run(self) -> int:
        """Ask and run trials until the study is done; returns how many this worker trained."""
        ran = 0
        try:
            while (step := self._next_step()) != "stop":
                if step == "wait":
                    continue
                held = self._ask()
                if held == "surplus" and self.spec.confirm is None:
                    break
                if held == "held":  # the others' running trials cover the budget after all
                    continue
                if held == "surplus" or held == "repeat":  # with confirm, its runs may follow the search
                    continue
                group = [held, *self._claim_same_arm(held)] if self.fuse > 1 else [held]
                ran += self._run_trial(held) if len(group) == 1 else self._run_fused(group)
        finally:
            WRITER.drain()  # never leave with a tell queued (a no-op when none is)
        return ran

    # --- the steps ---------------------------------------------------------------------------------

    def _next_step(self) -> str:
        """``ask``, ``wait`` (a moment passed, look again) or ``stop``."""
        spec, n_trials = self.spec, self.n_trials
        trials = self.study.get_trials(deepcopy=False)
        search = trials if spec.confirm is None else [t for t in trials if confirm_of(t) is None]
        if n_trials is not None and sum(map(is_finished, search)) + len(self.telling) >= n_trials:
            if self.telling:  # the queued tells may yet fail: wait for them, then look again
                WRITER.drain()
                return "wait"
            return "stop" if spec.confirm is None else self._confirming(trials)
        if (spec.confirm is not None and n_trials is not None
                and sum(is_finished(t) or t.state == TrialState.RUNNING for t in search) >= n_trials
                and not any(t.state == TrialState.WAITING for t in search)):
            return self._confirming(trials)  # others finish the search: asking would make surplus trials
        if self.deadline is not None and time.time() >= self.deadline:
            return "stop"
        last = spent_failures(trials, spec.max_failures, since=self.failures_from)
        if last is not None:  # every trial fails (no data, a bug): stop asking, say why
            raise out_of_failures(spec.name, last, spec.max_failures, "this worker's output above")
        if self.ppid != 1 and os.getppid() != self.ppid:  # orphaned
            return "stop"
        if self.sampler.exhausted:
            if spec.confirm is None:
                return "stop"
            if R.ATTR_SEARCH_EXHAUSTED not in self.study.user_attrs:
                self.study.set_user_attr(R.ATTR_SEARCH_EXHAUSTED, True)  # the search is over: confirm it
            return self._confirming(trials)
        if self.heart is not None:
            self.heart.hold(None)
            self.heart.fail_stale(self.study)
            if others_hold_the_rest(self.study.get_trials(deepcopy=False), n_trials=n_trials,
                                    design=bool(spec.design)):
                time.sleep(min(2.0, spec.heartbeat_interval))
                return "wait"
        if (spec.confirm is None and not spec.design  # after fail_stale: a dead worker's trial is no cover
                and budget_held(self.study.get_trials(deepcopy=False), n_trials)):
            if self.telling:  # one of ours may yet fail: wait for the tells, then look again
                WRITER.drain()
            else:  # others' running trials cover the budget: one may fail and need replacing
                time.sleep(_HELD_WAIT)
            return "wait"
        if spec.design and not any(t.state == TrialState.WAITING for t in trials):
            if spec.adaptive is None or R.ATTR_SEEDS_STOP in self.study.user_attrs:
                return "stop"  # an ablation runs its queued (arm, seed) trials and nothing else
            return self._between_rounds(trials)
        self.idle_since = None
        return "ask"

    def _confirming(self, trials: Sequence[FrozenTrial]) -> str:
        """The search is done: ``ask`` for its queued confirmation runs, ``stop`` once the supervisor
        recorded them all done (or the deadline passed), else wait for it to queue them (as between
        rounds of seeds)."""
        if self.deadline is not None and time.time() >= self.deadline:
            return "stop"
        if any(t.state == TrialState.WAITING and confirm_of(t) is not None for t in trials):
            self.idle_since = None
            return "ask"
        assert self.spec.confirm is not None
        if confirmation_done(self.study, self.spec.confirm, trials) is not None:
            return "stop"
        return self._between_rounds(trials)

    def _between_rounds(self, trials: Sequence[FrozenTrial]) -> str:
        """Adaptive seeds: wait while the round ends and the supervisor queues the next one.

        ``wait`` while a trial is running or being told (the round is not over) and for
        :data:`ROUND_WAIT` seconds after (the supervisor queues the next round, or records that
        there is none, within a second of the last tell); ``stop`` after that (no supervisor).
        """
        if self.telling:
            WRITER.drain()
            return "wait"
        now = time.time()
        if any(t.state == TrialState.RUNNING for t in trials):
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now
        elif now - self.idle_since >= ROUND_WAIT:
            return "stop"
        time.sleep(0.5)
        return "wait"

    def _ask(self) -> _Trial | Literal["held", "surplus", "repeat"]:
        """Ask for a trial and mark it ours; ``held`` (nothing asked) when, looked at again under
        the storage's ask lock, the budget is covered (:func:`budget_held`) or an ablation's queue
        is empty (another worker took its last pair since this one looked: asked anyway, Optuna
        would make a new trial and its sampler draw an (arm, seed) the rule never queued); or close
        it unrun: ``surplus`` when the budget is met all the same (an RDB storage without an ask
        lock, whose workers asked in the same instant), ``repeat`` when an earlier trial holds its
        ablation pair (:func:`is_repeat`) or an ablation's trial was not queued (such a storage).

        A surplus trial is told FAIL (outcome ``surplus``), not PRUNED: samplers learn from pruned
        trials and ablate counts them towards ``n_trials``, while a FAIL is ignored by both.
        """
        if self.before_ask is not None:
            self.before_ask()
        with ask_lock(self.storage_url):
            trials = self.study.get_trials(deepcopy=False)
            if self.spec.design and not any(t.state == TrialState.WAITING for t in trials):
                return "held"
            if self.spec.confirm is None and not self.spec.design and budget_held(trials, self.n_trials):
                return "held"
            trial = self.study.ask()
        storage_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        if self.heart is not None:
            self.heart.hold(storage_id)
        return self._hold(trial, storage_id)

    def _hold(self, trial: Trial, storage_id: int) -> _Trial | Literal["surplus", "repeat"]:
        """Record an asked (or claimed) trial as this worker's and read its parameters; or close it
        unrun, ``surplus`` or ``repeat`` (see :meth:`_ask`)."""
        n_trials = self.n_trials
        system_attrs = self.storage.get_trial(storage_id).system_attrs
        if self.spec.design and "fixed_params" not in system_attrs:  # sampled, not queued: never run
            trial.set_user_attr(R.ATTR_OUTCOME, R.SURPLUS)
            self.study.tell(trial, state=TrialState.FAIL)
            return "repeat"
        queued = system_attrs.get("fixed_params", {})
        confirm = ({"seed": queued["seed"], R.ATTR_CONFIRM_OF: queued[R.ATTR_CONFIRM_OF]}
                   if R.ATTR_CONFIRM_OF in queued else {})
        if (not confirm and n_trials is not None
                and is_surplus(self.study.get_trials(deepcopy=False), trial.number, n_trials)):
            trial.set_user_attr(R.ATTR_OUTCOME, R.SURPLUS)
            self.study.tell(trial, state=TrialState.FAIL)
            return "surplus"
        trial.set_user_attr(R.ATTR_WORKER, self.me)
        if self.heart is not None:
            trial.set_user_attr(R.ATTR_HEARTBEAT, self.spec.heartbeat_interval)
            retry_of = retried_from(self.storage.get_trial(storage_id))
            if retry_of is not None:  # queued again by Optuna's stale-trial callback
                trial.set_user_attr(R.ATTR_RETRY_OF, retry_of)
        if self.device:
            trial.set_user_attr(R.ATTR_DEVICE, self.device)
        if confirm:
            trial.set_user_attr(R.ATTR_CONFIRM_OF, confirm[R.ATTR_CONFIRM_OF])
        params = {key: suggest(trial, key, dist) for key, dist in self.spec.space.distributions.items()}
        if (self.spec.design or confirm) and is_repeat(self.study.get_trials(deepcopy=False), trial.number,
                                                       {**params, **confirm}):
            trial.set_user_attr(R.ATTR_OUTCOME, R.SURPLUS)  # its pair is held by an earlier trial
            self.study.tell(trial, state=TrialState.FAIL)
            return "repeat"
        return _Trial(trial, storage_id, params, confirm)

    def _claim_same_arm(self, first: _Trial) -> list[_Trial]:
        """Claim up to ``fuse - 1`` more queued trials of ``first``'s arm (lowest seeds first) to
        train with it as one fused model; each is held and recorded as if asked.

        Optuna's ask takes the oldest queued trial, and the queue is seed-major (every arm's seed 0,
        then seed 1, ...), so the others are claimed by id, as ask claims one: the storage's
        RUNNING transition succeeds for one worker only.
        """
        arm = first.params.get("arm")
        if arm is None or first.confirm_of is not None:
            return []
        claimed: list[_Trial] = []
        with ask_lock(self.storage_url):
            waiting = self.storage.get_all_trials(self.study_id, deepcopy=False,
                                                  states=(TrialState.WAITING,))
            for frozen in sorted(waiting, key=lambda t: (_queued(t).get("seed", 0), t.number)):
                if len(claimed) >= self.fuse - 1:
                    break
                if _queued(frozen).get("arm") != arm:
                    continue
                try:
                    if not self.storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                        continue  # another worker claimed it first
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue
                held = self._hold(optuna.trial.Trial(self.study, frozen._trial_id), frozen._trial_id)
                if isinstance(held, _Trial):
                    claimed.append(held)
        if self.heart is not None and claimed:
            self.heart.hold(first.storage_id, *(c.storage_id for c in claimed))
        return claimed

    def _compose(self, held: _Trial) -> DictConfig | None:
        """The trial's config; None (the trial failed, told) when it cannot be made."""
        try:
            seed = {"seed": held.queued["seed"]} if held.confirm_of is not None else {}
            return self.composer({**held.params, **seed}, run_name(self.spec.name, held.trial.number))
        except AblateError as exc:
            self._tell_failed(held.trial, exc)
            return None

    def _data(self, cfg: DictConfig) -> Dataset:
        """The trial's data, loaded once per worker for each ``data`` node."""
        key = tuple(sorted(cfg.data.items()))
        if key not in self.data_cache:
            self.data_cache[key] = load_data(cfg)
        return self.data_cache[key]

    def _run_trial(self, held: _Trial) -> int:
        """Compose, load, fit and (on the writer thread) tell one trial; 1 when it trained.

        The data loads inside the trial's run: data that cannot be loaded (files absent) fails the
        run, with its reason, as any other error of the trial does.
        """
        cfg = self._compose(held)
        if cfg is None:
            return 0
        if self.spec.repeats > 1 and held.confirm_of is None:
            return self._run_repeats(held, cfg)
        spec, trial = self.spec, held.trial
        tags = trial_tags(study=spec.name, number=trial.number, worker=self.me,
                          device=self.device or str(cfg.trainer.device), arm=held.params.get("arm"),
                          design=spec.design, confirm_of=held.confirm_of)

        def train() -> int:
            with track_run(cfg, tags=tags, parent_run_id=self.parent_run_id, background=True,
                           on_created=functools.partial(trial.set_user_attr, R.ATTR_RUN)) as tracker:
                data = self._data(cfg)
                pruned_at: list[int] = []
                # A confirmation run trains to the end: its value is one seed of the candidate's mean.
                # Only a pruner reads the per-epoch values Optuna is told (the curves are in MLflow),
                # and each is a write to the storage: without one, or unprunable, none are told.
                prunable = held.confirm_of is None and spec.pruner["name"] != "none"
                result = fit(cfg, functools.partial(self._on_epoch, tracker, trial, pruned_at, prunable),
                             data=data)
                self._finish(held, tracker, result, self._outcome(result, pruned_at))
            return 1
        return self._guarded([held], train)

    def _guarded(self, helds: Sequence[_Trial], train: Callable[[], int]) -> int:
        """``train()``, the trials it trains: on Ctrl-C each is failed and queued again (a resume reruns
        it), on any other error (a bug, a CUDA error) each is failed with the reason and the sweep goes
        on (0 trained)."""
        try:
            return train()
        except KeyboardInterrupt:
            with signals_deferred():  # a half-written journal entry would stall everyone
                for held in helds:
                    fail_and_retry(self.study, held.trial.number, {**held.params, **held.queued})
            raise
        except Exception as exc:  # noqa: BLE001 - record it, keep the sweep going
            for held in helds:
                self._tell_failed(held.trial, exc)
            return 0

    def _run_repeats(self, held: _Trial, cfg: DictConfig) -> int:
        """A search trial on ``repeats`` seeds (its seed, + 1, ...) trained as one fused model.

        Optuna is told, and prunes on, the seeds' mean: per epoch the mean of each seed's latest
        value (a seed stopped early keeps its last), at the end the mean of each seed's best. The
        trial's MLflow run holds the mean curve and the seeds' mean final metrics; each seed is a run
        of its own nested under it. A diverged seed (no finite value) makes the trial diverged.
        """
        from ablate.fused import fit_seeds

        spec, trial, k = self.spec, held.trial, self.spec.repeats
        seeds = [int(cfg.seed) + i for i in range(k)]
        base = trial_tags(study=spec.name, number=trial.number, worker=self.me,
                          device=self.device or str(cfg.trainer.device))

        def train() -> int:
            with track_run(cfg, tags={**base, R.TAG_REPEATS: str(k)}, parent_run_id=self.parent_run_id,
                           background=True, on_created=functools.partial(trial.set_user_attr, R.ATTR_RUN)
                           ) as tracker, contextlib.ExitStack() as stack:
                runs = []
                for seed in seeds:
                    one = cfg.copy()
                    one.seed = seed
                    one.tracking.run_name = f"{cfg.tracking.run_name}-s{seed}"
                    runs.append(stack.enter_context(track_run(
                        one, tags={**base, R.TAG_FUSED: str(k)}, parent=tracker, background=True)))
                latest = [math.nan] * k
                pruned_at: list[int] = []
                prunable = spec.pruner["name"] != "none"

                def on_epoch(index: int, epoch: int, metrics: Mapping[str, float]) -> bool:
                    runs[index](epoch, metrics)
                    latest[index] = metrics.get(spec.metric, math.nan)
                    return False

                def after_epoch(epoch: int) -> bool:  # the seeds' mean, as one trial's epoch
                    return self._on_epoch(tracker, trial, pruned_at, prunable, epoch,
                                          {spec.metric: sum(latest) / k})

                results = fit_seeds(cfg, seeds, on_epoch, data=self._data(cfg), after_epoch=after_epoch)
                outcomes = [self._outcome(r, pruned_at) for r in results]
                for run, result, out in zip(runs, results, outcomes, strict=True):
                    final = {**result.final, R.best_metric(spec.metric): out.value}
                    run.finish(final, R.PRUNED if out.pruned_at is not None else result.stop_reason,
                               tags={R.TAG_STATUS: out.outcome}, then=lambda error: None)
                self._finish(held, tracker, _mean_result(results), _mean_outcome(outcomes))
            return 1
        return self._guarded([held], train)

    def _run_fused(self, group: Sequence[_Trial]) -> int:
        """Train the trials of one arm (seeds of one recipe) as one fused model (``fit_seeds``); each
        keeps its own MLflow run, pruning and tell, as :meth:`_run_trial` gives it. Returns how many
        trained.

        Their configs differ in the seed alone (one arm); one that cannot be composed fails alone.
        An error of the fused training fails every trial of the group with its reason.
        """
        from ablate.fused import fit_seeds  # torch.func: only a worker that fuses needs it

        composed = [(held, self._compose(held)) for held in group]
        ready = [(held, cfg) for held, cfg in composed if cfg is not None]
        if not ready:
            return 0
        spec = self.spec

        def train() -> int:
            with contextlib.ExitStack() as stack:
                trackers: list[RunTracker] = []
                for held, cfg in ready:
                    tags = trial_tags(study=spec.name, number=held.trial.number, worker=self.me,
                                      device=self.device or str(cfg.trainer.device),
                                      arm=held.params.get("arm"), design=spec.design,
                                      confirm_of=held.confirm_of, fused=len(ready))
                    trackers.append(stack.enter_context(track_run(
                        cfg, tags=tags, parent_run_id=self.parent_run_id, background=True,
                        on_created=functools.partial(held.trial.set_user_attr, R.ATTR_RUN))))
                cfg = ready[0][1]
                pruned_at: list[list[int]] = [[] for _ in ready]
                prunable = spec.pruner["name"] != "none"

                def on_epoch(index: int, epoch: int, metrics: Mapping[str, float]) -> bool:
                    return self._on_epoch(trackers[index], ready[index][0].trial, pruned_at[index],
                                          prunable, epoch, metrics)

                results = fit_seeds(cfg, [int(c.seed) for _, c in ready], on_epoch, data=self._data(cfg))
                for i, result in enumerate(results):
                    self._finish(ready[i][0], trackers[i], result, self._outcome(result, pruned_at[i]))
            return len(ready)
        return self._guarded([held for held, _ in ready], train)

    def _on_epoch(self, tracker: RunTracker, trial: Trial, pruned_at: list[int], prunable: bool, epoch: int,
                  metrics: Mapping[str, float]) -> bool:
        """Record the epoch; tell Optuna the study's metric when it may prune; True (stop) when pruned."""
        tracker(epoch, metrics)
        value = metrics.get(self.spec.metric, math.nan)
        if prunable and math.isfinite(value):
            with signals_deferred():  # a half-written journal entry would stall everyone
                trial.report(value, epoch)
                prune = trial.should_prune()
            if prune:
                pruned_at.append(epoch)
                return True
        return False

    def _outcome(self, result: RunResult, pruned_at: Sequence[int]) -> _Outcome:
        value = R.best_value(result.history, self.spec.metric, self.spec.direction)
        if pruned_at:
            return _Outcome(value, R.PRUNED, TrialState.PRUNED, pruned_at[0])
        if result.stop_reason == R.DIVERGED:
            state = TrialState.COMPLETE if math.isfinite(value) else TrialState.FAIL
            return _Outcome(value, R.DIVERGED, state)
        return _Outcome(value, R.COMPLETED, TrialState.COMPLETE)

    def _finish(self, held: _Trial, tracker: RunTracker, result: RunResult, out: _Outcome) -> None:
        """End the trial's run and then tell Optuna, both on the writer thread.

        The next trial starts meanwhile. This one stays RUNNING until the tell, so a worker killed
        in between leaves it to be failed and retried like any other.
        """
        number = held.trial.number
        self.telling.add(number)
        # The value told to Optuna, recorded under the name the report reads (best_val_loss, ...).
        final = {**result.final, R.best_metric(self.spec.metric): out.value}
        tags: dict[str, Any] = {R.TAG_OPTUNA_STATE: out.state.name, R.TAG_STATUS: out.outcome}
        if out.pruned_at is not None:
            tags[R.TAG_PRUNED_AT] = out.pruned_at
        sampled = {f"{R.PARAM_SAMPLED}{k}": v for k, v in held.params.items()}
        tracker.finish(final, R.PRUNED if out.pruned_at is not None else result.stop_reason, params=sampled,
                       tags=tags, then=functools.partial(self._tell, held.trial, result, out))

    def _tell(self, trial: Trial, result: RunResult, out: _Outcome, error: BaseException | None) -> None:
        """The tell that follows a trial's last MLflow write (on the writer thread)."""
        try:
            if error is not None:  # its run could not be recorded: the trial failed
                self._tell_failed(trial, error)
                return
            trial.set_user_attr(R.ATTR_OUTCOME, out.outcome)
            trial.set_user_attr(R.ATTR_EPOCHS_RUN, result.epochs_run)
            trial.set_user_attr(R.ATTR_TRAIN_TIME, result.final["train_time"])
            if out.state == TrialState.COMPLETE:
                self.study.tell(trial, out.value)
            else:
                self.study.tell(trial, state=out.state)
            if self.verbose:  # one line per trial in the worker's log
                print(f"{_now()} trial {trial.number} {out.outcome}: {_params(trial.params)}; "
                      f"{self.spec.metric}={out.value:.4f} after {result.epochs_run} epochs, "
                      f"{result.final['train_time']:.1f} s", flush=True)
        finally:
            self.telling.discard(trial.number)

    def _tell_failed(self, trial: Trial, exc: BaseException) -> None:
        """Tell a trial that raised: FAIL, its reason (the ``max_failures`` line shows the last)."""
        secrets = (self.spec.storage, self.spec.tracking_uri)
        reason = redact_text(str(exc) if isinstance(exc, AblateError) else f"{type(exc).__name__}: {exc}",
                             *secrets)
        trial.set_user_attr(R.ATTR_OUTCOME, R.FAILED)
        trial.set_user_attr(R.ATTR_ERROR, reason[:1000])
        self.study.tell(trial, state=TrialState.FAIL)
        if self.verbose:  # the traceback goes to the worker's log, which the sweep's last line names
            print(f"{_now()} trial {trial.number} failed: {_params(trial.params)}; {reason}", flush=True)
            print(redact_text("".join(traceback.format_exception(exc)), *secrets), end="", flush=True)


def _mean_result(results: Sequence[RunResult]) -> RunResult:
    """One trial's result from its seeds': the mean of each final metric, the longest run's epochs, the
    seeds' training time together, and the worst stop (diverged over pruned / stopped / completed)."""
    final = {key: sum(r.final[key] for r in results) / len(results) for key in results[0].final}
    final["train_time"] = sum(r.final["train_time"] for r in results)
    reasons = [r.stop_reason for r in results]
    stop = next((s for s in (R.DIVERGED, "stopped", "early_stopped") if s in reasons), "completed")
    return RunResult(history=max((r.history for r in results), key=len), final=final, stop_reason=stop)


def _mean_outcome(outcomes: Sequence[_Outcome]) -> _Outcome:
    """The trial's outcome from its seeds': the mean of their values, pruned when they were, diverged
    (told FAIL when the mean is not finite) when one diverged."""
    value = sum(o.value for o in outcomes) / len(outcomes)
    first = outcomes[0]
    if first.pruned_at is not None:
        return _Outcome(value, R.PRUNED, TrialState.PRUNED, first.pruned_at)
    if any(o.outcome == R.DIVERGED for o in outcomes):
        return _Outcome(value, R.DIVERGED, TrialState.COMPLETE if math.isfinite(value) else TrialState.FAIL)
    return _Outcome(value, R.COMPLETED, TrialState.COMPLETE)


def _queued(trial: FrozenTrial) -> dict[str, Any]:
    """The values a trial was queued with (``Study.enqueue_trial``'s documented system attribute)."""
    queued: dict[str, Any] = trial.system_attrs.get("fixed_params", {})
    return queued


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def _params(params: dict[str, Any]) -> str:
    """A trial's arm and seed, or its sampled values, as ``k=v`` (floats to 4 significant digits)."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) or "-"


_HELD_WAIT = 0.25
"""Seconds a worker waits while other workers' running trials cover the budget."""

ROUND_WAIT = 60.0
"""Seconds a worker of an adaptive study waits, with nothing queued or running, for the next round."""


def run_worker(study_name: str, storage_url: str, *, index: int = 0, joining: bool = False,
               deadline: float | None = None, before_ask: Callable[[], None] | None = None,
               verbose: bool = True, composed: Composed | None = None) -> int:
    """Run trials of a study until it has ``n_trials`` finished trials; see :class:`Worker`.

    Returns:
        The number of trials this worker trained.
    """
    return Worker(study_name, storage_url, index=index, joining=joining, deadline=deadline,
                  before_ask=before_ask, verbose=verbose, composed=composed).run()


# --- joining a running study --------------------------------------------------------------------

_EXECUTION = ("devices", "trials_per_device", "workers", "storage")  # how a worker runs, not what


def check_join(study_name: str, storage_url: str | None, overrides: Sequence[str] = (), *,
               cwd: str | Path | None = None) -> dict[str, Any]:
    """What ``ablate worker <study> [overrides]`` may join with: its execution overrides.

    With recipe overrides, or a study file ``./sweeps/<study>.yaml`` here, the study is composed
    and its recipe compared with the stored one (the stored spec is what the worker runs);
    execution overrides (``devices=[1]``) are returned as values.

    Raises:
        AblateError: another recipe (naming what differs), no such study, a bad override.
    """
    execution: dict[str, Any] = {}
    recipe = []
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if key in _EXECUTION:
            try:
                execution[key] = OverridesParser.create().parse_override(override).value()
            except Exception:  # noqa: BLE001 - Hydra's grammar errors: one line naming the field
                value = redact(override.partition("=")[2])
                raise ConfigError(key, value, "a value like devices=[0]") from None
        else:
            recipe.append(override)
    local_file = Path(cwd or os.getcwd()) / "sweeps" / f"{study_name}.yaml"
    storage_url = storage_url or execution.get("storage")
    if storage_url and (recipe or local_file.is_file()):
        local = compose_study(study_name, overrides, cwd=cwd)
        stored = load_spec(open_storage(storage_url, heartbeat_interval=None), study_name, storage_url)
        differ = recipe_differences(stored.recipe, local.recipe)
        if differ:
            where = (f"sweeps/{study_name}.yaml" if local_file.is_file() else f"study file {study_name!r}")
            where += " with these overrides" if recipe else ""
            raise AblateError(f"study: {study_name!r} in {redact(storage_url)} has another recipe than "
                              f"{where} "
                              f"here ({differ_text(differ)}); "
                              "run the same study file and overrides")
    return execution
