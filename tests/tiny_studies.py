"""A tiny search study, ``ablate`` in a subprocess and a sweep's journal read while it runs, shared by
the test files that sweep from the CLI.

``tiny_study()`` is a 2-trial random search on digits with 1 epoch whose only sampled value is the
seed: the cheapest real sweep. ``run_ablate`` runs the CLI as a user does, in ``cwd``, without the
caller's ``MLFLOW_*`` / ``ABLATE_*`` environment. ``journal_study`` / ``journal_trials`` read the
study ``ablate sweep`` keeps in ``runs/<name>/journal.log``; ``interrupt_when`` Ctrl-Cs a sweep once
its trials satisfy a condition.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ABLATE", "interrupt_when", "journal_study", "journal_trials", "run_ablate", "tiny_study",
           "wait_for"]

ABLATE = [sys.executable, "-m", "ablate"]


def tiny_study(*, workers: int | None = 1, fixed: dict[str, object] | None = None) -> str:
    """The study file's text; ``fixed`` adds fields beside ``trainer.epochs: 1``."""
    lines = ["defaults:", "  - base_study", "  - sampler: random", "  - pruner: none", "  - _self_",
             "n_trials: 2", *([f"workers: {workers}"] if workers else []), "fixed:", "  trainer.epochs: 1",
             *(f"  {key}: {value}" for key, value in (fixed or {}).items()),
             "params:", "  seed: range(0, 100)"]
    return "\n".join(lines) + "\n"


def run_ablate(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ABLATE_"))}
    return subprocess.run([*ABLATE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def journal_study(cwd: Path, name: str) -> Any:
    """The Optuna study ``ablate sweep <name>`` keeps in ``cwd/runs/<name>/journal.log``."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(cwd / "runs" / name / "journal.log")))
    return optuna.load_study(study_name=name, storage=storage)


def journal_trials(cwd: Path, name: str) -> list[Any]:
    """Its trials, or none while the sweep is still creating or writing it."""
    try:
        return list(journal_study(cwd, name).get_trials(deepcopy=False))
    except Exception:  # noqa: BLE001 - polled while the sweep creates and writes it: any failure is "not yet"
        return []


def wait_for(predicate: Callable[[], bool], timeout: float = 120.0, interval: float = 0.3) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("timed out waiting")


def interrupt_when(cwd: Path, name: str, ready: Callable[[list[Any]], bool],
                   timeout: float = 240.0) -> tuple[int, str]:
    """Start ``ablate sweep <name>``, Ctrl-C it once ``ready(its trials)``; its exit code and stderr."""
    sweep = subprocess.Popen([*ABLATE, "sweep", name], cwd=cwd, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        # Looked at often, and never past the sweep's end: a moment that lasts a fraction of a second
        # (a round of short trials) is caught, and a sweep that ended first fails here, not by timing out.
        wait_for(lambda: sweep.poll() is not None or ready(journal_trials(cwd, name)), timeout, 0.05)
        assert sweep.poll() is None, "the sweep ended before the moment to interrupt it came"
        sweep.send_signal(signal.SIGINT)
        _, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    return sweep.returncode, err
