"""Where runs go and what produced them: the MLflow experiment and artifact location, the git
commit, library versions and hardware."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ablate import records as R

__all__ = ["artifact_location", "environment", "get_or_create_experiment", "git_commit", "preload"]


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


def preload() -> None:
    """Import MLflow's client now (a standby worker pays its imports while the supervisor checks)."""
    import mlflow.tracking  # noqa: F401
