"""One MLflow run per ``fit``: params from the resolved config at start, per-epoch metrics in
batches, the outcome at the end; FAILED or KILLED, never left RUNNING, when the body raises."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ablate import records as R
from ablate.config import flatten, trick_summary
from ablate.secrets import redact, redact_text
from ablate.tracking.store import create_store, environment, get_or_create_experiment, git_commit
from ablate.tracking.writer import WRITER, signals_deferred

__all__ = ["RunTracker", "config_record", "error_text", "track_run"]

_MAX_PARAMS_PER_CALL = 100  # MLflow's log_batch limits
_MAX_TAGS_PER_CALL = 100
_MAX_METRICS_PER_CALL = 1000
_MAX_ENTITIES_PER_CALL = 1000

_experiment_ids: dict[tuple[str, str], str] = {}  # a worker's runs share one experiment


def error_text(error: BaseException, *urls: str) -> str:
    """``Type: message`` of ``error`` for a run's error tag, the passwords of ``urls`` as ``***``."""
    return redact_text(f"{type(error).__name__}: {error}", *urls)[:5000]


def config_record(cfg: DictConfig) -> tuple[dict[str, str], str]:
    """A run's params (every leaf of ``cfg``, stringified) and its ``config.yaml`` text.

    The password of ``tracking.uri`` is shown as ``***`` in both (the run itself writes to the
    real store).
    """
    uri = str(cfg.tracking.uri)
    params = {k: redact_text("None" if v is None else str(v), uri) for k, v in flatten(cfg)}
    params["tracking.uri"] = redact(uri)
    return params, redact_text(OmegaConf.to_yaml(cfg, resolve=True), uri)


class RunTracker:
    """One MLflow run: params and tags at start, per-epoch metrics in one batch per epoch.

    Use :func:`track_run`, which also ends the run FAILED or KILLED when the body raises.
    Instances are callable as the ``on_epoch`` callback of :func:`ablate.train.fit`.
    """

    def __init__(self, cfg: DictConfig, *, tags: Mapping[str, str] | None = None,
                 parent_run_id: str | None = None, background: bool = False,
                 on_created: Callable[[str], None] | None = None, parent: RunTracker | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.cfg = cfg
        self.background = background  # every write, creation included, goes to the WRITER thread
        self.error: BaseException | None = None  # the first failed background write
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.run_name: str | None = None
        create_store(cfg.tracking.uri)  # whole or not at all (see create_store)
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
            if parent is not None and parent.run_id is not None:  # created before us, in the same order
                all_tags[R.TAG_PARENT] = parent.run_id
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
    def uri(self) -> str:
        """The run's MLflow store (it may hold a password, which the run's records never show)."""
        return str(self.cfg.tracking.uri)

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
            values, text = config_record(self.cfg)
            params = [Param(k, v) for k, v in values.items()]
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
        final_tags = {R.TAG_STOP_REASON: stop_reason, R.TAG_STATUS: R.FINISHED, **(tags or {})}
        all_tags = [RunTag(k, str(v)) for k, v in final_tags.items()]
        state = str(final_tags[R.TAG_STATUS])

        def write() -> None:
            nonlocal metrics, all_params, all_tags
            while metrics or all_params or all_tags:
                p, all_params = all_params[:_MAX_PARAMS_PER_CALL], all_params[_MAX_PARAMS_PER_CALL:]
                t, all_tags = all_tags[:_MAX_TAGS_PER_CALL], all_tags[_MAX_TAGS_PER_CALL:]
                room = min(_MAX_ENTITIES_PER_CALL - len(p) - len(t), _MAX_METRICS_PER_CALL)
                m, metrics = metrics[:room], metrics[room:]
                self.client.log_batch(self.rid, metrics=m, params=p, tags=t)
            self._mark(state)
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

    def _mark(self, state: str) -> None:
        """Show a pruned, diverged, failed or killed outcome in the run's name (``records.MARKED_STATES``)."""
        if self.run_name and R.marked_run_name(self.run_name, state) != self.run_name:
            self.run_name = R.marked_run_name(self.run_name, state)
            self.client.update_run(self.rid, name=self.run_name)

    def _end_failed(self, error: BaseException) -> None:
        from mlflow.entities import RunTag

        # The write that failed may fail again: the status matters more than the tags.
        with contextlib.suppress(Exception):
            self.client.log_batch(self.rid, tags=[RunTag(R.TAG_STATUS, R.FAILED),
                                                  RunTag(R.TAG_ERROR, error_text(error, self.uri))])
        with contextlib.suppress(Exception):
            self._mark(R.FAILED)
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
            tags[R.TAG_ERROR] = error_text(error, self.uri)
        with signals_deferred():
            self.client.log_batch(self.rid, tags=[RunTag(k, v) for k, v in tags.items()])
            self._mark(status)
            self.client.set_terminated(self.rid, status)


@contextmanager
def track_run(cfg: DictConfig, *, tags: Mapping[str, str] | None = None,
              parent_run_id: str | None = None, background: bool = False,
              on_created: Callable[[str], None] | None = None,
              parent: RunTracker | None = None) -> Iterator[RunTracker]:
    """Open an MLflow run for ``cfg``; the body must call ``tracker.finish(...)`` on success.

    An exception ends the run FAILED, Ctrl-C (KeyboardInterrupt) KILLED; neither leaves it RUNNING.
    ``background``: every write, the run's creation included, goes to a writer thread (see
    ``finish``); ``tracker.run_id`` is set once it is created, when ``on_created(run_id)`` runs.
    ``parent``: a run opened earlier whose id is not known yet (a background one) to nest under.
    """
    tracker = RunTracker(cfg, tags=tags, parent_run_id=parent_run_id, background=background,
                         on_created=on_created, parent=parent)
    try:
        tracker.log_config()
        yield tracker
    except KeyboardInterrupt as exc:
        tracker.end("KILLED", exc)
        raise
    except BaseException as exc:
        tracker.end("FAILED", exc)
        raise
