"""``ablate sweep``: create or resume a study, run its workers, watch and restart them, record the study.

The supervisor owns no trial: N worker processes pull trials from the shared Optuna storage. It
starts them, restarts one that dies (after failing the trial it held and queueing it again), draws
the progress display from the storage, and records the study in an MLflow parent run (written by
:mod:`ablate.tracking`).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.study import Study, StudyDirection
from optuna.trial import TrialState

from ablate import records as R
from ablate.errors import AblateError
from ablate.space import AblationSpace
from ablate.sweep.composer import TrialComposer, check_trial_configs
from ablate.sweep.confirm import confirmation_done, next_confirmations
from ablate.sweep.preflight import check_before_start
from ablate.sweep.progress import Progress, absolute_uri, summary
from ablate.sweep.rounds import next_seeds, seeds_per_arm
from ablate.sweep.runs import fail_stale_trial, killed_hook
from ablate.sweep.spec import StudySpec, compose_study, differ_text, load_spec, recipe_differences
from ablate.sweep.storage import (
    best_trial,
    confirm_of,
    confirmed,
    count_states,
    holder,
    is_finished,
    open_storage,
    out_of_failures,
    process_alive,
    redact,
    spent_failures,
    unclaimed,
)
from ablate.tracking import finish_study_run, open_study_run, signals_deferred
from ablate.tracking.store import check_store

__all__ = ["Supervisor", "finish_parent", "prepare_study", "run_sweep", "worker_threads"]

_MAX_RESTARTS = 3  # a worker that keeps dying at once points at a bug, not at bad luck


def prepare_study(spec: StudySpec, composer: TrialComposer | None = None) -> tuple[Study, StudySpec, str]:
    """Validate (unless ``composer`` says it was), then create or reopen the study and its parent run.

    Returns:
        ``(study, spec, parent_run_id)``; ``spec`` carries the absolute MLflow URI.

    Raises:
        AblateError: bad study, unreachable storage, or a stored study with another recipe. Nothing
            is created in that case.
    """
    base, _ = (composer or check_trial_configs(spec)).composed
    spec = dataclasses.replace(spec, tracking_uri=absolute_uri(base.tracking.uri, Path.cwd()))
    check_store(spec.tracking_uri)  # an MLflow store that cannot be reached or written: one line, at once
    storage = open_storage(spec.storage, create_dirs=True, heartbeat_interval=spec.heartbeat_interval,
                           grace_period=spec.grace_period, on_killed=killed_hook(spec.tracking_uri))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage.get_study_id_from_name(spec.name)
    except KeyError:
        direction = StudyDirection.MAXIMIZE if spec.direction == "maximize" else StudyDirection.MINIMIZE
        study = optuna.create_study(study_name=spec.name, storage=storage, direction=direction)
        if isinstance(spec.space, AblationSpace):  # every (arm, seed) queued once: the design is the budget
            first = spec.adaptive["start"] if spec.adaptive else len(spec.seeds)  # adaptive: round 1
            for params in spec.space.trials():
                if params["seed"] < first:
                    study.enqueue_trial(params)
    else:
        differ = recipe_differences(load_spec(storage, spec.name, spec.storage).recipe, spec.recipe)
        if differ:
            raise AblateError(f"study: {spec.name!r} already exists in {redact(spec.storage)} with another "
                              f"recipe ({differ_text(differ)}); use a new name= or remove its storage")
        study = optuna.load_study(study_name=spec.name, storage=storage)
    with warnings.catch_warnings():  # experimental since Optuna 3.2; optuna-dashboard labels the objective
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([spec.metric])
    document = spec.to_json()  # the one serialised spec: the study's attribute and the parent's study.json
    study.set_user_attr(R.ATTR_SPEC, document)
    # max_failures counts from this session's first trial: a rerun (the data fixed) starts afresh
    study.set_user_attr(R.ATTR_SESSION_START, len(study.get_trials(deepcopy=False)))
    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
    parent = open_study_run(tracking_uri=spec.tracking_uri, experiment=spec.experiment, name=spec.name,
                            storage=redact(spec.storage), design=spec.design, document=document,
                            parent_run_id=study.user_attrs.get(R.ATTR_PARENT))
    study.set_user_attr(R.ATTR_PARENT, parent)
    return study, spec, parent


def worker_devices(spec: StudySpec) -> list[int | None]:
    """Each local worker's device: ``trials_per_device`` workers per entry of ``devices``, else
    ``workers`` workers with none."""
    if spec.devices:
        return [d for d in spec.devices for _ in range(spec.trials_per_device)]
    return [None] * spec.workers


def worker_threads(workers: int, cpus: int | None = None) -> int:
    """Torch threads per local worker: the cores split across workers.

    (Leaving a core to the supervisor and the MLflow writer threads was measured slower: on the
    2-core VM, one worker's mnist1d CNN trials took 140 s with 1 thread against 105 s with 2.)
    """
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // workers)


def finish_parent(study: Study, spec: StudySpec, parent_run_id: str, status: str) -> dict[str, int]:
    """Record counts by state, the best value and params on the study's MLflow parent run; for an
    ablation its seeds per arm, and why adaptive seeds stopped; for a confirmed search each
    confirmed trial's mean, interval and seeds."""
    trials = study.get_trials(deepcopy=False)
    counts = count_states(trials)
    best = best_trial(trials, spec.direction)
    extra: dict[str, str] = {}
    if spec.design:
        extra[R.TAG_SEEDS_PER_ARM] = json.dumps(seeds_per_arm(study, spec))
    if spec.adaptive is not None:
        extra[R.TAG_SEEDS_STOP] = str(study.user_attrs.get(R.ATTR_SEEDS_STOP, "not decided yet (resume it)"))
    if spec.confirm is not None and confirmation_done(study, spec.confirm, trials) is not None:
        extra[R.TAG_CONFIRMED] = json.dumps(confirmed(trials, spec.direction))
    finish_study_run(tracking_uri=spec.tracking_uri, parent_run_id=parent_run_id, status=status,
                     counts=counts, metric=spec.metric, extra_tags=extra,
                     best=None if best is None else (best.number, float(best.value or 0.0),
                                                     str(best.user_attrs.get(R.ATTR_RUN, "")), best.params))
    return counts


@dataclass
class _Slot:
    index: int
    device: int | None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    done: bool = False
    early: Any = None  # what a standby worker printed before it was told where its log is


class Supervisor:
    """Starts and watches the worker processes of one study.

    Local workers start before the study is checked (:meth:`warm_up`): they import torch, MLflow and
    Optuna while the supervisor composes and validates, and wait on their stdin, having written
    nothing, for where to log and the composed trial configs (:meth:`run`). Bad input kills them
    (:meth:`abandon`).
    """

    def __init__(self, spec: StudySpec, *, stream: IO[str] | None = None) -> None:
        self.spec = spec
        self.study: Study = None  # type: ignore[assignment]  # set by run()
        devices = worker_devices(spec)
        n = len(devices)
        self.slots = [_Slot(i, device) for i, device in enumerate(devices)]
        self.deadline: float | None = None
        self.progress = Progress(spec, stream, workers=n)
        # Torch threads per worker: the cores split across workers, unless the study says (e.g.
        # `ablate sweep S trainer.threads=1`), which wins.
        self.threads = None if "trainer.threads" in {**spec.fixed, **spec.params} else worker_threads(n)
        self.logs = Path(spec.out_dir)
        # The composed trial configs, pickled for the local workers into a file with no name (the
        # kernel frees it when the last process holding it exits, even killed with -9); each worker
        # inherits its descriptor and reads it once told to go.
        self.composed: IO[bytes] | None = None
        self.local = spec.launcher.get("name") != "slurm"
        self.pids: dict[int, int] = {}  # local worker processes' pids -> slot index (their log)
        self.failure: AblateError | None = None  # set when the failure budget stopped the sweep
        self.seeds_stop: str | None = None  # adaptive seeds: why the rule stopped adding seeds
        self.confirmed: str | None = None  # confirm: what was confirmed, once done
        self.base_seed = 0  # confirm: the search trials' seed (the composed config's)

    def warm_up(self) -> None:
        """Start the local workers in standby: they import, then wait for :meth:`run`."""
        if self.local:
            for slot in self.slots:
                self._start(slot)

    def abandon(self) -> None:
        """Stop standby workers (the study was refused): they have written nothing."""
        for slot in self.slots:
            if slot.process is not None:
                slot.process.kill()
                slot.process.wait()
                slot.process = None
            if slot.early is not None:
                slot.early.close()
                slot.early = None
        self._close_composed()

    def _close_composed(self) -> None:
        if self.composed is not None:
            self.composed.close()
            self.composed = None

    def _spawn(self, slot: _Slot) -> None:
        if not self.local:
            from ablate.sweep.launchers import submit_worker  # submitit: only for launcher=slurm

            env = {} if self.threads is None else \
                {"ABLATE_THREADS": str(self.spec.launcher.get("cpus_per_task", self.threads))}
            if int(self.spec.launcher.get("gpus_per_node", 0)):
                env["ABLATE_DEVICE"] = "cuda"
            if redact(self.spec.tracking_uri) != self.spec.tracking_uri:  # jobs inherit it, as the storage
                os.environ["ABLATE_TRACKING_URI"] = self.spec.tracking_uri
            slot.process = submit_worker(self.spec.launcher, folder=self.logs, study=self.spec.name,  # type: ignore[assignment]
                                         storage=self.spec.storage, index=self._index(slot),
                                         deadline=self.deadline, env=env)
            return
        if slot.process is None or slot.process.poll() is not None:  # not warm (a restart, or it died)
            self._start(slot)
        self._go(slot)

    def _start(self, slot: _Slot) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("MLFLOW_RUN_ID", None)  # would hijack every child run
        env.pop("ABLATE_THREADS", None)
        if self.threads is not None:
            env["ABLATE_THREADS"] = str(self.threads)
        if slot.device is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot.device)
            env["ABLATE_DEVICE"] = "cuda"
        env["ABLATE_STORAGE"] = self.spec.storage  # not in argv, where ps and logs would show a password
        index = str(self._index(slot))
        command = [sys.executable, "-m", "ablate", "worker", self.spec.name, "--index", index,
                   "--supervised", "--standby"]  # the stored recipe is this sweep's: nothing to compare
        # Until it is told its log, a worker's output goes to an unnamed file (kept if it dies early).
        slot.early = tempfile.TemporaryFile()  # noqa: SIM115 (closed in _reap / abandon)
        # A session of their own: Ctrl-C reaches the supervisor, which forwards it once, in order.
        if self.composed is None:
            self.composed = tempfile.TemporaryFile()  # noqa: SIM115 (closed in run / abandon)
        slot.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=slot.early,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                        pass_fds=(self.composed.fileno(),))
        self.pids[slot.process.pid] = slot.index

    def _index(self, slot: _Slot) -> int:
        """The worker's index for its sampler: a restarted worker's differs from every index of this
        session, so it does not draw again what its predecessor drew (see ablate.sweep.samplers)."""
        return slot.index + slot.restarts * len(self.slots)

    def _go(self, slot: _Slot) -> None:
        """Tell a standby worker where to log, its deadline and where the composed configs are."""
        assert slot.process is not None and slot.process.stdin is not None
        composed = self.composed.fileno() if self.composed is not None else None  # empty: compose yourself
        go = {"log": str((self.logs / f"worker-{slot.index}.log").resolve()), "deadline": self.deadline,
              "composed_fd": composed, "tracking_uri": self.spec.tracking_uri}
        try:  # a short line: the pipe takes it without waiting for the worker
            slot.process.stdin.write(json.dumps(go).encode() + b"\n")
            slot.process.stdin.close()
        except OSError:  # it died while importing: _reap keeps what it printed
            pass

    def _reap(self, slot: _Slot) -> None:
        """After a worker exits: what it printed before it had a log goes into its log."""
        if slot.early is None:
            return
        slot.early.seek(0)
        early = slot.early.read()
        slot.early.close()
        slot.early = None
        if early.strip():
            with open(self.logs / f"worker-{slot.index}.log", "ab") as log:
                log.write(early)

    def _out_of_failures(self) -> AblateError | None:
        """The line that stops the sweep once ``max_failures`` trials failed, else None."""
        trials = self.study.get_trials(deepcopy=False)
        since = int(self.study.user_attrs.get(R.ATTR_SESSION_START, 0))
        last = spent_failures(trials, self.spec.max_failures, since=since)
        if last is None:
            return None
        host, pid = holder(last)
        if self.spec.launcher.get("name") == "slurm":
            log = "slurm/*_log.out"
        elif host == socket.gethostname() and pid in self.pids:
            log = f"worker-{self.pids[pid]}.log"
        else:
            log = "worker-*.log"
        return out_of_failures(self.spec.name, last, self.spec.max_failures,
                               f"{os.path.relpath(self.spec.out_dir)}/{log}")

    def _remaining(self) -> bool:
        if self.deadline and time.time() >= self.deadline:
            return False
        if self.failure is not None:
            return False
        if self.spec.adaptive is not None:  # the rule decides when the study is done
            self.seeds_stop = self.seeds_stop or next_seeds(self.study, self.spec)
            return self.seeds_stop is None
        if self.spec.confirm is not None:  # the search, then its confirmation runs
            self.confirmed = self.confirmed or next_confirmations(self.study, self.spec, self.base_seed)
            return self.confirmed is None
        if self.spec.n_trials is None:
            return True
        return count_states(self.study.get_trials(deepcopy=False))["finished"] < self.spec.n_trials

    def fail_stale(self, *, pids: set[int] | None = None) -> int:
        """Fail (and queue again) RUNNING trials held by dead workers of this host."""
        host = socket.gethostname()
        failed = 0
        on_killed = killed_hook(self.spec.tracking_uri)
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            h, pid = holder(t)
            if h != host or pid is None:
                continue  # another machine's worker: RDB heartbeats cover it
            if (pids is not None and pid in pids) or (pids is None and not process_alive(pid)):
                failed += fail_stale_trial(self.study, t, on_killed)
        return failed

    def fail_unclaimed(self) -> int:
        """Fail (and queue again) RUNNING trials that no worker holds (see :func:`unclaimed`).

        Called as the sweep starts, before its workers ask: with a journal file nobody else asks
        then; with an RDB storage, a trial counts as abandoned once it went unclaimed for the grace
        period.
        """
        older_than = float(self.spec.grace_period) if "://" in self.spec.storage else None
        on_killed = killed_hook(self.spec.tracking_uri)
        trials = unclaimed(self.study.get_trials(deepcopy=False), older_than=older_than)
        return sum(fail_stale_trial(self.study, t, on_killed) for t in trials)

    def run(self, study: Study, spec: StudySpec, composer: TrialComposer | None = None) -> int:
        """Run the workers until the study is done; ``composer`` (checked) gives them its configs."""
        self.study, self.spec = study, spec
        self.deadline = time.time() + spec.timeout if spec.timeout else None
        if spec.confirm is not None:
            self.base_seed = int((composer or check_trial_configs(spec)).composed[0].seed)
        self.fail_stale()  # a previous session's workers may have been killed mid-trial
        self.fail_unclaimed()  # ... or between asking for a trial and recording themselves on it
        if not self._remaining():
            self.abandon()
            self.progress.update(self.study)
            return 0
        if composer is not None and self.local:
            if self.composed is None:
                self.composed = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
            pickle.dump(composer.composed, self.composed)
            self.composed.flush()
        try:
            return self._watch()
        finally:
            self._close_composed()

    def _watch(self) -> int:
        for slot in self.slots:
            self._spawn(slot)
        try:
            while not all(s.done for s in self.slots):
                # Ctrl-C lands between the storage reads, never inside one: raised inside a
                # database driver's callback it is only printed ("Exception ignored") and lost
                with signals_deferred():
                    if not self._tick():
                        break
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.stop()
            raise
        finally:
            self.progress.update(self.study)
            self.progress.close()
            if self.spec.launcher.get("name") == "slurm":
                for slot in self.slots:  # submitit's local jobs must not outlive the interpreter's modules
                    slot.process = None
                gc.collect()
        return 0

    def _tick(self) -> bool:
        """One look at the workers and the study: restart a crashed worker, redraw the progress.

        Returns:
            False when the failure budget is spent (the workers were stopped).
        """
        self.failure = self.failure or self._out_of_failures()
        if self.failure is not None:  # the workers stop asking; those still training stop now
            self.stop()
            return False
        for slot in self.slots:
            if slot.done or slot.process is None or slot.process.poll() is None:
                continue
            self._reap(slot)
            rc = slot.process.returncode
            if rc != 0:  # by pid, and by liveness (a submitit job's pid is its wrapper's)
                self.fail_stale(pids={slot.process.pid})
                self.fail_stale()
            self.failure = self.failure or self._out_of_failures()  # why it exited, maybe
            if self._remaining() and rc != 0 and slot.restarts < _MAX_RESTARTS:
                slot.restarts += 1
                print(f"worker {slot.index} exited with {rc}; restarting it "
                      f"(log: {self.logs / f'worker-{slot.index}.log'})", file=sys.stderr, flush=True)
                self._spawn(slot)
            else:
                slot.done = True
        if self.spec.adaptive is not None and self.seeds_stop is None:  # a round done: queue the next
            self.seeds_stop = next_seeds(self.study, self.spec)
        if self.spec.confirm is not None and self.confirmed is None:  # the search done: confirm it
            self.confirmed = next_confirmations(self.study, self.spec, self.base_seed)
        self.progress.update(self.study)
        return True

    def stop(self, grace: float = 60.0) -> None:
        """Interrupt every worker (each fails and re-queues its trial), then kill stragglers."""
        alive = [s.process for s in self.slots if s.process is not None and s.process.poll() is None]
        for p in alive:
            p.send_signal(signal.SIGINT)
        end = time.time() + grace
        for p in alive:
            try:
                p.wait(timeout=max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for slot in self.slots:
            self._reap(slot)
        # every worker of this sweep: one killed since the last tick holds a RUNNING trial too
        self.fail_stale(pids={p.pid for p in alive} | {s.process.pid for s in self.slots if s.process})


def run_sweep(name: str, overrides: Sequence[str] = ()) -> int:
    """``ablate sweep <name> [overrides]``: returns the process exit code."""
    spec = compose_study(name, overrides)
    supervisor = Supervisor(spec)
    supervisor.warm_up()  # the workers import while the study is checked and created
    prepared: list[tuple[Study, StudySpec, str]] = []
    try:
        composer = check_trial_configs(spec)
        check_before_start(spec, composer.composed)
        with signals_deferred():  # Ctrl-C while the study and its parent run are created lands after
            prepared.append(prepare_study(spec, composer))
    except BaseException as exc:
        supervisor.abandon()
        if prepared and isinstance(exc, KeyboardInterrupt):
            study, spec, parent = prepared[0]
            finish_parent(study, spec, parent, "KILLED")
            print(f"interrupted; rerun the same command to resume study {spec.name}", file=sys.stderr)
        raise
    study, spec, parent = prepared[0]
    n = len(supervisor.slots)
    trials = f"{spec.n_trials or 'unlimited'} trials" if spec.adaptive is None else (
        f"{len(spec.arms)} arms x {spec.adaptive['start']}-{spec.adaptive['max']} seeds (adaptive, "
        f"step {spec.adaptive['step']})")
    if spec.confirm is not None:
        trials += f", then the top {spec.confirm['top']} on {spec.confirm['seeds']} more seeds each"
    print(f"Study {spec.name}: {trials}, {n} worker{'s' if n != 1 else ''}, "
          f"sampler {spec.sampler['name']}, pruner {spec.pruner['name']}; storage {redact(spec.storage)}",
          flush=True)
    try:
        supervisor.run(study, spec, composer)
    except KeyboardInterrupt:
        finish_parent(study, spec, parent, "KILLED")
        print(f"interrupted; rerun the same command to resume study {spec.name}", file=sys.stderr)
        raise
    finish_parent(study, spec, parent, "FINISHED" if supervisor.failure is None else "FAILED")
    print(summary(study, spec, parent, supervisor.progress.elapsed(), n), flush=True)
    if supervisor.failure is not None:  # the failure budget is spent: exit code 2, one line
        raise supervisor.failure
    if spec.adaptive is not None:
        if supervisor.seeds_stop is None and not spec.timeout:
            raise AblateError(f"workers: study {spec.name} stopped before its seeds were decided; see "
                              f"{os.path.relpath(spec.out_dir)}/worker-*.log, rerun to resume")
        return 0
    exhaustive = spec.sampler["name"] in ("grid", "bruteforce")
    finished = sum(1 for t in study.get_trials(deepcopy=False) if is_finished(t) and confirm_of(t) is None)
    if spec.n_trials and finished < spec.n_trials and not spec.timeout and not exhaustive:
        raise AblateError(f"workers: study {spec.name} stopped at {finished}/{spec.n_trials} "
                          f"finished trials; see {os.path.relpath(spec.out_dir)}/worker-*.log")
    if spec.confirm is not None and supervisor.confirmed is None and not spec.timeout:
        raise AblateError(f"workers: study {spec.name} stopped before its confirmation runs finished; see "
                          f"{os.path.relpath(spec.out_dir)}/worker-*.log, rerun to resume")
    return 0
