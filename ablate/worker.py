"""The worker loop: ask -> the trial's overrides -> compose -> ``fit`` (reporting, pruning) -> tell.

Workers are long-lived processes that share one Optuna storage and pull trials asynchronously: a
freed worker starts the next trial at once, and imports are paid once per worker. ``ablate sweep``
starts them; ``ablate worker <study> --storage URL`` joins a running study from another shell.
"""

from __future__ import annotations

import functools
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ablate.errors import AblateError, ConfigError
from ablate.study import StudySpec, build_pruner, build_sampler, open_storage, redact

__all__ = ["SPEC_ATTR", "PARENT_ATTR", "count_states", "is_finished", "load_spec", "run_worker",
           "suggest"]

SPEC_ATTR = "ablate.spec"  # the study's definition, so every worker runs the same recipe
PARENT_ATTR = "ablate.mlflow_parent_run_id"
WORKER_ATTR = "ablate.worker"  # host:pid of the process that holds the trial
OUTCOME_ATTR = "ablate.outcome"  # completed | pruned | diverged | failed | surplus
RUN_ATTR = "ablate.mlflow_run_id"
RETRY_ATTR = "ablate.retry_of"  # on a queued trial: the number of the killed trial it reruns
HEARTBEAT_ATTR = "ablate.heartbeat_interval"  # on a trial whose worker records heartbeats (RDB)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def suggest(trial: Any, key: str, dist: Any) -> Any:
    """Sample one parameter through the trial's public ``suggest_*`` API."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
    raise TypeError(f"unsupported distribution {dist!r}")


def is_finished(trial: Any) -> bool:
    """Complete, pruned, or diverged: an outcome that counts towards ``n_trials``."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and trial.user_attrs.get(OUTCOME_ATTR) == "diverged")


def count_states(trials: list[Any]) -> dict[str, int]:
    """Counts by outcome: complete, pruned, diverged, failed, running, waiting."""
    from optuna.trial import TrialState

    counts = dict.fromkeys(("complete", "pruned", "diverged", "failed", "killed", "running", "waiting"), 0)
    retried = {t.user_attrs.get(RETRY_ATTR) for t in trials} | {retried_from(t) for t in trials}
    retried.discard(None)
    for t in trials:
        outcome = t.user_attrs.get(OUTCOME_ATTR)
        if outcome == "diverged":
            counts["diverged"] += 1
        elif t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
        elif t.state == TrialState.RUNNING:
            counts["running"] += 1
        elif t.state == TrialState.WAITING:
            counts["waiting"] += 1
        elif t.number in retried:
            counts["killed"] += 1  # and queued again
        elif outcome != "surplus":  # a surplus trial was asked near the end and never ran
            counts["failed"] += 1
    counts["finished"] = counts["complete"] + counts["pruned"] + counts["diverged"]
    return counts


def retried_from(trial: Any) -> int | None:
    """The trial that Optuna's stale-trial callback queued ``trial`` to rerun, else None.

    That is the last entry of ``RetryHeartbeatStaleTrialCallback.retry_history(trial)`` (read from
    the system attrs it documents, as the accessor warns as experimental), not
    ``retried_trial_number``, which names the first trial of a chain of retries.
    """
    history = trial.system_attrs.get("retry_history") or []
    return int(history[-1]) if history else None


def stale_trial_callback(max_retry: int | None = 3) -> tuple[str, Callable[[Any, Any], None]]:
    """The RDBStorage keyword and callback that retry a trial whose worker stopped heart-beating.

    Optuna's retry callback queues the trial again (same params, distributions and user attrs;
    ``failed_trial`` / ``retry_history`` system attrs); ablate also ends its MLflow run KILLED.
    The worker that picks the retry up sets ``ablate.retry_of`` (see :func:`retried_from`).
    """
    import inspect
    import warnings

    import optuna

    storages = optuna.storages
    retry_class = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = retry_class(max_retry=max_retry)
    keyword = ("heartbeat_stale_trial_callback"
               if "heartbeat_stale_trial_callback" in inspect.signature(storages.RDBStorage).parameters
               else "failed_trial_callback")

    def callback(study: Any, trial: Any) -> None:
        retry(study, trial)
        _end_killed_run(study, trial)

    return keyword, callback


class _Heartbeat:
    """Records the held trial's heartbeat every ``interval`` seconds, as ``Study.optimize`` does.

    Optuna beats only inside ``optimize``; workers ask and tell, so they beat themselves. Workers
    anywhere then fail (and queue again) a trial whose worker went silent for the grace period.
    """

    def __init__(self, storage: Any, interval: int) -> None:
        import threading

        self.storage, self.interval, self.trial_id = storage, interval, None
        self.stopped = threading.Event()
        threading.Thread(target=self._run, name="ablate-heartbeat", daemon=True).start()

    def hold(self, trial_id: int | None) -> None:
        self.trial_id = trial_id
        if trial_id is not None:
            self.storage.record_heartbeat(trial_id)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            trial_id = self.trial_id
            if trial_id is not None:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001, S110 - a database hiccup: the next beat tries again
                    pass

    def fail_stale(self, study: Any) -> None:
        """Fail the study's trials whose worker went silent; Optuna's callback queues them again."""
        import warnings

        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def _others_hold_the_rest(trials: list[Any], spec: StudySpec) -> bool:
    """True when trials running elsewhere (with heartbeats) cover what is left to run.

    Asking now would only make a surplus trial, yet one of them may still die and be queued
    again: the worker waits instead of leaving.
    """
    from optuna.trial import TrialState

    if any(t.state == TrialState.WAITING for t in trials):
        return False
    beating = sum(t.state == TrialState.RUNNING and HEARTBEAT_ATTR in t.user_attrs for t in trials)
    if not beating:
        return False
    return bool(spec.design) or (spec.n_trials is not None
                                 and sum(map(is_finished, trials)) + beating >= spec.n_trials)


def _load_study(study_name: str, storage_url: str) -> Any:
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage_url, heartbeat_interval=None))
    except KeyError:
        raise AblateError(f"study: no study {study_name!r} in {redact(storage_url)} "
                          "(ablate sweep creates it)") from None


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
    import json

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ablate.study import compose_study

    execution, recipe = {}, []
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if key in _EXECUTION:
            try:
                execution[key] = OverridesParser.create().parse_override(override).value()
            except Exception:  # noqa: BLE001 - Hydra's grammar errors: one line naming the field
                raise ConfigError(key, redact(override.partition("=")[2]), "a value like devices=[0]") from None
        else:
            recipe.append(override)
    local_file = Path(cwd or os.getcwd()) / "sweeps" / f"{study_name}.yaml"
    storage_url = storage_url or execution.get("storage")
    if storage_url and (recipe or local_file.is_file()):
        local = compose_study(study_name, overrides, cwd=cwd)
        stored = load_spec(_load_study(study_name, storage_url))
        differ = _differences(stored.recipe, json.loads(json.dumps(local.recipe)))
        if differ:
            where = (f"sweeps/{study_name}.yaml" if local_file.is_file() else f"study file {study_name!r}")
            where += " with these overrides" if recipe else ""
            raise AblateError(f"study: {study_name!r} in {redact(storage_url)} has another recipe than {where} "
                              f"here ({', '.join(differ[:4])} differ{'s' if len(differ) == 1 else ''}); "
                              "run the same study file and overrides")
    return execution


def _differences(theirs: Mapping[str, Any], mine: Mapping[str, Any]) -> list[str]:
    """``["params.optimizer", "metric"]``: the recipe entries that differ."""
    out: list[str] = []
    for key, value in theirs.items():
        other = mine.get(key)
        if value == other:
            continue
        if isinstance(value, dict) and isinstance(other, dict):
            out += [f"{key}.{k}" for k in sorted({*value, *other}, key=str) if value.get(k, ...) != other.get(k, ...)]
        else:
            out.append(key)
    return out


def load_spec(study: Any) -> StudySpec:
    text = study.user_attrs.get(SPEC_ATTR)
    if text is None:
        raise AblateError(f"study: {study.study_name!r} was not created by ablate sweep "
                          "(it has no recorded definition)")
    return StudySpec.from_json(text)


class _StopAware:
    """Lets samplers that end a study themselves (grid, brute force) do so under ask-and-tell.

    They call ``study.stop()`` from ``after_trial``, which Optuna allows only inside ``optimize``;
    we catch that and end the worker instead.
    """

    def __init__(self, sampler: Any) -> None:
        import optuna

        class Wrapped(optuna.samplers.BaseSampler):
            exhausted = False

            def infer_relative_search_space(self, study, trial):  # type: ignore[no-untyped-def]
                return sampler.infer_relative_search_space(study, trial)

            def sample_relative(self, study, trial, search_space):  # type: ignore[no-untyped-def]
                return sampler.sample_relative(study, trial, search_space)

            def sample_independent(self, study, trial, name, dist):  # type: ignore[no-untyped-def]
                return sampler.sample_independent(study, trial, name, dist)

            def before_trial(self, study, trial):  # type: ignore[no-untyped-def]
                sampler.before_trial(study, trial)

            def after_trial(self, study, trial, state, values):  # type: ignore[no-untyped-def]
                try:
                    sampler.after_trial(study, trial, state, values)
                except RuntimeError:
                    Wrapped.exhausted = True

            def reseed_rng(self) -> None:
                sampler.reseed_rng()

        self.sampler = Wrapped()
        self.inner = sampler

    @property
    def exhausted(self) -> bool:
        return bool(self.sampler.exhausted)


class TrialComposer:
    """Trial configs for one study, composed by Hydra once per study, not once per trial.

    Hydra's composition costs a few tenths of a second, as much as a small trial trains. Each
    group's file fills only its own node, so :meth:`compose_all` composes the representative trial
    and then, round after round, the k-th option of every searched group at once (as many rounds as
    the largest group has options); an ablation composes each arm once. A trial is then a copy of
    the representative with its group nodes (its arm) swapped in and its searched fields set. The
    copies keep the structured schema, so a value of the wrong type is still refused, and every
    trial is validated as ``compose`` would. ``ablate sweep`` composes in the supervisor (that is
    its check of the study) and hands the result to its workers; a joining worker composes itself.
    """

    def __init__(self, space: Any, extra: Mapping[str, Any] | None = None, *, composed: Any = None) -> None:
        self.space = space
        self.extra = dict(extra or {})  # field values this worker sets on every trial (tracking, threads)
        self.base: Any = None
        self.nodes: dict[tuple[str, Any], Any] = {}
        if composed is not None:
            self.base, self.nodes = composed

    @property
    def composed(self) -> tuple[Any, dict[tuple[str, Any], Any]]:
        """What :meth:`compose_all` made (picklable: the schema types travel with it)."""
        return self.base, self.nodes

    def compose_all(self) -> "TrialComposer":
        """Compose every node a trial can need; a :class:`ConfigError` names the culprit.

        Raises:
            ConfigError: some option (or arm) cannot be composed with the study's overrides; its
                ``field`` is the trial field, and an arm's name is added to ``allowed``.
        """
        from optuna.distributions import CategoricalDistribution

        from ablate.config import compose, is_group

        space = self.space
        rep = space.representative()
        if not space.independent_groups:  # an ablation: one whole config per arm
            for arm in space.arms:
                try:
                    self.nodes["arm", arm] = compose(space.overrides({**rep, "arm": arm}))
                except ConfigError as exc:
                    raise ConfigError(exc.field, exc.value, f"{exc.allowed} (in arm {arm!r})") from None
            self.base = self.nodes["arm", rep["arm"]]
            return self
        self.base = compose(space.overrides(rep))
        options = {k: list(d.choices) for k, d in space.distributions.items()
                   if is_group(k) and isinstance(d, CategoricalDistribution)}
        for group, choices in options.items():
            self.nodes[group, choices[0]] = self.base[group]
        for k in range(1, max(map(len, options.values()), default=0)):
            varied = {g: c[k] for g, c in options.items() if len(c) > k}
            try:
                cfg = compose(space.overrides({**rep, **varied}))
            except ConfigError as exc:
                culprit = next(iter(varied.items())) if len(varied) == 1 else None
                for group, option in varied.items() if culprit is None else ():  # which: compose each alone
                    try:
                        compose(space.overrides({**rep, group: option}))
                    except ConfigError as alone:
                        exc, culprit = alone, (group, option)
                        break
                where = f" (with {culprit[0]}={culprit[1]})" if culprit else ""
                raise ConfigError(exc.field, exc.value, exc.allowed + where) from None
            for group, option in varied.items():
                self.nodes[group, option] = cfg[group]
        return self

    def __call__(self, params: Mapping[str, Any], run_name: str) -> Any:
        import copy

        from omegaconf import OmegaConf

        from ablate.config import translate_compose_error, validate

        if self.base is None:
            self.compose_all()
        groups, leaves = self.space.split(params)
        try:
            if self.space.independent_groups:
                cfg = copy.deepcopy(self.base)
                for group, option in groups.items():
                    cfg[group] = copy.deepcopy(self.nodes[group, option])
            else:
                cfg = copy.deepcopy(self.nodes["arm", groups["arm"]])
            for name, value in leaves.items():
                OmegaConf.update(cfg, name, value, merge=False)
            for name, value in self.extra.items():
                OmegaConf.update(cfg, name, value, merge=False)
            cfg.tracking.run_name = run_name
        except Exception as exc:
            translated = translate_compose_error(exc)
            if translated is None:
                raise
            raise translated from exc
        return validate(cfg)


def _objective(history: list[Mapping[str, float]], metric: str, direction: str) -> float:
    values = [h[metric] for h in history if math.isfinite(h.get(metric, math.nan))]
    if not values:
        return math.nan
    return max(values) if direction == "maximize" else min(values)


def run_worker(study_name: str, storage_url: str, *, index: int = 0, deadline: float | None = None,
               before_ask: Callable[[], None] | None = None, verbose: bool = True,
               composed: Any = None) -> int:
    """Run trials of a study until it has ``n_trials`` finished trials (or the deadline passes).

    Args:
        study_name: The study to join (created by ``ablate sweep``).
        storage_url: Its Optuna storage (journal file path or RDB URL).
        index: This worker's index: offsets the sampler seed.
        deadline: ``time.time()`` after which no new trial starts.
        before_ask: Called before each ask (benchmarks use it to impose a batch barrier).
        composed: :attr:`TrialComposer.composed` of this study, made by the supervisor; None
            composes here.

    Returns:
        The number of trials this worker ran.
    """
    import optuna
    from optuna.trial import TrialState

    from ablate.tracking import WRITER, signals_deferred, track_run
    from ablate.train import fit, load_data

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    probe = _load_study(study_name, storage_url)
    spec = load_spec(probe)
    storage = probe._storage
    heart = None
    if "://" in storage_url:  # an RDB storage: heartbeats, with the study's own settings
        storage = open_storage(storage_url, heartbeat_interval=spec.heartbeat_interval,
                               grace_period=spec.grace_period)
        heart = _Heartbeat(storage, spec.heartbeat_interval)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    space = spec.space()
    parent_run_id = probe.user_attrs.get(PARENT_ATTR)
    extra: dict[str, Any] = {"tracking.experiment": spec.experiment}
    if spec.tracking_uri:
        extra["tracking.uri"] = spec.tracking_uri
    threads = os.environ.get("ABLATE_THREADS")
    if threads:
        extra["trainer.threads"] = int(threads)
    device = os.environ.get("ABLATE_DEVICE")
    if device:
        extra["trainer.device"] = device
    data_cache: dict[Any, Any] = {}
    composer = TrialComposer(space, extra, composed=composed)
    if composed is None:
        composer.compose_all()
    sampler = _StopAware(build_sampler(spec, worker_index=index))
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler.sampler,
                              pruner=build_pruner(spec, epochs=composer.base.trainer.epochs))
    me = worker_id()
    ppid = os.getppid()
    ran = 0
    telling: set[int] = set()  # trials whose last MLflow writes and tell are queued (see _teller)

    try:
        while True:
            trials = study.get_trials(deepcopy=False)
            if spec.n_trials is not None and sum(map(is_finished, trials)) + len(telling) >= spec.n_trials:
                if telling:  # the queued tells may yet fail: wait for them, then look again
                    WRITER.drain()
                    continue
                break
            if deadline is not None and time.time() >= deadline:
                break
            if sampler.exhausted or (ppid != 1 and os.getppid() != ppid):  # exhausted, or orphaned
                break
            if heart is not None:
                heart.hold(None)
                heart.fail_stale(study)
                if _others_hold_the_rest(study.get_trials(deepcopy=False), spec):
                    time.sleep(min(2.0, spec.heartbeat_interval))
                    continue
            if spec.design and not any(t.state == TrialState.WAITING for t in trials):
                break  # an ablation runs its queued (arm, seed) trials and nothing else
            if before_ask is not None:
                before_ask()
            trial = study.ask()
            if heart is not None:
                heart.hold(trial._trial_id)
            if spec.n_trials is not None and _is_surplus(study, trial.number, spec.n_trials):
                trial.set_user_attr(OUTCOME_ATTR, "surplus")
                study.tell(trial, state=TrialState.FAIL)
                break
            trial.set_user_attr(WORKER_ATTR, me)
            if heart is not None:
                trial.set_user_attr(HEARTBEAT_ATTR, spec.heartbeat_interval)
                retry_of = retried_from(storage.get_trial(trial._trial_id))
                if retry_of is not None:  # queued again by Optuna's stale-trial callback
                    trial.set_user_attr(RETRY_ATTR, retry_of)
            if device:
                trial.set_user_attr("ablate.device", device)
            params = {key: suggest(trial, key, dist) for key, dist in space.distributions.items()}
            run_name = f"{spec.name}-t{trial.number:04d}"
            try:
                cfg = composer(params, run_name)
                key = tuple(sorted(cfg.data.items()))
                if key not in data_cache:
                    data_cache[key] = load_data(cfg)
            except AblateError as exc:
                trial.set_user_attr(OUTCOME_ATTR, "failed")
                trial.set_user_attr("ablate.error", str(exc))
                study.tell(trial, state=TrialState.FAIL)
                continue
            tags = {"optuna.study": spec.name, "optuna.trial_number": str(trial.number),
                    "worker": me, "device": device or str(cfg.trainer.device)}
            if spec.design:
                tags.update({"ablate.arm": str(params["arm"]), "ablate.design": spec.design})
            pruned_at: list[int] = []
            try:
                with track_run(cfg, tags=tags, parent_run_id=parent_run_id, background=True,
                               on_created=functools.partial(trial.set_user_attr, RUN_ATTR)) as tracker:

                    def on_epoch(epoch: int, metrics: Mapping[str, float]) -> bool:
                        tracker(epoch, metrics)
                        value = metrics.get(spec.metric, math.nan)
                        if math.isfinite(value):
                            with signals_deferred():  # a half-written journal entry would stall everyone
                                trial.report(value, epoch)
                                prune = trial.should_prune()
                            if prune:
                                pruned_at.append(epoch)
                                return True
                        return False

                    result = fit(cfg, on_epoch, data=data_cache[key])
                    value = _objective(result.history, spec.metric, spec.direction)
                    sampled = {f"sampled.{k}": v for k, v in params.items()}
                    if pruned_at:
                        outcome, state = "pruned", TrialState.PRUNED
                    elif result.stop_reason == "diverged":
                        outcome, state = "diverged", (TrialState.COMPLETE if math.isfinite(value)
                                                      else TrialState.FAIL)
                    else:
                        outcome, state = "completed", TrialState.COMPLETE
                    # The run's last writes and then the tell go to the writer thread: the next trial
                    # starts meanwhile. Its trial stays RUNNING until then, so a worker killed in between
                    # leaves it to be failed and retried like any other.
                    telling.add(trial.number)
                    tracker.finish(result.final, "pruned" if pruned_at else result.stop_reason,
                                   params=sampled, tags={"optuna.state": state.name, "status": outcome,
                                                         **({"pruned_at_epoch": pruned_at[0]} if pruned_at else {})},
                                   then=_teller(study, trial, value, outcome, state, result, spec.metric,
                                                telling, verbose))
            except KeyboardInterrupt:
                with signals_deferred():  # a half-written journal entry would stall everyone
                    _fail_and_retry(study, trial.number, params)
                raise
            except Exception as exc:  # a bug or a CUDA error: record it, keep the sweep going
                _tell_failed(study, trial, exc, verbose)
                continue
            ran += 1
    finally:
        WRITER.drain()  # never leave with a tell queued (a no-op when none is)
    return ran


def _teller(study: Any, trial: Any, value: float, outcome: str, state: Any, result: Any, metric: str,
            telling: set[int], verbose: bool) -> Callable[[BaseException | None], None]:
    """The tell that follows a trial's last MLflow write (on the writer thread)."""
    from optuna.trial import TrialState

    def tell(error: BaseException | None) -> None:
        try:
            if error is not None:  # its run could not be recorded: the trial failed
                _tell_failed(study, trial, error, verbose)
                return
            trial.set_user_attr(OUTCOME_ATTR, outcome)
            trial.set_user_attr("ablate.epochs_run", result.epochs_run)
            trial.set_user_attr("ablate.train_time", result.final["train_time"])
            if state == TrialState.COMPLETE:
                study.tell(trial, value)
            else:
                study.tell(trial, state=state)
            if verbose:
                print(f"trial {trial.number}: {outcome} after {result.epochs_run} epochs, "
                      f"{metric}={value:.4f} ({result.final['train_time']:.1f} s)", flush=True)
        finally:
            telling.discard(trial.number)
    return tell


def _tell_failed(study: Any, trial: Any, exc: BaseException, verbose: bool) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr(OUTCOME_ATTR, "failed")
    trial.set_user_attr("ablate.error", f"{type(exc).__name__}: {exc}"[:1000])
    study.tell(trial, state=TrialState.FAIL)
    if verbose:
        print(f"trial {trial.number} failed: {type(exc).__name__}: {exc}", flush=True)


def _is_surplus(study: Any, number: int, n_trials: int) -> bool:
    """True when ``n_trials`` trials numbered below ``number`` are finished, running or queued.

    Workers ask concurrently, so near the end more trials can be asked than are needed; the
    lowest-numbered ones run and the others are closed unrun (outcome ``surplus``).
    """
    from optuna.trial import TrialState

    live = (TrialState.RUNNING, TrialState.WAITING)
    ahead = sum(1 for t in study.get_trials(deepcopy=False)
                if t.number < number and (is_finished(t) or t.state in live))
    return ahead >= n_trials


def _fail_and_retry(study: Any, number: int, params: Mapping[str, Any]) -> None:
    """Close an interrupted trial as FAIL and queue its parameters again, so a resume reruns it.

    The retry carries ``ablate.retry_of = number``: that is how a killed trial is told apart from
    one that failed (and is not retried). Callers hold Ctrl-C (:func:`signals_deferred`).
    """
    from optuna.trial import TrialState

    try:
        study.tell(number, state=TrialState.FAIL)
    except Exception:  # noqa: BLE001 - already closed by someone else (the supervisor)
        return
    study.enqueue_trial(dict(params), user_attrs={RETRY_ATTR: number})


def fail_stale_trial(study: Any, trial: Any) -> None:
    """Close a RUNNING trial whose worker died (FAIL), end its MLflow run KILLED, queue a retry.

    Ctrl-C waits until all three are written: a supervisor interrupted in between left the run
    RUNNING with its trial already failed.
    """
    from ablate.tracking import signals_deferred

    with signals_deferred():
        _fail_and_retry(study, trial.number, trial.params)
        _end_killed_run(study, trial)


def _end_killed_run(study: Any, trial: Any) -> None:
    """End KILLED the MLflow runs of a trial whose worker died that are still RUNNING.

    Its run is found by the trial's ``ablate.mlflow_run_id``, and by the study's parent run and
    the trial's number (tags of every child run): a worker killed between creating the run and
    recording its id on the trial leaves a run that only the tags lead to.
    """
    spec = load_spec(study)
    if not spec.tracking_uri:
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=spec.tracking_uri)
    runs = {trial.user_attrs.get(RUN_ATTR)} - {None}
    parent = study.user_attrs.get(PARENT_ATTR)
    try:
        if parent:
            experiment = client.get_run(parent).info.experiment_id
            found = client.search_runs([experiment], filter_string=(
                f"tags.mlflow.parentRunId = '{parent}' and tags.`optuna.trial_number` = '{trial.number}' "
                "and attributes.status = 'RUNNING'"))
            runs |= {r.info.run_id for r in found}
    except Exception:  # noqa: BLE001, S110 - the store is unreachable: the id on the trial is all there is
        pass
    for run_id in runs:
        try:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, "status", "killed")
                client.set_terminated(run_id, "KILLED")
        except Exception:  # noqa: BLE001, S110 - the run may never have been created
            pass
