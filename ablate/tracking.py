"""Everything MLflow: one run per ``fit``, params from the resolved config, metrics in batches.

Talks to MLflow through ``MlflowClient`` with explicit run ids (no global active run), so several
runs, threads or processes never step on each other's state.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ablate.config import flatten, trick_summary

__all__ = ["RunTracker", "artifact_location", "get_or_create_experiment", "git_commit", "signals_deferred",
           "track_run"]

_MAX_PARAMS_PER_CALL = 100  # MLflow's log_batch limit
_MAX_METRICS_PER_CALL = 1000


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
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hardware = f"CPU: {cpu} ({os.cpu_count()} cores)"
    import torch  # already imported by whoever trains

    if torch.cuda.is_available():
        hardware = f"GPU: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}; " + hardware
    return {"ablate.versions": versions, "ablate.hardware": hardware,
            "ablate.python": platform.python_version()}


def artifact_location(uri: str) -> str | None:
    """Artifacts of a local SQLite store go beside its database file, not into the working dir."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):]).expanduser().resolve()
        return (db.parent / "mlartifacts").as_uri()
    return None


def get_or_create_experiment(client: Any, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(uri))
    except Exception:  # another process created it between our look-up and create
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


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


class RunTracker:
    """One MLflow run: params and tags at start, per-epoch metrics in one batch per epoch.

    Use :func:`track_run`, which also ends the run FAILED or KILLED when the body raises.
    Instances are callable as the ``on_epoch`` callback of :func:`ablate.train.fit`.
    """

    def __init__(self, cfg: DictConfig, *, tags: Mapping[str, str] | None = None,
                 parent_run_id: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.cfg = cfg
        uri = cfg.tracking.uri
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = get_or_create_experiment(self.client, cfg.tracking.experiment, uri)
        all_tags = {
            "dataset": cfg.data.name,
            "tricks": trick_summary(cfg),
            "status": "running",
        }
        all_tags.update(environment())
        commit = git_commit()
        if commit:
            all_tags["mlflow.source.git.commit"] = commit
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        all_tags.update(tags or {})
        run = self.client.create_run(self.experiment_id, tags=all_tags,
                                     run_name=cfg.tracking.get("run_name"))
        self.run_id: str = run.info.run_id
        self.run_name: str = run.info.run_name
        # Per-epoch metrics are buffered and written at most every `flush_every` seconds: an
        # MLflow write costs ~10 ms on SQLite, as much as a small model's epoch.
        self.flush_every = float(cfg.tracking.get("flush_every", 0.0))
        self._pending: list[Any] = []
        self._flushed = time.monotonic()

    def log_config(self) -> None:
        from mlflow.entities import Param

        params = [Param(k, "None" if v is None else str(v)) for k, v in flatten(self.cfg)]
        with signals_deferred():
            for i in range(0, len(params), _MAX_PARAMS_PER_CALL):
                self.client.log_batch(self.run_id, params=params[i:i + _MAX_PARAMS_PER_CALL])
            self.client.log_text(self.run_id, OmegaConf.to_yaml(self.cfg, resolve=True), "config.yaml")

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
        with signals_deferred():
            for i in range(0, len(batch), _MAX_METRICS_PER_CALL):
                self.client.log_batch(self.run_id, metrics=batch[i:i + _MAX_METRICS_PER_CALL])

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        self.log_metrics(metrics, step=epoch, flush=False)
        return False

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        with signals_deferred():
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def finish(self, final: Mapping[str, float], stop_reason: str, *,
               params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None) -> None:
        """Record final metrics, extra params and tags and the stop reason; end the run FINISHED."""
        from mlflow.entities import Param

        if params:
            with signals_deferred():
                self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        self.log_metrics(final, step=0)  # NaN is kept: a diverged run's test_acc is unknown, not 0
        self.set_tags({"stop_reason": stop_reason, "status": "finished", **(tags or {})})
        with signals_deferred():
            self.client.set_terminated(self.run_id, "FINISHED")

    def end(self, status: str, error: BaseException | None = None) -> None:
        from mlflow.entities import RunTag

        self.flush()  # the curves up to the interruption are worth keeping
        tags: dict[str, str] = {"status": status.lower()}
        if error is not None:
            tags["error"] = f"{type(error).__name__}: {error}"[:5000]
        with signals_deferred():
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            self.client.set_terminated(self.run_id, status)


@contextmanager
def track_run(cfg: DictConfig, *, tags: Mapping[str, str] | None = None,
              parent_run_id: str | None = None) -> Iterator[RunTracker]:
    """Open an MLflow run for ``cfg``; the body must call ``tracker.finish(...)`` on success.

    An exception ends the run FAILED, Ctrl-C (KeyboardInterrupt) KILLED; neither leaves it RUNNING.
    """
    tracker = RunTracker(cfg, tags=tags, parent_run_id=parent_run_id)
    try:
        tracker.log_config()
        yield tracker
    except KeyboardInterrupt as exc:
        tracker.end("KILLED", exc)
        raise
    except BaseException as exc:
        tracker.end("FAILED", exc)
        raise
