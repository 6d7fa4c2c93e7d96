"""The Optuna storage a study lives in: opening it, trial states, heartbeats and stale-trial retry.

Every worker and the supervisor share one storage: a ``JournalStorage`` file (several processes
of one machine) or an RDB URL (PostgreSQL, many machines). A trial's outcome beyond Optuna's own
states (diverged, surplus, killed and queued again) lives in its user attributes, named in
:mod:`ablate.records`. This module knows nothing of MLflow: what must happen to a killed trial's
run is a hook its callers pass in (``on_killed``).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import inspect
import io
import itertools
import json
import math
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from ablate.errors import AblateError
from ablate.processes import process_alive
from ablate.records import (
    ATTR_CONFIRM_OF,
    ATTR_ERROR,
    ATTR_HEARTBEAT,
    ATTR_OUTCOME,
    ATTR_RETRY_OF,
    ATTR_WORKER,
    DIVERGED,
    FAILED,
    SURPLUS,
)
from ablate.secrets import redact, redact_text
from ablate.tracking.store import sqlite_path

__all__ = [
    "CONFIDENCE",
    "Heartbeat",
    "KilledHook",
    "ask_lock",
    "best_trial",
    "budget_held",
    "confirm_of",
    "confirmation_values",
    "confirmed",
    "count_states",
    "fail_and_retry",
    "holder",
    "is_finished",
    "is_repeat",
    "is_surplus",
    "open_storage",
    "others_hold_the_rest",
    "out_of_failures",
    "process_alive",
    "ranked_trials",
    "redact",
    "redact_text",
    "repair_journal",
    "retried_from",
    "retry_params",
    "spent_failures",
    "stale_trial_callback",
    "unclaimed",
    "worker_id",
]

KilledHook = Callable[[Study, FrozenTrial], None]
"""Called after a killed trial was failed and queued again: ends its MLflow run KILLED."""

COUNTED = ("complete", "pruned", "diverged", "failed", "killed", "running", "finishing", "waiting")


def worker_id() -> str:
    """``host:pid`` of this process: what a trial's ``ablate.worker`` attribute holds."""
    return f"{socket.gethostname()}:{os.getpid()}"


def open_storage(url: str, *, create_dirs: bool = False, heartbeat_interval: int | None = 60,
                 grace_period: int | None = 180, on_killed: KilledHook | None = None) -> BaseStorage:
    """An Optuna storage: a JournalStorage file (a path) or an RDB URL (``postgresql://...``).

    An RDB storage records each running trial's heartbeat every ``heartbeat_interval`` seconds; a
    trial silent for ``grace_period`` seconds (its worker died, on whatever machine) is failed and
    queued again by Optuna's retry callback, then handed to ``on_killed``. A journal file has no
    heartbeats (the supervisor of the machine that ran the trial retries it).

    Raises:
        AblateError: the storage cannot be reached (one line; the password is never shown).
    """
    if "://" not in url:
        path = Path(url)
        if not path.parent.is_dir():
            if not create_dirs:
                raise AblateError(f"storage: {url!r} does not exist (no study has been run there)")
            path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            repair_journal(path)
        elif not create_dirs:  # Optuna would create an empty journal: a typo'd path joins no study
            raise AblateError(f"storage: {url!r} does not exist (no study has been run there)")
        return JournalStorage(JournalFileBackend(str(path)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if not heartbeat_interval:
                return RDBStorage(url)
            keyword, callback = stale_trial_callback(on_killed)
            if keyword == "heartbeat_stale_trial_callback":
                return RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                  heartbeat_stale_trial_callback=callback)
            return RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                              failed_trial_callback=callback)  # Optuna before 4.x's rename
    except Exception as exc:  # noqa: BLE001 - any driver error becomes one line without the password
        reason = " ".join(str(exc).split())[:300]
        raise AblateError(f"storage: cannot reach {redact(url)} ({redact_text(reason, url)})") from None


def _torn_tail(path: Path) -> tuple[int, int] | None:
    """``(line, byte offset)`` of a torn last record of the journal at ``path``, None when it has none.

    Optuna's ``JournalFileBackend`` writes each record as one line of JSON ending in a newline, the
    lines of one write at once, under its lock. A write cut short (a power loss, a kill) leaves a
    last line without its newline, or bytes that are no JSON (a file system's zero fill): torn.

    Raises:
        AblateError: a record before the last is not a complete JSON record (the journal was
            damaged some other way; which trial it held is not for ablate to guess).
    """
    bad: tuple[int, int] | None = None
    offset = 0
    with open(path, "rb") as f:  # the bytes there now: what another process appends later is no tear
        snapshot = io.BytesIO(f.read(os.fstat(f.fileno()).st_size))
        for number, line in enumerate(snapshot, start=1):
            if bad is not None:
                raise AblateError(f"storage: {path} is corrupt at line {bad[0]} (byte {bad[1]}): not a "
                                  "complete JSON record, and records follow it; restore the file from a "
                                  "backup, or move it aside to start the study afresh")
            try:
                ok = line.endswith(b"\n") and isinstance(json.loads(line), dict)
            except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
                ok = False
            if not ok:
                bad = (number, offset)
            offset += len(line)
    return bad


def repair_journal(path: Path) -> None:
    """Move a torn last record of the journal at ``path`` aside, so that no record is appended onto it.

    The torn bytes go to ``<journal>.torn-<time>`` beside it, the journal is truncated to its last
    complete record and one line on stderr says so. The check is repeated under the journal's own
    lock, so a record another process is writing right now is never mistaken for a torn one.

    Raises:
        AblateError: a corrupt record before the last (see :func:`_torn_tail`), or the journal's
            folder is not writable.
    """
    if _torn_tail(path) is None:
        return
    lock = JournalFileSymlinkLock(str(path))
    try:
        lock.acquire()
    except OSError as exc:  # a read-only folder: the lock file cannot be made
        raise AblateError(f"storage: {path} ends in a torn record that cannot be moved aside: "
                          f"{exc.strerror or exc}") from None
    try:
        torn = _torn_tail(path)
        if torn is None:
            return  # a write in progress, finished by now
        line, offset = torn
        stamp = time.strftime("%Y%m%dT%H%M%S")
        backup = path.with_name(f"{path.name}.torn-{stamp}")
        for n in itertools.count(2):
            if not backup.exists():
                break
            backup = path.with_name(f"{path.name}.torn-{stamp}-{n}")
        try:
            with open(path, "rb+") as journal:
                journal.seek(offset)
                tail = journal.read()
                with open(backup, "xb") as aside:
                    aside.write(tail)
                    aside.flush()
                    os.fsync(aside.fileno())
                journal.truncate(offset)
                journal.flush()
                os.fsync(journal.fileno())
        except OSError as exc:
            raise AblateError(f"storage: {path} ends in a torn record (line {line}, byte {offset}) that "
                              f"cannot be moved aside: {exc.strerror or exc}") from None
    finally:
        lock.release()
    print(f"ablate: storage: {path} ended in a torn record (line {line}, byte {offset}, {len(tail)} "
          f"bytes; a write cut short): moved to {backup}, the journal now ends at its last complete "
          "record", file=sys.stderr, flush=True)


def is_finished(trial: FrozenTrial) -> bool:
    """Complete, pruned, or diverged: an outcome that counts towards ``n_trials``."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and trial.user_attrs.get(ATTR_OUTCOME) == DIVERGED)


def retried_from(trial: FrozenTrial) -> int | None:
    """The trial that Optuna's stale-trial callback queued ``trial`` to rerun, else None.

    That is the last entry of ``RetryHeartbeatStaleTrialCallback.retry_history(trial)`` (read from
    the system attrs it documents, as the accessor warns as experimental), not
    ``retried_trial_number``, which names the first trial of a chain of retries.
    """
    history = trial.system_attrs.get("retry_history") or []
    return int(history[-1]) if history else None


def count_states(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """Counts by outcome: complete, pruned, diverged, failed, killed, running (training: at most one
    per worker), finishing (trained, being recorded), waiting, and finished (complete + pruned + diverged)."""
    counts = dict.fromkeys(COUNTED, 0)
    retried = {t.user_attrs.get(ATTR_RETRY_OF) for t in trials} | {retried_from(t) for t in trials}
    retried.discard(None)
    # A worker trains one trial at a time; its earlier RUNNING ones are being recorded (their MLflow
    # writes and tell run on its writer thread while the next trial trains): "finishing".
    training: dict[str, int] = {}
    for t in trials:
        if t.state == TrialState.RUNNING and ATTR_WORKER in t.user_attrs:
            who = str(t.user_attrs[ATTR_WORKER])
            training[who] = max(training.get(who, t.number), t.number)
    for t in trials:
        outcome = t.user_attrs.get(ATTR_OUTCOME)
        if outcome == DIVERGED:
            counts["diverged"] += 1
        elif t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
        elif t.state == TrialState.RUNNING:
            held_by = t.user_attrs.get(ATTR_WORKER)
            counts["running" if held_by is None or training[str(held_by)] == t.number else "finishing"] += 1
        elif t.state == TrialState.WAITING:
            counts["waiting"] += 1
        elif t.number in retried:
            counts["killed"] += 1  # and queued again
        elif outcome != SURPLUS:  # a surplus trial was asked near the end and never ran
            counts["failed"] += 1
    counts["finished"] = counts["complete"] + counts["pruned"] + counts["diverged"]
    return counts


def confirm_of(trial: FrozenTrial) -> int | None:
    """The search trial whose parameters ``trial`` trains again on another seed (a confirmation
    trial, queued with :data:`~ablate.records.ATTR_CONFIRM_OF`), else None."""
    value = trial.system_attrs.get("fixed_params", {}).get(ATTR_CONFIRM_OF)
    return None if value is None else int(value)


def ranked_trials(trials: Sequence[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """The search's complete trials with a finite value, best first (ties: the earlier trial).

    Never a pruned, failed or diverged trial (a diverged one is held COMPLETE by Optuna with its last
    finite value, which may beat every trial that trained well), nor a confirmation trial (one seed
    of another trial's recipe).
    """
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
            and t.value == t.value and abs(t.value) != float("inf")
            and t.user_attrs.get(ATTR_OUTCOME) != DIVERGED and confirm_of(t) is None]
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(done, key=lambda t: (sign * float(t.value), t.number))  # type: ignore[arg-type]


def best_trial(trials: Sequence[FrozenTrial], direction: str) -> FrozenTrial | None:
    """The best trial of :func:`ranked_trials` (``direction``: maximize or minimize), or None."""
    ranked = ranked_trials(trials, direction)
    return ranked[0] if ranked else None


CONFIDENCE = 0.95
"""The level of a confirmed trial's t-interval of its mean (:func:`confirmed`)."""


def confirmation_values(trials: Sequence[FrozenTrial], direction: str) -> dict[int, list[float]]:
    """Each confirmed trial's values: its own, then its confirmation runs' (complete, not diverged)."""
    values: dict[int, list[float]] = {}
    ok = {t.number for t in ranked_trials(trials, direction)}
    for t in trials:
        of = confirm_of(t)
        if of is None or of not in ok:
            continue
        good = (t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
                and t.user_attrs.get(ATTR_OUTCOME) != DIVERGED)
        values.setdefault(of, [])
        if good:
            values[of].append(float(t.value))  # type: ignore[arg-type]
    by_number = {t.number: t for t in trials}
    return {of: [float(by_number[of].value), *v] for of, v in values.items()}  # type: ignore[arg-type]


def confirmed(trials: Sequence[FrozenTrial], direction: str) -> list[dict[str, Any]]:
    """The confirmed trials, best mean first: ``trial``, ``n`` (seeds with a value, its own
    included), ``mean``, ``ci_low``, ``ci_high`` (the t-interval at :data:`CONFIDENCE`)."""
    import pandas as pd  # the analysis stack: only for a search with confirm

    from ablate.analysis import confirmed_means

    rows = [{"trial": of, "value": v} for of, values in confirmation_values(trials, direction).items()
            for v in values]
    if not rows:
        return []
    table = confirmed_means(pd.DataFrame(rows), "value", group="trial", ci=CONFIDENCE,
                            maximize=direction == "maximize")
    return [{"trial": int(r.trial), "n": int(r.n), "mean": float(r.mean), "ci_low": float(r.ci_low),
             "ci_high": float(r.ci_high)} for r in table.itertuples(index=False)]


def spent_failures(trials: Sequence[FrozenTrial], max_failures: int, *, since: int = 0) -> FrozenTrial | None:
    """The last failure once ``max_failures`` trials numbered ``since`` or above failed, else None.

    A failure is a trial that raised (outcome ``failed``): not one whose worker died (queued again),
    nor a surplus one, nor a diverged one.
    """
    failed = [t for t in trials if t.number >= since and t.state == TrialState.FAIL
              and t.user_attrs.get(ATTR_OUTCOME) == FAILED]
    if len(failed) < max_failures:
        return None
    return max(failed, key=lambda t: (t.datetime_complete or datetime.datetime.min, t.number))


def out_of_failures(study_name: str, last: FrozenTrial, max_failures: int, traceback_in: str) -> AblateError:
    """The one line that stops a sweep at its failure budget: the last failure's reason, and where
    its traceback is."""
    reason = " ".join(str(last.user_attrs.get(ATTR_ERROR, "no reason recorded")).split())
    reason = reason if len(reason) <= 400 else reason[:397] + "..."
    return AblateError(f"max_failures: study {study_name} stopped: {max_failures} trials failed, the last "
                       f"(trial {last.number}) with {reason}; traceback in {traceback_in}")


def is_surplus(trials: Sequence[FrozenTrial], number: int, n_trials: int) -> bool:
    """True when ``n_trials`` trials numbered below ``number`` are finished, running or queued.

    Workers ask concurrently, so near the end more trials can be asked than are needed; the
    lowest-numbered ones run and the others are closed unrun (outcome ``surplus``). Confirmation
    trials (:func:`confirm_of`) are outside ``n_trials``: they are not counted.
    """
    live = (TrialState.RUNNING, TrialState.WAITING)
    ahead = sum(1 for t in trials if t.number < number and (is_finished(t) or t.state in live)
                and confirm_of(t) is None)
    return ahead >= n_trials


def _pair(params: Mapping[str, Any]) -> tuple[str, int] | None:
    """What a queued trial trains once: an ablation's (arm, seed), a confirmation's (trial, seed)."""
    if "seed" not in params:
        return None
    if "arm" in params:
        return str(params["arm"]), int(params["seed"])
    if ATTR_CONFIRM_OF in params:
        return f"confirm {int(params[ATTR_CONFIRM_OF])}", int(params["seed"])
    return None


def is_repeat(trials: Sequence[FrozenTrial], number: int, params: Mapping[str, Any]) -> bool:
    """True when a lower-numbered trial holds the same pair (an ablation's ``arm`` and ``seed``, a
    confirmation's trial and seed) and is queued, running or finished: ``number`` is a second copy
    and must not run.

    Two copies of a pair can be queued when a round of adaptive seeds (or the confirmation runs) is
    queued while a worker is between failing an interrupted trial and queueing its retry; the
    lowest-numbered copy runs.
    """
    pair = _pair(params)
    if pair is None:
        return False
    live = (TrialState.RUNNING, TrialState.WAITING)
    for t in trials:
        if t.number >= number or not (is_finished(t) or t.state in live):
            continue
        if _pair(retry_params(t)) == pair:
            return True
    return False


CLAIM_WINDOW = 60.0
"""Seconds an asked trial no worker has claimed yet counts as held (its worker is between ask and claim)."""


def _held(trial: FrozenTrial, now: datetime.datetime) -> bool:
    """A RUNNING trial that a live worker holds, or that one is about to claim.

    Heartbeats (an RDB storage) and workers on other machines are trusted: stale ones are failed
    and queued again elsewhere (:meth:`Heartbeat.fail_stale`, the other machine's supervisor). A
    worker of this machine is alive when its process is.
    """
    if ATTR_HEARTBEAT in trial.user_attrs:
        return True
    host, pid = holder(trial)
    if not host:  # asked, not yet claimed
        return trial.datetime_start is None or (now - trial.datetime_start).total_seconds() < CLAIM_WINDOW
    return host != socket.gethostname() or pid is None or process_alive(pid)


def budget_held(trials: Sequence[FrozenTrial], n_trials: int | None) -> bool:
    """True when nothing is queued and the finished trials with those live workers are running
    (a worker's own trials being told included) reach ``n_trials``: asking now would only make a
    surplus trial, so the worker waits (the running ones finish, or one fails and is replaced).

    Confirmation trials (:func:`confirm_of`) are outside ``n_trials``: they are not counted.
    """
    if n_trials is None or any(t.state == TrialState.WAITING for t in trials):
        return False
    now = datetime.datetime.now()
    search = [t for t in trials if confirm_of(t) is None]
    held = sum(is_finished(t) or (t.state == TrialState.RUNNING and _held(t, now)) for t in search)
    return held >= n_trials


@contextlib.contextmanager
def ask_lock(url: str) -> Iterator[None]:
    """Held around a worker's check-then-ask, so two workers cannot both see one trial left and
    both ask for it (the loser sees the winner's trial RUNNING and waits).

    - A journal: a lock file beside it (``<journal>.ask.lock``, gone once released; one left by a
      killed worker is broken after Optuna's grace period). An SQLite storage: the same beside its
      database file (its workers share one machine).
    - PostgreSQL: a session advisory lock of the database (``pg_advisory_lock``), which every worker
      of any machine reaching the database takes; the server releases the lock of a worker whose
      connection dies.
    - Other databases have none: there a trial asked in the same instant as another's last one is
      closed as surplus (:func:`is_surplus`).
    """
    scheme = url.partition("://")[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        with _advisory_lock(url):
            yield
        return
    db = sqlite_path(url) if scheme else None
    path = url if not scheme else str(db) if db is not None else ""
    if not path:
        yield
        return
    lock = JournalFileSymlinkLock(f"{path}.ask")
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


_ASK_LOCK_KEY = int.from_bytes(hashlib.sha1(b"ablate ask lock").digest()[:8], "big", signed=True)
"""The advisory lock's key (64 bits): one lock per database, taken only around asks."""


@contextlib.contextmanager
def _advisory_lock(url: str) -> Iterator[None]:
    """PostgreSQL's session advisory lock around the body, on a connection of its own."""
    import sqlalchemy

    engine = _lock_engine(url)
    with engine.connect() as con:
        con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _ASK_LOCK_KEY})
        try:
            yield
        finally:
            con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _ASK_LOCK_KEY})


@functools.cache
def _lock_engine(url: str) -> Any:
    """One small engine per database for the ask lock (its connections are not Optuna's)."""
    import sqlalchemy

    return sqlalchemy.create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)


def others_hold_the_rest(trials: Sequence[FrozenTrial], *, n_trials: int | None, design: bool) -> bool:
    """True when trials running elsewhere (with heartbeats) cover what is left to run.

    Asking now would only make a surplus trial, yet one of them may still die and be queued
    again: the worker waits instead of leaving.
    """
    if any(t.state == TrialState.WAITING for t in trials):
        return False
    beating = sum(t.state == TrialState.RUNNING and ATTR_HEARTBEAT in t.user_attrs for t in trials)
    if not beating:
        return False
    return design or (n_trials is not None and sum(map(is_finished, trials)) + beating >= n_trials)


def fail_and_retry(study: Study, number: int, params: Mapping[str, Any]) -> bool:
    """Close an interrupted trial as FAIL and queue its parameters again, so a resume reruns it.

    The retry carries ``ablate.retry_of = number``: that is how a killed trial is told apart from
    one that failed (and is not retried). Callers hold Ctrl-C (``tracking.signals_deferred``).

    Returns:
        False when someone else (the supervisor) had already closed it.
    """
    try:
        study.tell(number, state=TrialState.FAIL)
    except Exception:  # noqa: BLE001 - already closed by someone else
        return False
    study.enqueue_trial(dict(params), user_attrs={ATTR_RETRY_OF: number})
    return True


def retry_params(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters a retry of ``trial`` reruns: those it sampled, over those it was queued with.

    A trial interrupted before it sampled anything holds its queued values (an ablation's arm and
    seed) only in the ``fixed_params`` system attribute that ``Study.enqueue_trial`` documents.
    """
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def stale_trial_callback(on_killed: KilledHook | None = None,
                         max_retry: int | None = 3) -> tuple[str, Callable[[Study, FrozenTrial], None]]:
    """The RDBStorage keyword and callback that retry a trial whose worker stopped heart-beating.

    Optuna's retry callback queues the trial again (same params, distributions and user attrs;
    ``failed_trial`` / ``retry_history`` system attrs); then ``on_killed`` runs (ablate ends the
    trial's MLflow run KILLED). The worker that picks the retry up sets ``ablate.retry_of`` (see
    :func:`retried_from`).
    """
    storages = optuna.storages
    retry_class = (getattr(storages, "RetryHeartbeatStaleTrialCallback", None)
                   or storages.RetryFailedTrialCallback)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = retry_class(max_retry=max_retry)
    keyword = ("heartbeat_stale_trial_callback"
               if "heartbeat_stale_trial_callback" in inspect.signature(RDBStorage).parameters
               else "failed_trial_callback")

    def callback(study: Study, trial: FrozenTrial) -> None:
        retry(study, trial)
        if on_killed is not None:
            on_killed(study, trial)

    return keyword, callback


class Heartbeat:
    """Records the held trial's heartbeat every ``interval`` seconds, as ``Study.optimize`` does.

    Optuna beats only inside ``optimize``; workers ask and tell, so they beat themselves. Workers
    anywhere then fail (and queue again) a trial whose worker went silent for the grace period.
    Thread safety: :meth:`hold` is called by the worker's main thread, the beat runs on a daemon
    thread of its own; a missed beat (a database hiccup) is retried at the next interval.
    """

    def __init__(self, storage: Any, interval: int) -> None:
        self.storage, self.interval = storage, interval
        self.trial_ids: tuple[int, ...] = ()
        self.stopped = threading.Event()
        threading.Thread(target=self._run, name="ablate-heartbeat", daemon=True).start()

    def hold(self, trial_id: int | None, *more: int) -> None:
        """Beat for ``trial_id`` (and ``more``: seeds trained fused) from now on (None: hold nothing)."""
        self.trial_ids = () if trial_id is None else (trial_id, *more)
        for held in self.trial_ids:
            self.storage.record_heartbeat(held)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            for held in self.trial_ids:
                with contextlib.suppress(Exception):  # a database hiccup: the next beat tries again
                    self.storage.record_heartbeat(held)

    @staticmethod
    def fail_stale(study: Study) -> None:
        """Fail the study's trials whose worker went silent; Optuna's callback queues them again."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def unclaimed(trials: Sequence[FrozenTrial], *, older_than: float | None = None) -> list[FrozenTrial]:
    """RUNNING trials no worker holds: asked, then interrupted before the worker recorded itself.

    No worker will ever tell them, the stale-trial retry (by holder, or by heartbeat) never finds
    them, and the surplus check counts them as live: left alone, a study stops short of
    ``n_trials`` on every resume.

    Args:
        older_than: Only those started at least this many seconds ago (an RDB storage, where a
            worker elsewhere may be between its ask and its claim); None: all of them (a journal
            file, whose supervisor, starting, is the only one asking).
    """
    now = datetime.datetime.now()
    return [t for t in trials if t.state == TrialState.RUNNING and ATTR_WORKER not in t.user_attrs
            and (older_than is None or t.datetime_start is None
                 or (now - t.datetime_start).total_seconds() >= older_than)]


def holder(trial: FrozenTrial) -> tuple[str, int | None]:
    """``(host, pid)`` of the worker holding ``trial`` (pid None when unknown)."""
    host, _, pid = str(trial.user_attrs.get(ATTR_WORKER, "")).rpartition(":")
    return host, int(pid) if pid.isdigit() else None
