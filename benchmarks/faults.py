"""Fault injection: kill workers and the supervisor at random moments, tear the journal, resume.

One small search study on digits is swept again and again in a fresh folder. Each round starts
``ablate sweep`` (a resume after the first), waits a random time and injects one fault:

- ``kill-worker``: SIGKILL one worker process; the supervisor goes on (it fails and retries the trial).
- ``kill-supervisor``: SIGKILL the supervisor alone; its workers notice and stop.
- ``interrupt``: SIGINT to the supervisor (Ctrl-C), which stops its workers.
- ``power-loss`` (journal storage only): SIGKILL every process of the sweep, then cut the journal at
  a random byte offset inside its last record, as a power loss mid-write leaves it.

A round whose sweep completes before its fault raises ``n_trials`` by 3 (an override on the command
line, as a user extends a study), so every fault lands on a sweep with work left. After the last
fault the same command is run until it exits 0. Then the stores are checked against
what a clean run gives: every one of ``n_trials`` trials finished once (trials lost), one FINISHED
MLflow child run per finished trial and no other (duplicate runs), no run left RUNNING, and no
traceback on any stderr. The last line is the summary, e.g.::

    faults injected 20, resumed 20, trials lost 0, duplicate runs 0, runs left RUNNING 0

Usage (from the repository root)::

    .venv/bin/python benchmarks/faults.py --faults 20
    .venv/bin/python benchmarks/faults.py --faults 5 --storage "$ABLATE_TEST_POSTGRES_URL"

Exit code 0 when every count is as a clean run's, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ABLATE = [sys.executable, "-m", "ablate"]
FAULTS = ("kill-worker", "kill-supervisor", "interrupt", "power-loss")

STUDY = """\
defaults:
  - base_study
  - sampler: random
  - pruner: none
  - _self_
n_trials: {n_trials}
workers: 2
fixed:
  data: digits
  model.width: 32
  trainer.epochs: {epochs}
  trainer.diagnostics: false
params:
  optimizer: choice(sgd, adam)
  seed: range(0, 1000)
"""


@dataclass
class Tally:
    injected: dict[str, int] = field(default_factory=dict)
    resumed: int = 0
    segments: int = 0
    tracebacks: list[str] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _workers(pid: int) -> list[psutil.Process]:
    out = []
    for child in _children(pid):
        try:
            if "worker" in child.cmdline():
                out.append(child)
        except psutil.Error:
            continue
    return out


def _tear(journal: Path, rng: random.Random) -> int | None:
    """Cut ``journal`` inside its last record; the number of bytes cut, or None (nothing to tear)."""
    data = journal.read_bytes()
    if len(data) < 2:
        return None
    start = data.rstrip(b"\n").rfind(b"\n") + 1  # first byte of the last record
    end = len(data) - 1  # keep at least the record's first byte, drop at least its newline
    if end <= start:
        return None
    cut = rng.randint(start + 1, end)
    with journal.open("r+b") as f:
        f.truncate(cut)
    return len(data) - cut


class Campaign:
    def __init__(self, folder: Path, storage: str | None, n_trials: int, epochs: int, seed: int) -> None:
        self.folder, self.storage, self.n_trials = folder, storage, n_trials
        self.rng = random.Random(seed)
        self.name = f"faults_{uuid.uuid4().hex[:8]}" if storage else "faults"
        (folder / "sweeps").mkdir(parents=True, exist_ok=True)
        (folder / "sweeps" / f"{self.name}.yaml").write_text(STUDY.format(n_trials=n_trials, epochs=epochs))
        self.args = [*ABLATE, "sweep", self.name] + ([f"storage={storage}"] if storage else [])
        self.grown = 0
        self.tally = Tally()
        self.log = folder / "segments.log"

    @property
    def journal(self) -> Path:
        return self.folder / "runs" / self.name / "journal.log"

    def _start(self) -> subprocess.Popen[str]:
        self.tally.segments += 1
        return subprocess.Popen([*self.args, f"n_trials={self.n_trials}"], cwd=self.folder,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    def _finish(self, proc: subprocess.Popen[str], timeout: float = 300) -> int:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            err += "\n(timed out)"
        rc = proc.returncode
        self.tally.exit_codes.append(rc)
        with self.log.open("a") as f:
            f.write(f"--- segment {self.tally.segments} rc={rc}\n{err}\n")
        if "Traceback" in err:
            self.tally.tracebacks.append(err[-2000:])
        return rc

    def _settle(self, supervisor: int, timeout: float = 60) -> None:
        """Wait for the sweep's remaining processes (workers of a killed supervisor) to exit."""
        left = [p for p in psutil.process_iter() if p.pid != supervisor and self._ours(p)]
        _, alive = psutil.wait_procs(left, timeout=timeout)
        for p in alive:  # a worker that outlives its supervisor by a minute is a finding, not a hang
            self.tally.tracebacks.append(f"worker {p.pid} still alive {timeout:.0f} s after its supervisor")
            p.kill()

    def _ours(self, p: psutil.Process) -> bool:
        try:
            return p.cwd() == str(self.folder) and "ablate" in " ".join(p.cmdline())
        except psutil.Error:
            return False

    def inject(self, kind: str, delay: float) -> bool:
        """One round: start (or resume) the sweep, wait ``delay`` seconds, inject ``kind``."""
        proc = self._start()
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is not None:  # finished before the fault: nothing injected
            if self._finish(proc) == 0:  # the study is complete: give the next round trials to run
                self.n_trials += 3
                self.grown += 1
            return False
        if kind == "kill-worker":
            workers = _workers(proc.pid)
            if not workers:
                kind = "kill-supervisor"  # still starting up: no worker to kill yet
            else:
                self.rng.choice(workers).kill()
                self.tally.injected[kind] = self.tally.injected.get(kind, 0) + 1
                # the supervisor retries the trial and goes on; let it run a little, then stop it
                time.sleep(self.rng.uniform(0.5, 3.0))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                self._finish(proc)
                return True
        if kind == "kill-supervisor":
            proc.kill()
        elif kind == "interrupt":
            proc.send_signal(signal.SIGINT)
        elif kind == "power-loss":
            os.killpg(proc.pid, signal.SIGKILL)
        self._finish(proc)
        self._settle(proc.pid)
        if kind == "power-loss" and self.journal.exists():
            _tear(self.journal, self.rng)
        self.tally.injected[kind] = self.tally.injected.get(kind, 0) + 1
        return True

    def complete(self, attempts: int = 3) -> int:
        """Resume until the sweep exits 0 (at most ``attempts`` times); its last exit code."""
        rc = -1
        for _ in range(attempts):
            rc = self._finish(self._start(), timeout=600)
            if rc == 0:
                break
        return rc


def _check(campaign: Campaign) -> dict[str, int]:
    import optuna
    from mlflow.tracking import MlflowClient

    from ablate import records as R
    from ablate.sweep.storage import count_states, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = campaign.storage or str(campaign.journal)
    study = optuna.load_study(study_name=campaign.name, storage=open_storage(url, heartbeat_interval=None))
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished() and t.state.name in ("COMPLETE", "PRUNED")]
    counts = count_states(trials)
    client = MlflowClient(tracking_uri=f"sqlite:///{campaign.folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(campaign.name)
    runs = client.search_runs([experiment.experiment_id], max_results=50000) if experiment else []
    parents = [r for r in runs if r.data.tags.get(R.TAG_KIND) == R.KIND_STUDY]
    children = [r for r in runs if r not in parents]
    finished_runs = [r for r in children if r.info.status == "FINISHED"]
    told = {t.user_attrs.get(R.ATTR_RUN) for t in finished}
    return {
        "finished": counts["finished"],
        "lost": max(0, campaign.n_trials - len(finished)),
        "extra": max(0, len(finished) - campaign.n_trials),
        "untold": sum(1 for r in finished_runs if r.info.run_id not in told),
        "running": sum(r.info.status == "RUNNING" for r in runs),
        "parents": len(parents),
    }


def run(folder: Path, *, faults: int, storage: str | None, seed: int, epochs: int, max_delay: float) -> int:
    campaign = Campaign(folder, storage, n_trials=faults + 2, epochs=epochs, seed=seed)
    kinds = [k for k in FAULTS if not (storage and k == "power-loss")]
    injected = 0
    rounds = 0
    while injected < faults and rounds < 4 * faults:
        rounds += 1
        kind = campaign.rng.choice(kinds)
        if campaign.inject(kind, campaign.rng.uniform(0.3, max_delay)):
            injected += 1
            campaign.tally.resumed += 1  # counted as resumed only if the final check below holds
    rc = campaign.complete()
    try:
        stats = _check(campaign)
    except Exception as exc:  # noqa: BLE001  # unreadable stores: the worst outcome, reported as such
        print(f"the stores could not be read after the faults: {type(exc).__name__}: {exc}")
        print(f"faults injected {injected}, resumed 0, trials lost ?, duplicate runs ?, runs left RUNNING ?")
        return 1
    tally = campaign.tally
    clean = (rc == 0 and stats["lost"] == 0 and stats["extra"] == 0 and stats["untold"] == 0
             and stats["running"] == 0 and stats["parents"] == 1 and not tally.tracebacks)
    resumed = tally.resumed if clean else 0
    where = "PostgreSQL" if storage else "journal + sqlite"
    print(f"{where}: {injected} faults ({', '.join(f'{k} {v}' for k, v in sorted(tally.injected.items()))}) "
          f"over {tally.segments} sweep commands (n_trials raised {campaign.grown} times); final exit {rc}; "
          f"trials finished {stats['finished']}"
          f"/{campaign.n_trials}; MLflow parent runs {stats['parents']}; tracebacks {len(tally.tracebacks)}"
          f" (segments' stderr in {campaign.log})")
    for tb in tally.tracebacks[:3]:
        print(textwrap.indent(tb, "    | "))
    print(f"faults injected {injected}, resumed {resumed}, trials lost {stats['lost']}, "
          f"duplicate runs {stats['untold'] + stats['extra']}, runs left RUNNING {stats['running']}")
    return 0 if clean and injected == faults else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", type=int, default=20, help="faults to inject (default 20)")
    parser.add_argument("--storage", default=None,
                        help="an RDB URL (postgresql://...); default: a journal file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault schedule")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (default 4)")
    parser.add_argument("--max-delay", type=float, default=8.0,
                        help="latest moment of a fault after a sweep command starts, in seconds")
    parser.add_argument("--folder", type=Path, default=None, help="working folder (default: a temp folder)")
    args = parser.parse_args(argv)
    if args.folder is not None:
        args.folder.mkdir(parents=True, exist_ok=True)
        return run(args.folder.resolve(), faults=args.faults, storage=args.storage, seed=args.seed,
                   epochs=args.epochs, max_delay=args.max_delay)
    with tempfile.TemporaryDirectory(prefix="ablate-faults-") as tmp:
        return run(Path(tmp).resolve(), faults=args.faults, storage=args.storage, seed=args.seed,
                   epochs=args.epochs, max_delay=args.max_delay)


if __name__ == "__main__":
    sys.exit(main())
