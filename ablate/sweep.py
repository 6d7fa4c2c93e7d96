"""``ablate sweep``: create or resume a study, run its workers, show progress, summarise.

The supervisor owns no trial: N worker processes pull trials from the shared Optuna storage. It
starts them, restarts one that dies (after failing the trial it held and queueing it again), draws
the progress display from the storage, and records the study in an MLflow parent run.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ablate.errors import AblateError, ConfigError
from ablate.study import StudySpec, compose_study, open_storage, redact
from ablate.worker import (
    PARENT_ATTR,
    SPEC_ATTR,
    WORKER_ATTR,
    count_states,
    fail_stale_trial,
    load_spec,
)

__all__ = ["check_trial_configs", "prepare_study", "run_sweep", "worker_threads"]

_MAX_RESTARTS = 3  # a worker that keeps dying at once points at a bug, not at bad luck


def _absolute_uri(uri: str, base: Path) -> str:
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str((base / uri[len("sqlite:///"):]).resolve())
    return uri


def check_trial_configs(spec: StudySpec) -> Any:
    """Fail before anything is created when some trial could not be composed.

    Composes every node a trial can need (:meth:`TrialComposer.compose_all`: the representative
    trial, every option of every searched config group, every arm), so a field that exists for one
    option only (``optimizer.momentum`` with adam) is caught; leaf parameters are range-checked at
    both ends of their distributions.

    Returns:
        The :class:`TrialComposer`, composed: its ``base`` is the representative trial's config,
        and the workers of this sweep receive its nodes instead of composing them again.
    """
    from optuna.distributions import CategoricalDistribution

    from ablate.config import is_group, validate
    from ablate.worker import TrialComposer

    space = spec.space()
    composer = TrialComposer(space)
    try:
        composer.compose_all()
    except ConfigError as exc:
        if exc.field in space.distributions:  # name the study's field, not the trial's
            raise ConfigError(f"params.{exc.field}", spec.params[exc.field], exc.allowed) from None
        raise
    if spec.design:
        return composer
    base = composer.base
    missing = object()
    for key, dist in space.distributions.items():
        values = list(dist.choices) if isinstance(dist, CategoricalDistribution) else [dist.low, dist.high]
        if is_group(key):
            continue
        if OmegaConf.select(base, key, default=missing) is missing:
            raise ConfigError(f"params.{key}", key, "a field of the trial config (see `ablate train --cfg job`)")
        for value in values:
            trial_cfg = base.copy()
            OmegaConf.update(trial_cfg, key, value, merge=False)
            try:
                validate(trial_cfg)
            except ConfigError as exc:
                raise ConfigError(f"params.{key}", spec.params[key], f"values where {exc.field} is {exc.allowed}") from None
    if spec.metric not in ("train_loss", "train_acc", "val_loss", "val_acc"):
        raise ConfigError("metric", spec.metric, "one of: val_acc, val_loss, train_acc, train_loss")
    return composer


def prepare_study(spec: StudySpec, composer: Any = None) -> tuple[Any, StudySpec, str]:
    """Validate (unless ``composer`` says it was), then create or reopen the study and its parent run.

    Returns:
        ``(study, spec, parent_run_id)``; ``spec`` carries the absolute MLflow URI.

    Raises:
        AblateError: bad study, unreachable storage, or a stored study with another recipe. Nothing
            is created in that case.
    """
    import optuna
    from mlflow.tracking import MlflowClient

    from ablate.tracking import get_or_create_experiment, git_commit

    base = (composer or check_trial_configs(spec)).base
    spec = replace(spec, tracking_uri=_absolute_uri(base.tracking.uri, Path.cwd()))
    storage = open_storage(spec.storage, create_dirs=True, heartbeat_interval=spec.heartbeat_interval,
                           grace_period=spec.grace_period)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = spec.direction
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        study = optuna.create_study(study_name=spec.name, storage=storage, direction=direction)
        if spec.design:  # every (arm, seed) queued once: the workers run exactly the design
            for params in spec.space().trials():
                study.enqueue_trial(params)
    else:
        stored = load_spec(study)
        if stored.recipe != spec.recipe:
            raise AblateError(f"study: {spec.name!r} already exists in {redact(spec.storage)} with another "
                              "recipe (fixed/params/metric/direction); use a new name= or remove its storage")
    # Workers are told the storage URL; the stored copy (optuna-dashboard shows it) has no password.
    study.set_user_attr(SPEC_ATTR, replace(spec, storage=redact(spec.storage)).to_json())
    Path(spec.out_dir).mkdir(parents=True, exist_ok=True)

    client = MlflowClient(tracking_uri=spec.tracking_uri)
    experiment_id = get_or_create_experiment(client, spec.experiment, spec.tracking_uri)
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent:
        client.update_run(parent, status="RUNNING")
    else:
        tags = {"ablate.kind": "study", "optuna.study": spec.name, "optuna.storage": redact(spec.storage),
                "ablate.design": spec.design or "search", "status": "running"}
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        parent = client.create_run(experiment_id, run_name=spec.name, tags=tags).info.run_id
        study.set_user_attr(PARENT_ATTR, parent)
        client.log_text(parent, study_document(spec), "study.json")
    return study, spec, parent


def study_document(spec: StudySpec) -> str:
    """The study as the report reads it: the spec, with the search distributions as Optuna JSON."""
    import json

    from optuna.distributions import distribution_to_json

    doc = json.loads(spec.to_json())
    doc["storage"] = redact(spec.storage)
    doc["tracking_uri"] = redact(spec.tracking_uri)
    doc["distributions"] = {} if spec.design else {
        k: distribution_to_json(d) for k, d in spec.space().distributions.items()}
    return json.dumps(doc, indent=2, sort_keys=True)


def worker_threads(workers: int, cpus: int | None = None) -> int:
    """Torch threads per local worker: the cores split across workers.

    (Leaving a core to the supervisor and the MLflow writer threads was measured slower: on the
    2-core VM, one worker's mnist1d CNN trials took 140 s with 1 thread against 105 s with 2.)
    """
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // workers)


@dataclass
class _Slot:
    index: int
    device: int | None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    done: bool = False
    early: Any = None  # what a standby worker printed before it was told where its log is


class _Progress:
    """A live block on a terminal; plain lines, on change or every 30 s, elsewhere (CI logs)."""

    def __init__(self, spec: StudySpec, stream: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.clock = clock
        self.started = clock()
        self.last_state: tuple[str, str] | None = None
        self.last_print = 0.0
        self.drawn = 0

    def parts(self, study: Any) -> tuple[str, str, str]:
        """``(counts, best so far, ETA)``; the counts start with the elapsed time."""
        trials = study.get_trials(deepcopy=False)
        c = count_states(trials)
        elapsed = self.clock() - self.started
        n = self.spec.n_trials
        counts = (f"[{_clock(elapsed)}] {c['finished']}/{n if n else '-'} finished (complete {c['complete']}, "
                  f"pruned {c['pruned']}, diverged {c['diverged']}, failed {c['failed']}) running {c['running']}")
        best = _best(study, trials)  # one storage read per refresh, not two
        best_text = ""
        if best is not None:
            params = " ".join(f"{k}={_short(v)}" for k, v in best.params.items())
            best_text = f"best {self.spec.metric} {best.value:.4f} (trial {best.number}: {params})"
        done_now = c["finished"]
        eta = f"ETA {_clock(elapsed / done_now * (n - done_now))}" if n and 0 < done_now < n else ""
        return counts, best_text, eta

    def update(self, study: Any) -> None:
        counts, best, eta = self.parts(study)
        if self.tty:
            self._draw([p for p in (counts, best, eta) if p])
            return
        # A plain line when the counts or the best change, and every 30 s: not at every tick of the
        # clock or the ETA, which would fill a CI log with copies of one line.
        state = (counts.split("] ", 1)[1], best)
        now = self.clock()
        if state != self.last_state or now - self.last_print >= 30:
            print(" | ".join(p for p in (counts, best, eta) if p), file=self.stream, flush=True)
            self.last_state, self.last_print = state, now

    def _draw(self, lines: list[str]) -> None:
        """Redraw the block in place: counts, best so far, ETA, one per line, cut to the width."""
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns
        except OSError:
            width = 0
        width = width if width >= 40 else 120  # some terminals (and `script`) report 0
        up = f"\x1b[{self.drawn - 1}F" if self.drawn > 1 else ""
        body = "\n".join("\x1b[2K" + line[: width - 1] for line in lines)
        self.stream.write("\r" + up + body)
        # a block that shrank leaves its old last lines behind: clear them
        for _ in range(max(0, self.drawn - len(lines))):
            self.stream.write("\n\x1b[2K")
        if self.drawn > len(lines):
            self.stream.write(f"\x1b[{self.drawn - len(lines)}F")
        self.stream.flush()
        self.drawn = max(len(lines), 1)

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60:02d}:{seconds % 60:02d}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _best(study: Any, trials: list[Any] | None = None) -> Any:
    """The best complete trial; ``trials`` saves reading the storage again when already read."""
    from optuna.trial import TrialState

    if trials is None:
        trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE
            and t.value is not None and math.isfinite(t.value)]
    if not done:
        return None
    pick = max if study.direction.name == "MAXIMIZE" else min
    return pick(done, key=lambda t: t.value)


class Supervisor:
    """Starts and watches the worker processes of one study.

    Local workers start before the study is checked (:meth:`warm_up`): they import torch, MLflow and
    Optuna while the supervisor composes and validates, and wait on their stdin, having written
    nothing, for where to log and the composed trial configs (:meth:`run`). Bad input kills them
    (:meth:`abandon`).
    """

    def __init__(self, spec: StudySpec, *, stream: Any = None) -> None:
        self.spec = spec
        self.study: Any = None
        devices: list[int | None] = [d for d in spec.devices for _ in range(spec.trials_per_device)]
        n = len(devices) if devices else spec.workers
        self.slots = [_Slot(i, devices[i] if devices else None) for i in range(n)]
        self.deadline: float | None = None
        self.progress = _Progress(spec, stream)
        # Torch threads per worker: the cores split across workers, unless the study says (e.g.
        # `ablate sweep S trainer.threads=1`), which wins.
        self.threads = None if "trainer.threads" in {**spec.fixed, **spec.params} else worker_threads(n)
        self.logs = Path(spec.out_dir)
        self.composed_file: str | None = None  # the composed trial configs, pickled for the workers
        self.local = spec.launcher.get("name") != "slurm"

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

    def _spawn(self, slot: _Slot) -> None:
        if not self.local:
            from ablate.launchers import submit_worker

            env = {} if self.threads is None else \
                {"ABLATE_THREADS": str(self.spec.launcher.get("cpus_per_task", self.threads))}
            if int(self.spec.launcher.get("gpus_per_node", 0)):
                env["ABLATE_DEVICE"] = "cuda"
            slot.process = submit_worker(self.spec.launcher, folder=self.logs, study=self.spec.name,  # type: ignore[assignment]
                                         storage=self.spec.storage, index=slot.index,
                                         deadline=self.deadline, env=env)
            return
        if slot.process is None or slot.process.poll() is not None:  # not warm (a restart, or it died)
            self._start(slot)
        self._go(slot)

    def _start(self, slot: _Slot) -> None:
        import tempfile

        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("MLFLOW_RUN_ID", None)  # would hijack every child run
        env.pop("ABLATE_THREADS", None)
        if self.threads is not None:
            env["ABLATE_THREADS"] = str(self.threads)
        if slot.device is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot.device)
            env["ABLATE_DEVICE"] = "cuda"
        env["ABLATE_STORAGE"] = self.spec.storage  # not in argv, where ps and logs would show a password
        command = [sys.executable, "-m", "ablate", "worker", self.spec.name, "--index", str(slot.index),
                   "--supervised", "--standby"]  # the stored recipe is this sweep's: nothing to compare
        # Until it is told its log, a worker's output goes to an unnamed file (kept if it dies early).
        slot.early = tempfile.TemporaryFile()  # noqa: SIM115 (closed in _reap / abandon)
        # A session of their own: Ctrl-C reaches the supervisor, which forwards it once, in order.
        slot.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=slot.early,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def _go(self, slot: _Slot) -> None:
        """Tell a standby worker where to log, its deadline and where the composed configs are."""
        import json

        assert slot.process is not None and slot.process.stdin is not None
        go = {"log": str((self.logs / f"worker-{slot.index}.log").resolve()), "deadline": self.deadline,
              "composed": self.composed_file}
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

    def _remaining(self) -> bool:
        if self.deadline and time.time() >= self.deadline:
            return False
        if self.spec.n_trials is None:
            return True
        return count_states(self.study.get_trials(deepcopy=False))["finished"] < self.spec.n_trials

    def fail_stale(self, *, pids: set[int] | None = None) -> int:
        """Fail (and queue again) RUNNING trials held by dead workers of this host."""
        import socket

        from optuna.trial import TrialState

        host = socket.gethostname()
        failed = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            holder = t.user_attrs.get(WORKER_ATTR, "")
            h, _, pid = holder.rpartition(":")
            if h != host or not pid.isdigit():
                continue  # another machine's worker: RDB heartbeats cover it
            if (pids is not None and int(pid) in pids) or (pids is None and not _alive(int(pid))):
                fail_stale_trial(self.study, t)
                failed += 1
        return failed

    def run(self, study: Any, spec: StudySpec, composer: Any = None) -> int:
        """Run the workers until the study is done; ``composer`` (checked) gives them its configs."""
        import pickle
        import tempfile

        self.study, self.spec = study, spec
        self.deadline = time.time() + spec.timeout if spec.timeout else None
        self.fail_stale()  # a previous session's workers may have been killed mid-trial
        if not self._remaining():
            self.abandon()
            self.progress.update(self.study)
            return 0
        if composer is not None and self.local:
            fd, self.composed_file = tempfile.mkstemp(prefix="ablate-composed-", suffix=".pkl")
            with os.fdopen(fd, "wb") as f:
                pickle.dump(composer.composed, f)
        try:
            return self._watch()
        finally:
            if self.composed_file:
                os.unlink(self.composed_file)
                self.composed_file = None

    def _watch(self) -> int:
        for slot in self.slots:
            self._spawn(slot)
        try:
            while not all(s.done for s in self.slots):
                for slot in self.slots:
                    if slot.done or slot.process is None or slot.process.poll() is None:
                        continue
                    self._reap(slot)
                    rc = slot.process.returncode
                    if rc != 0:  # by pid, and by liveness (a submitit job's pid is its wrapper's)
                        self.fail_stale(pids={slot.process.pid})
                        self.fail_stale()
                    if self._remaining() and rc != 0 and slot.restarts < _MAX_RESTARTS:
                        slot.restarts += 1
                        print(f"worker {slot.index} exited with {rc}; restarting it "
                              f"(log: {self.logs / f'worker-{slot.index}.log'})", file=sys.stderr, flush=True)
                        self._spawn(slot)
                    else:
                        slot.done = True
                self.progress.update(self.study)
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.stop()
            raise
        finally:
            self.progress.update(self.study)
            self.progress.close()
            if self.spec.launcher.get("name") == "slurm":
                import gc

                for slot in self.slots:  # submitit's local jobs must not outlive the interpreter's modules
                    slot.process = None
                gc.collect()
        return 0

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
        self.fail_stale(pids={p.pid for p in alive})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finish_parent(study: Any, spec: StudySpec, parent_run_id: str, status: str) -> dict[str, int]:
    """Record counts by state, the best value and params on the study's MLflow parent run."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from ablate.tracking import signals_deferred

    client = MlflowClient(tracking_uri=spec.tracking_uri)
    trials = study.get_trials(deepcopy=False)
    counts = count_states(trials)
    now = int(time.time() * 1000)
    metrics = [Metric(f"n_{k}", float(v), now, 0) for k, v in counts.items()]
    tags = [RunTag("status", status.lower())]
    best = _best(study, trials)
    if best is not None:
        metrics.append(Metric(f"best_{spec.metric}", float(best.value), now, 0))
        tags += [RunTag("best_trial", str(best.number)),
                 RunTag("best_run_id", str(best.user_attrs.get("ablate.mlflow_run_id", "")))]
        tags += [RunTag(f"best.{k}", str(v)) for k, v in best.params.items()]
    with signals_deferred():  # not left RUNNING by a Ctrl-C between the two writes
        client.log_batch(parent_run_id, metrics=metrics, tags=tags)
        client.set_terminated(parent_run_id, status)
    return counts


def best_command(spec: StudySpec, best: Any) -> str:
    space = spec.space()
    return " ".join(["ablate train", *space.overrides(best.params)])


def summary(study: Any, spec: StudySpec, parent_run_id: str, elapsed: float, workers: int) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = count_states(trials)
    lines = [f"Study {spec.name}: {counts['finished']} finished (complete {counts['complete']}, pruned "
             f"{counts['pruned']}, diverged {counts['diverged']}, failed {counts['failed']}) in "
             f"{_clock(elapsed)} with {workers} worker{'s' if workers != 1 else ''}"]
    best = _best(study, trials)
    if best is None:
        lines.append(f"No complete trial yet: no best {spec.metric}.")
    else:
        lines.append(f"Best {spec.metric} {best.value:.4f} (trial {best.number}); to train it again:")
        lines.append(f"  {best_command(spec, best)}")
    uri = spec.tracking_uri
    ui = "ablate ui" + ("" if uri == _absolute_uri("sqlite:///mlflow.db", Path.cwd()) else f" tracking.uri={uri}")
    lines.append(f"MLflow:  {ui}   (experiment '{spec.experiment}', parent run {parent_run_id})")
    storage = redact(spec.storage)
    shown = os.path.relpath(storage) if "://" not in storage else storage
    lines.append(f"Optuna:  optuna-dashboard {shown}")
    logs = "slurm/*_log.out" if spec.launcher.get("name") == "slurm" else "worker-*.log"
    lines.append(f"Logs:    {os.path.relpath(spec.out_dir)}/{logs}")
    return "\n".join(lines)


def run_sweep(name: str, overrides: Sequence[str] = ()) -> int:
    """``ablate sweep <name> [overrides]``: returns the process exit code."""
    spec = compose_study(name, overrides)
    supervisor = Supervisor(spec)
    supervisor.warm_up()  # the workers import while the study is checked and created
    try:
        composer = check_trial_configs(spec)
        study, spec, parent = prepare_study(spec, composer)
    except BaseException:
        supervisor.abandon()
        raise
    n = len(supervisor.slots)
    print(f"Study {spec.name}: {spec.n_trials or 'unlimited'} trials, {n} worker{'s' if n != 1 else ''}, "
          f"sampler {spec.sampler['name']}, pruner {spec.pruner['name']}; storage {redact(spec.storage)}",
          flush=True)
    started = time.time()
    try:
        supervisor.run(study, spec, composer)
    except KeyboardInterrupt:
        finish_parent(study, spec, parent, "KILLED")
        print(f"interrupted; rerun the same command to resume study {spec.name}", file=sys.stderr)
        raise
    counts = finish_parent(study, spec, parent, "FINISHED")
    print(summary(study, spec, parent, time.time() - started, n), flush=True)
    exhaustive = spec.sampler["name"] in ("grid", "bruteforce")
    if spec.n_trials and counts["finished"] < spec.n_trials and not spec.timeout and not exhaustive:
        raise AblateError(f"workers: study {spec.name} stopped at {counts['finished']}/{spec.n_trials} "
                          f"finished trials; see {os.path.relpath(spec.out_dir)}/worker-*.log")
    return 0
