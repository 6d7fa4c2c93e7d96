"""``ablate worker``: join a running study; started by ``ablate sweep`` in standby, it imports first."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from typing import TYPE_CHECKING, Any, cast

from ablate.cli.common import config_dir_flag, fail, overrides_arg, searchpath

if TYPE_CHECKING:
    from ablate.sweep.composer import Composed


def add_worker(sub: Any) -> None:
    worker = sub.add_parser("worker", help="join a running study from another shell or machine",
                            description="Pull and run trials of a study until it has its n_trials "
                            "finished trials.")
    worker.add_argument("study")
    worker.add_argument("--storage", default=None, help="the study's Optuna storage (file or URL); "
                        "default: $ABLATE_STORAGE, which keeps a password out of the command line")
    worker.add_argument("--index", type=int, default=0, help="the worker's index in its sweep (set by "
                        "ablate sweep; a joining worker's sampler is seeded apart from every other)")
    worker.add_argument("--deadline", type=float, default=None, help="unix time; no trial starts after")
    worker.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)  # by ablate sweep
    worker.add_argument("--standby", action="store_true", help=argparse.SUPPRESS)  # ... started early
    config_dir_flag(worker)
    overrides_arg(worker, "the study's overrides, checked against its stored recipe; devices=[1] pins "
                   "this worker to a GPU")
    worker.set_defaults(run=_worker)


def _worker(ns: argparse.Namespace) -> int:
    ns.overrides = searchpath(ns.overrides, ns.config_dir)
    from ablate.errors import ConfigError
    from ablate.sweep.schema import check_name
    from ablate.sweep.worker import check_join, run_worker

    check_name("study", ns.study)  # sweeps/<study>.yaml is read when present: a name, never a path

    composed = None
    if ns.standby:
        go = _standby()
        if go is None:
            return 0  # the sweep was refused before it began: nothing to do, nothing written
        ns.deadline, composed = go
    storage = ns.storage or os.environ.get("ABLATE_STORAGE")
    execution = {} if ns.supervised else check_join(ns.study, storage, ns.overrides)
    storage = storage or execution.get("storage")
    if not storage:
        return fail("storage: missing; pass --storage URL (or set ABLATE_STORAGE) as given to ablate sweep")
    devices = execution.get("devices") or []
    if len(devices) > 1 or not all(isinstance(d, int) and d >= 0 for d in devices):
        raise ConfigError("devices", devices,
                          "one CUDA device index like [1] (a worker runs one trial at a time)")
    if devices:
        os.environ.update(CUDA_VISIBLE_DEVICES=str(devices[0]), ABLATE_DEVICE="cuda")
    run_worker(ns.study, storage, index=ns.index, joining=not ns.supervised, deadline=ns.deadline,
               composed=composed)
    return 0


def _standby() -> tuple[float | None, Composed | None] | None:
    """A worker started by ``ablate sweep`` before the study was checked: import, then wait.

    The supervisor sends one JSON line on stdin once the study exists: the log to write to, the
    deadline and a file holding the composed trial configs. End of input means the study was
    refused. Returns ``(deadline, composed)`` or None.
    """

    import torch._dynamo  # noqa: F401 - imported by the first optimizer otherwise (~2 s)

    import ablate.sweep.worker  # noqa: F401 - torch, Optuna: the imports a worker pays once, paid now
    from ablate.tracking import preload

    preload()  # MLflow's client, which the tracking module imports only when it writes

    line = sys.stdin.buffer.readline()
    if not line.strip():
        return None
    go = json.loads(line)
    if go.get("tracking_uri"):  # may hold a password the stored spec leaves out
        os.environ["ABLATE_TRACKING_URI"] = go["tracking_uri"]
    log = os.open(go["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    composed = None
    if go.get("composed_fd") is not None:  # a file with no name, inherited from our supervisor
        fd = int(go["composed_fd"])
        data = os.pread(fd, os.fstat(fd).st_size, 0)  # not read(): the offset is shared with the others
        os.close(fd)
        if data:  # empty when the supervisor had nothing composed: the worker composes itself
            composed = cast("Composed", pickle.loads(data))  # our own supervisor wrote it, for us
    return go.get("deadline"), composed

