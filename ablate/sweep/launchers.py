"""Where workers run: processes on this machine (``launcher=local``) or SLURM jobs submitted with
submitit (``launcher=slurm``).

The supervisor treats both alike: a worker is something it can poll, interrupt and kill. SLURM jobs
run the same worker loop as local processes, against the study's shared storage, so a study can
mix them (``ablate worker`` from any shell joins too).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.sweep.storage import redact

__all__ = ["SubmititWorker", "submit_worker"]


def _job(study: str, storage: str, index: int, deadline: float | None, setup_env: dict[str, str]) -> int:
    """The body of one SLURM job: a worker that pulls trials until the study is done."""
    os.environ.update(setup_env)
    from ablate.sweep.worker import run_worker  # in the job's process: torch is imported there, not here

    # A storage with a password travels in the job's inherited environment, not in its pickle.
    return run_worker(study, storage or os.environ["ABLATE_STORAGE"], index=index, deadline=deadline)


class SubmititWorker:
    """A submitit job seen through the few ``Popen`` methods the supervisor uses."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        job_id = str(self.job.job_id)
        return int(job_id) if job_id.isdigit() else -1  # a local job's id is its process id

    def poll(self) -> int | None:
        if self.returncode is None and self.job.done():
            state = str(self.job.state).upper()
            failed = state not in ("COMPLETED", "FINISHED", "DONE") or self.job.exception() is not None
            self.returncode = 1 if failed else 0
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if signum in (signal.SIGINT, signal.SIGTERM):
            self.job.cancel(check=False)  # scancel (SIGTERM, then SIGKILL after SLURM's grace)

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.time() + timeout
        while self.poll() is None:
            if end is not None and time.time() > end:
                raise subprocess.TimeoutExpired(str(self.job.job_id), timeout or 0)
            time.sleep(0.5)
        return int(self.returncode or 0)

    def kill(self) -> None:
        self.job.cancel(check=False)


def submit_worker(launcher: dict[str, Any], *, folder: Path, study: str, storage: str, index: int,
                  deadline: float | None, env: dict[str, str]) -> SubmititWorker:
    """Submit one worker job with submitit's AutoExecutor (SLURM, or ``cluster: local``)."""
    try:
        import submitit
    except ImportError:
        raise AblateError("launcher: slurm needs the submitit package (pip install submitit)") from None
    executor = submitit.AutoExecutor(folder=str(folder / "slurm"), cluster=launcher.get("cluster"))
    params: dict[str, Any] = {
        "name": f"ablate-{study}-{index}",
        "timeout_min": int(launcher.get("timeout_min", 60)),
        "nodes": int(launcher.get("nodes", 1)),
        "gpus_per_node": int(launcher.get("gpus_per_node", 0)),
        "cpus_per_task": int(launcher.get("cpus_per_task", 2)),
        "mem_gb": float(launcher.get("mem_gb", 8)),
    }
    if executor.cluster == "slurm":
        if launcher.get("partition"):
            params["slurm_partition"] = launcher["partition"]
        if launcher.get("additional"):
            params["slurm_additional_parameters"] = dict(launcher["additional"])
        if launcher.get("setup"):
            params["slurm_setup"] = list(launcher["setup"])
    try:
        executor.update_parameters(**params)
    except Exception as exc:  # noqa: BLE001 - submitit's own checks of the settings: one line
        raise AblateError(f"launcher: {' '.join(str(exc).split())}") from None
    if redact(storage) != storage:  # jobs inherit the environment (sbatch --export=ALL, local jobs)
        os.environ["ABLATE_STORAGE"] = storage
        storage = ""
    return SubmititWorker(executor.submit(_job, study, storage, index, deadline, env))
