"""What a sweep shows: the live progress display and the closing summary.

Both read the study's trials from its storage (one read per refresh) and nothing else.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from ablate.records import ATTR_SEEDS_STOP, ATTR_SESSION_START, ATTR_WORKER
from ablate.secrets import redact, redact_text
from ablate.sweep.confirm import confirmation_done
from ablate.sweep.rounds import seeds_per_arm
from ablate.sweep.spec import StudySpec
from ablate.sweep.storage import CONFIDENCE, best_trial, confirmed, count_states

__all__ = ["Progress", "absolute_uri", "best_command", "clock", "eta", "live_workers", "summary"]


def absolute_uri(uri: str, base: Path) -> str:
    """A relative SQLite MLflow URI made absolute (workers and the report may run elsewhere)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str((base / uri[len("sqlite:///"):]).resolve())
    return uri


class Progress:
    """A live block on a terminal; plain lines, on change or every 30 s, elsewhere (CI logs)."""

    def __init__(self, spec: StudySpec, stream: IO[str] | None = None,
                 clock: Callable[[], float] = time.time, *, workers: int | None = None) -> None:
        self.spec = spec
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.clock = clock
        self.workers = workers or spec.workers  # the workers this sweep starts
        self.started = clock()  # the one start both the live line and the summary count from
        self.last_state: tuple[str, str] | None = None
        self.last_print = 0.0
        self.drawn = 0

    def elapsed(self) -> float:
        """Seconds since the sweep started: the live line's clock and the summary's "in"."""
        return self.clock() - self.started

    def parts(self, study: Study) -> tuple[str, str, str]:
        """``(counts, best so far, ETA)``; the counts start with the elapsed time."""
        trials = study.get_trials(deepcopy=False)
        c = count_states(trials)
        elapsed = self.elapsed()
        n = self.spec.n_trials
        if n and self.spec.confirm is not None:  # the search's trials, then its confirmation runs
            n += self.spec.confirm["top"] * self.spec.confirm["seeds"]
        live = live_workers(trials, self.workers)
        # A worker's newly asked trial is RUNNING before it carries the worker's name, while its last
        # trial still counts as training: for that moment one worker holds two. Never show more
        # trials training than there are workers.
        running = min(c["running"], live)
        counts = (f"[{clock(elapsed)}] {c['finished']}/{n if n else '-'} finished (complete {c['complete']}, "
                  f"pruned {c['pruned']}, diverged {c['diverged']}, failed {c['failed']}) "
                  f"running {running}" + (f", finishing {c['finishing']}" if c["finishing"] else ""))
        best = best_trial(trials, self.spec.direction)  # one storage read per refresh, not two
        best_text = ""
        if best is not None:
            params = " ".join(f"{k}={_short(v)}" for k, v in best.params.items())
            best_text = f"best {self.spec.metric} {best.value:.4f} (trial {best.number}: {params})"
        left = eta(trials, n - c["finished"], live) if n and 0 < c["finished"] < n else None
        return counts, best_text, "" if left is None else f"ETA {clock(left)}"

    def update(self, study: Study) -> None:
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


def live_workers(trials: Sequence[FrozenTrial], started: int) -> int:
    """The workers at work: those this sweep started, or more when others joined (``ablate worker``)."""
    holding = {t.user_attrs[ATTR_WORKER] for t in trials
               if t.state == TrialState.RUNNING and ATTR_WORKER in t.user_attrs}
    return max(started, len(holding), 1)


FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def eta(trials: Sequence[FrozenTrial], remaining: int, workers: int,
        now: datetime.datetime | None = None) -> float | None:
    """Seconds until ``remaining`` more trials finish on ``workers``, from the durations of the
    trials that finished (not from the sweep's elapsed time, which counts its start-up).

    The mean finished trial's duration times the trials left, less what the running ones have
    already trained (each at most one mean), spread over the workers; None before any finished.
    """
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                 if t.state in FINISHED_STATES and t.datetime_start and t.datetime_complete]
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    now = now or datetime.datetime.now()  # Optuna's datetimes are naive local times
    underway = sum(min(max((now - t.datetime_start).total_seconds(), 0.0), mean) for t in trials
                   if t.state == TrialState.RUNNING and t.datetime_start)
    return max(0.0, remaining * mean - underway) / workers


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60:02d}:{seconds % 60:02d}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def best_command(spec: StudySpec, best: FrozenTrial) -> str:
    """The ``ablate train ...`` command that trains the best trial's recipe again."""
    return " ".join(["ablate train", *spec.space.overrides(best.params)])


def _confirm_lines(study: Study, spec: StudySpec, trials: list[FrozenTrial]) -> list[str]:
    """A search with confirm: each confirmed trial's mean over its seeds and interval, best first."""
    assert spec.confirm is not None
    done = confirmation_done(study, spec.confirm, trials)
    rows = confirmed(trials, spec.direction)
    if not rows or done is None:
        return [(f"Confirm: top {spec.confirm['top']} x {spec.confirm['seeds']} seeds not done yet "
                 "(rerun the same command to resume)")]
    level = f"{CONFIDENCE * 100:g} %"
    lines = [f"Confirm: {done}; mean {spec.metric} over its seeds [{level} t-interval]:"]
    for r in rows:
        lines.append(f"  trial {r['trial']}: {r['mean']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}] "
                     f"over {r['n']} seeds")
    return lines


def summary(study: Study, spec: StudySpec, parent_run_id: str, elapsed: float, workers: int) -> str:
    """The closing lines of ``ablate sweep``: counts, the best recipe as a command, where to look.

    ``workers`` is how many this sweep started; workers that joined it (``ablate worker``) count
    too: the figure is the distinct workers that held a trial since this sweep started, when more.
    """
    trials = study.get_trials(deepcopy=False)
    counts = count_states(trials)
    since = int(study.user_attrs.get(ATTR_SESSION_START, 0))
    workers = max(workers, len({t.user_attrs[ATTR_WORKER] for t in trials
                                if t.number >= since and ATTR_WORKER in t.user_attrs}))
    lines = [(f"Study {spec.name}: {counts['finished']} finished (complete {counts['complete']}, pruned "
              f"{counts['pruned']}, diverged {counts['diverged']}, failed {counts['failed']}) in "
              f"{clock(elapsed)} with {workers} worker{'s' if workers != 1 else ''}")]
    if spec.design:
        per_arm = ", ".join(f"{arm} {n}" for arm, n in seeds_per_arm(study, spec).items())
        stop = study.user_attrs.get(ATTR_SEEDS_STOP) if spec.adaptive else None
        lines.append(f"Seeds:   {per_arm}" + ("" if spec.adaptive is None else
                                               f"; stopped: {stop or 'not decided yet (rerun to resume)'}"))
    best = best_trial(trials, spec.direction)
    best_text = None if best is None else f"Best {spec.metric} {best.value:.4f} (trial {best.number})"
    if spec.confirm is not None:
        lines += _confirm_lines(study, spec, trials)
        rows = confirmed(trials, spec.direction)
        if rows and confirmation_done(study, spec.confirm, trials):  # the best mean over seeds is the best
            best = next(t for t in trials if t.number == rows[0]["trial"])
            best_text = (f"Best {spec.metric}: mean {rows[0]['mean']:.4f} over {rows[0]['n']} seeds "
                         f"(trial {best.number})")
    if best is None:
        lines.append(f"No complete trial yet: no best {spec.metric}.")
    else:
        lines.append(f"{best_text}; to train it again:")
        lines.append(f"  {best_command(spec, best)}")
    uri = spec.tracking_uri
    default = absolute_uri("sqlite:///mlflow.db", Path.cwd())
    ui = "ablate ui" + ("" if uri == default else f" tracking.uri={redact(uri)}")
    lines.append(f"MLflow:  {ui}   (experiment '{spec.experiment}', parent run {parent_run_id})")
    storage = redact(spec.storage)
    here = Path.cwd() / "runs" / spec.name / "journal.log"  # where ablate dashboard looks by default
    at_home = "://" not in storage and Path(storage).resolve() == here.resolve()
    shown = "" if at_home else " --storage " + (os.path.relpath(storage) if "://" not in storage else storage)
    lines.append(f"Optuna:  ablate dashboard {spec.name}{shown}")
    logs = "slurm/*_log.out" if spec.launcher.get("name") == "slurm" else "worker-*.log"
    lines.append(f"Logs:    {os.path.relpath(spec.out_dir)}/{logs}")
    return redact_text("\n".join(lines), spec.storage, spec.tracking_uri)  # the best command's overrides too
