"""The only MLflow writer: one run per ``fit``, a study's parent run, metrics in batches.

Talks to MLflow through ``MlflowClient`` with explicit run ids (no global active run), so several
runs, threads or processes never step on each other's state. Every tag, metric and artifact name
comes from :mod:`ablate.records`, which the report's reader shares. MLflow is imported inside the
functions that write: ``import mlflow`` costs ~2 s, which ``ablate train --help`` and a bad
override should not pay.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ablate import records as R
from ablate.config import flatten, trick_summary

__all__ = ["WRITER", "RunTracker", "artifact_location", "end_killed_runs", "finish_study_run",
           "get_or_create_experiment", "git_commit", "open_study_run", "signals_deferred", "track_run"]

_MAX_PARAMS_PER_CALL = 100  # MLflow's log_batch limits
_MAX_TAGS_PER_CALL = 100
_MAX_METRICS_PER_CALL = 1000
_MAX_ENTITIES_PER_CALL = 1000


@functools.lru_cache(maxsize=8)
def git_commit(cwd: str | Path | None = None) -> str | None:
    """The HEAD commit of the repository holding ``cwd`` (or this package), if any."""
    for where in (cwd, Path(__file__).resolve().parent):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                 text=True, timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return None


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, str]:
    """Tags that say what produced a run: library versions and the hardware it trained on."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    versions = ", ".join(f"{n} {v(n)}" for n in ("ablate", "torch", "optuna", "mlflow", "hydra-core"))
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    hardware = f"CPU: {cpu} ({os.cpu_count()} cores)"
    import torch  # already imported by whoever trains

    if torch.cuda.is_available():
        hardware = f"GPU: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}; " + hardware
    return {R.TAG_VERSIONS: versions, R.TAG_HARDWARE: hardware, R.TAG_PYTHON: platform.python_version()}


def artifact_location(uri: str) -> str | None:
    """Artifacts of a local SQLite store go beside its database file, not into the working dir."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):]).expanduser().resolve()
        return (db.parent / "mlartifacts").as_uri()
    return None


def get_or_create_experiment(client: Any, name: str, uri: str) -> str:
    """The id of experiment ``name`` in the store at ``uri``, created if absent (safe against a race)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location(uri)))
    except Exception:  # another process created it between our look-up and create
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


_experiment_ids: dict[tuple[str, str], str] = {}


def preload() -> None:
    """Import MLflow's client now (a standby worker pays its imports while the supervisor checks)."""
    import mlflow.tracking  # noqa: F401


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM until an MLflow write is done, then raise KeyboardInterrupt.

    An interrupt in the middle of a SQLite write leaves the database locked, so the write that
    should end the run KILLED would wait out the lock and fail, leaving the run RUNNING.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: pending.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if pending:
            raise KeyboardInterrupt(f"signal {pending[0]}")


class _Writer:
    """Runs queued MLflow writes (and what must follow them) on one background thread, in order.

    A sweep worker's writes then overlap the training that follows them: the last batch of a trial
    and its Optuna ``tell`` run while the next trial starts. Jobs never raise: a tracker records
    its own first error (see :meth:`RunTracker.wait`).
    """

    def __init__(self) -> None:
        import queue

        self._queue: queue.Queue[Callable[[], None]] = queue.Queue()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="ablate-mlflow-writer", daemon=True)
            self._thread.start()
        self._queue.put(job)

    def drain(self) -> None:
        """Wait until every queued job has run."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                job()
            except BaseException:  # noqa: BLE001, S110 - jobs record their own errors
                pass
            finally:
                self._queue.task_done()


WRITER = _Writer()


class RunTracker:
    """One MLflow run: params and tags at start, per-epoch metrics in one batch per epoch.

    Use :func:`track_run`, which also ends the run FAILED or KILLED when the body raises.
    Instances are callable as the ``on_epoch`` callback of :func:`ablate.train.fit`.
    """

    def __init__(self, cfg: DictConfig, *, tags: Mapping[str, str] | None = None,
                 parent_run_id: str | None = None, background: bool = False,
                 on_created: Callable[[str], None] | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.cfg = cfg
        self.background = background  # every write, creation included, goes to the WRITER thread
        self.error: BaseException | None = None  # the first failed background write
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.run_name: str | None = None
        self.client = MlflowClient(tracking_uri=cfg.tracking.uri)
        all_tags = {R.TAG_DATASET: cfg.data.name, R.TAG_TRICKS: trick_summary(cfg), R.TAG_STATUS: R.RUNNING}
        all_tags.update(environment())
        commit = git_commit()
        if commit:
            all_tags[R.TAG_COMMIT] = commit
        if parent_run_id:
            all_tags[R.TAG_PARENT] = parent_run_id
        all_tags.update(tags or {})

        def create() -> None:
            uri, name = cfg.tracking.uri, cfg.tracking.experiment
            if (uri, name) not in _experiment_ids:  # a worker's runs share one experiment: look it up once
                _experiment_ids[uri, name] = get_or_create_experiment(self.client, name, uri)
            self.experiment_id = _experiment_ids[uri, name]
            run = self.client.create_run(self.experiment_id, tags=all_tags,
                                         run_name=cfg.tracking.get("run_name"))
            self.run_id, self.run_name = run.info.run_id, run.info.run_name
            if on_created is not None:
                on_created(self.run_id)
        self._write(create)
        # Per-epoch metrics are buffered and written at most every `flush_every` seconds: an
        # MLflow write costs ~10 ms on SQLite, as much as a small model's epoch.
        self.flush_every = float(cfg.tracking.get("flush_every", 0.0))
        self._pending: list[Any] = []
        self._flushed = time.monotonic()

    @property
    def rid(self) -> str:
        """The run's id; only read by writes, which run after the run's creation."""
        assert self.run_id is not None, "the run was not created"
        return self.run_id

    def _write(self, write: Callable[[], None]) -> None:
        """Run an MLflow write now (signals held), or queue it on the writer thread."""
        if not self.background:
            with signals_deferred():
                write()
            return

        def job() -> None:
            if self.error is None:  # after a failed write the run's later writes are moot
                try:
                    write()
                except Exception as exc:  # noqa: BLE001 - reported by wait() / finish's then
                    self.error = exc
        WRITER.submit(job)

    def wait(self) -> None:
        """Wait for this run's queued writes; raise the first that failed."""
        if self.background:
            WRITER.drain()
        if self.error is not None:
            raise self.error

    def log_config(self) -> None:
        from mlflow.entities import Param

        def write() -> None:  # flattening and serialising the config is part of the (queued) write
            params = [Param(k, "None" if v is None else str(v)) for k, v in flatten(self.cfg)]
            text = OmegaConf.to_yaml(self.cfg, resolve=True)
            for i in range(0, len(params), _MAX_PARAMS_PER_CALL):
                self.client.log_batch(self.rid, params=params[i:i + _MAX_PARAMS_PER_CALL])
            self.client.log_text(self.rid, text, R.ARTIFACT_CONFIG)
        self._write(write)

    def log_metrics(self, metrics: Mapping[str, float], step: int, *, flush: bool = True) -> None:
        """Queue ``metrics`` at ``step``; write the queue now (``flush``) or when it is due."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if flush or time.monotonic() - self._flushed >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        batch, self._pending = self._pending, []
        self._flushed = time.monotonic()
        if not batch:
            return

        def write() -> None:
            for i in range(0, len(batch), _MAX_METRICS_PER_CALL):
                self.client.log_batch(self.rid, metrics=batch[i:i + _MAX_METRICS_PER_CALL])
        self._write(write)

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        self.log_metrics(metrics, step=epoch, flush=False)
        return False

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items()]

        def write() -> None:
            self.client.log_batch(self.rid, tags=batch)
        self._write(write)

    def finish(self, final: Mapping[str, float], stop_reason: str, *,
               params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
               then: Callable[[BaseException | None], None] | None = None) -> None:
        """Record final metrics, extra params and tags and the stop reason; end the run FINISHED.

        The curves still queued, the final metrics, the params and the tags go in one batch where
        MLflow's limits allow (one write, not four). ``then(error)`` runs after the run's last
        write (on the writer thread when in the background), with the first write that failed or
        None: a sweep worker tells Optuna there, so a trial is never told before its run is ended.
        Without ``then``, a failed write raises here.
        """
        from mlflow.entities import Param, RunTag

        self.log_metrics(final, step=0, flush=False)  # NaN is kept: a diverged run's test_acc is unknown
        metrics, self._pending = self._pending, []
        all_params = [Param(k, str(v)) for k, v in (params or {}).items()]
        all_tags = [RunTag(k, str(v)) for k, v in {R.TAG_STOP_REASON: stop_reason, R.TAG_STATUS: R.FINISHED,
                                                    **(tags or {})}.items()]

        def write() -> None:
            nonlocal metrics, all_params, all_tags
            while metrics or all_params or all_tags:
                p, all_params = all_params[:_MAX_PARAMS_PER_CALL], all_params[_MAX_PARAMS_PER_CALL:]
                t, all_tags = all_tags[:_MAX_TAGS_PER_CALL], all_tags[_MAX_TAGS_PER_CALL:]
                room = min(_MAX_ENTITIES_PER_CALL - len(p) - len(t), _MAX_METRICS_PER_CALL)
                m, metrics = metrics[:room], metrics[room:]
                self.client.log_batch(self.rid, metrics=m, params=p, tags=t)
            self.client.set_terminated(self.rid, "FINISHED")
        self._write(write)
        if then is None:
            self.wait()
        elif self.background:
            def after() -> None:
                if self.error is not None and self.run_id is not None:
                    self._end_failed(self.error)  # not left RUNNING if the store lets us
                then(self.error)
            WRITER.submit(after)
        else:
            then(None)

    def _end_failed(self, error: BaseException) -> None:
        from mlflow.entities import RunTag

        # The write that failed may fail again: the status matters more than the tags.
        with contextlib.suppress(Exception):
            self.client.log_batch(self.rid, tags=[RunTag(R.TAG_STATUS, R.FAILED),
                                                  RunTag(R.TAG_ERROR, _error_text(error))])
        with contextlib.suppress(Exception):  # nothing more can be done from here
            self.client.set_terminated(self.rid, "FAILED")

    def end(self, status: str, error: BaseException | None = None) -> None:
        from mlflow.entities import RunTag

        self.background = False  # from here on, write now: the process may be on its way out
        WRITER.drain()  # this run's queued writes first (a no-op when nothing was queued)
        self.error = None
        if self.run_id is None:  # its creation failed: there is no run to end
            return
        self.flush()  # the curves up to the interruption are worth keeping
        tags: dict[str, str] = {R.TAG_STATUS: status.lower()}
        if error is not None:
            tags[R.TAG_ERROR] = _error_text(error)
        with signals_deferred():
            self.client.log_batch(self.rid, tags=[RunTag(k, v) for k, v in tags.items()])
            self.client.set_terminated(self.rid, status)


@contextmanager
def track_run(cfg: DictConfig, *, tags: Mapping[str, str] | None = None,
              parent_run_id: str | None = None, background: bool = False,
              on_created: Callable[[str], None] | None = None) -> Iterator[RunTracker]:
    """Open an MLflow run for ``cfg``; the body must call ``tracker.finish(...)`` on success.

    An exception ends the run FAILED, Ctrl-C (KeyboardInterrupt) KILLED; neither leaves it RUNNING.
    ``background``: every write, the run's creation included, goes to a writer thread (see
    ``finish``); ``tracker.run_id`` is set once it is created, when ``on_created(run_id)`` runs.
    """
    tracker = RunTracker(cfg, tags=tags, parent_run_id=parent_run_id, background=background,
                         on_created=on_created)
    try:
        tracker.log_config()
        yield tracker
    except KeyboardInterrupt as exc:
        tracker.end("KILLED", exc)
        raise
    except BaseException as exc:
        tracker.end("FAILED", exc)
        raise


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:5000]


def open_study_run(*, tracking_uri: str, experiment: str, name: str, storage: str, design: str | None,
                   document: str, parent_run_id: str | None = None) -> str:
    """Create a study's MLflow parent run, or mark an existing one RUNNING again (a resume).

    Args:
        tracking_uri: The MLflow store.
        experiment: Its experiment (created, with artifacts beside a SQLite store, if absent).
        name: The study name (the run's name and its ``optuna.study`` tag).
        storage: The Optuna storage, password redacted.
        design: The ablation design, or None for a search.
        document: The study spec as :meth:`StudySpec.to_json` wrote it: the ``study.json`` artifact.
        parent_run_id: The parent run of an earlier session, if any.

    Returns:
        The parent run's id.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = get_or_create_experiment(client, experiment, tracking_uri)
    if parent_run_id:
        client.update_run(parent_run_id, status="RUNNING")
        return parent_run_id
    tags = {R.TAG_KIND: R.KIND_STUDY, R.TAG_STUDY: name, R.TAG_STORAGE: storage,
            R.TAG_DESIGN: design or "search", R.TAG_STATUS: R.RUNNING}
    commit = git_commit()
    if commit:
        tags[R.TAG_COMMIT] = commit
    run_id: str = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    client.log_text(run_id, document, R.ARTIFACT_STUDY)
    return run_id


def finish_study_run(*, tracking_uri: str, parent_run_id: str, status: str, counts: Mapping[str, int],
                     metric: str, best: tuple[int, float, str, Mapping[str, Any]] | None) -> None:
    """End a study's parent run: counts by state, the best value, its trial, run and params.

    Args:
        status: MLflow's end status (FINISHED, KILLED).
        counts: Trials by state (``n_<state>`` metrics).
        metric: The study's metric (``best_<metric>``).
        best: ``(trial number, value, its MLflow run id, its params)`` of the best trial, if any.
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    now = int(time.time() * 1000)
    metrics = [Metric(R.count_metric(k), float(v), now, 0) for k, v in counts.items()]
    tags = [RunTag(R.TAG_STATUS, status.lower())]
    if best is not None:
        number, value, run_id, params = best
        metrics.append(Metric(R.best_metric(metric), float(value), now, 0))
        tags += [RunTag(R.TAG_BEST_TRIAL, str(number)), RunTag(R.TAG_BEST_RUN, run_id)]
        tags += [RunTag(f"{R.BEST_PARAM_PREFIX}{k}", str(v)) for k, v in params.items()]
    with signals_deferred():  # not left RUNNING by a Ctrl-C between the two writes
        client.log_batch(parent_run_id, metrics=metrics, tags=tags)
        client.set_terminated(parent_run_id, status)


def end_killed_runs(*, tracking_uri: str, parent_run_id: str | None, trial_number: int,
                    run_ids: Iterable[str] = ()) -> None:
    """End KILLED the still RUNNING MLflow runs of a trial whose worker died.

    Its run is found by the id recorded on the trial (``run_ids``), and by the study's parent run
    and the trial's number (tags of every child run): a worker killed between creating the run and
    recording its id on the trial leaves a run that only the tags lead to.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = set(run_ids)
    try:
        if parent_run_id:
            experiment = client.get_run(parent_run_id).info.experiment_id
            found = client.search_runs([experiment], filter_string=(
                f"tags.`{R.TAG_PARENT}` = '{parent_run_id}' "
                f"and tags.`{R.TAG_TRIAL_NUMBER}` = '{trial_number}' "
                "and attributes.status = 'RUNNING'"))
            runs |= {r.info.run_id for r in found}
    except Exception:  # noqa: BLE001, S110 - the store is unreachable: the id on the trial is all there is
        pass
    for run_id in runs:
        try:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, R.TAG_STATUS, R.KILLED)
                client.set_terminated(run_id, "KILLED")
        except Exception:  # noqa: BLE001, S110 - the run may never have been created
            pass
