"""Writes that must not be torn: Ctrl-C held during an MLflow write, and the background writer
thread that overlaps a trial's last writes with the next trial's training."""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["WRITER", "signals_deferred"]


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
