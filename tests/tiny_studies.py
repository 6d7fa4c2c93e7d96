"""A tiny search study and ``ablate`` in a subprocess, shared by the test files that sweep from the CLI.

``tiny_study()`` is a 2-trial random search on digits with 1 epoch whose only sampled value is the
seed: the cheapest real sweep. ``run_ablate`` runs the CLI as a user does, in ``cwd``, without the
caller's ``MLFLOW_*`` / ``ABLATE_*`` environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["ABLATE", "run_ablate", "tiny_study"]

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
