"""``ablate <command>``: parse, compose, dispatch, exit codes.

Exit codes: 0 success, 2 bad input (one line on stderr naming the field), 130 interrupted.
Each command imports what it needs when it runs (Hydra, torch, Optuna, MLflow cost seconds), so
`ablate --help` and a bad input answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import pickle
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn, cast

from ablate.errors import AblateError
from ablate.secrets import redact  # no torch, Optuna or MLflow: cheap to import

if TYPE_CHECKING:  # the commands import what they need when they run: `ablate --help` stays quick
    from ablate.sweep.composer import Composed

__all__ = ["main", "run"]

USAGE = """usage: ablate <command> [options] [overrides]

commands:
  train [overrides]      train one recipe (Hydra overrides, e.g. optimizer=adam norm=batch);
                         -m optimizer=sgd,adam seed=0,1 runs every combination;
                         --help lists the trick menu, --cfg job prints the composed config
  sweep <study> [overrides]
                         run a study from sweeps/ (./sweeps first) with parallel workers, pruning,
                         resume and MLflow parent/child runs, e.g.
                         ablate sweep tricks_digits workers=2 n_trials=40 pruner=hyperband
  plan <study> [overrides]
                         what a sweep would run and cost, nothing created: arms and seeds, the
                         training time from the study's earlier trials, and after a pilot each
                         trick's verdict and the seeds per arm that would resolve it
  worker <study> --storage URL [overrides]
                         join a running study from another shell or machine (overrides, or a
                         ./sweeps/<study>.yaml, must give the stored recipe; devices=[1] pins a GPU)
  report <study> [--format md,html] [--out reports] [--experiment E] [--tag K=V] [tracking.uri=...]
                         what each trick contributes: tables, CIs and figures as Markdown and HTML,
                         read from MLflow (a study, or `ablate train -m` runs by experiment or tag)
  ui [--port N] [--create] [tracking.uri=...]
                         serve the MLflow UI on 127.0.0.1 against the same store (refused where
                         there is none, unless --create)
"""

# Hydra flags that take a value; everything else that does not start with '-' is an override.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name",
                     "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_HELP_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--version"}


def _fail(message: str, code: int = 2) -> int:
    print(f"ablate: error: {message}", file=sys.stderr)
    return code


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (``--port: invalid int value: 'abc'``), not usage + error."""

    def error(self, message: str) -> NoReturn:
        raise AblateError(" ".join(message.removeprefix("argument ").split()))


def _port(text: str) -> int:
    """``ablate ui --port``: a TCP port number, 1-65535."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; expected a port number 1-65535")
    return port


def _check_port_free(port: int) -> None:
    """Refuse a port something already listens on (MLflow would print a traceback and exit 0)."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will bind it
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise AblateError(f"--port: cannot serve on 127.0.0.1:{port} ({exc.strerror or exc}); is another "
                              "server using it? Pass --port N") from None


def _split_overrides(args: Sequence[str]) -> tuple[list[str], bool]:
    overrides, multirun, skip = [], False, False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-m", "--multirun"):
            multirun = True
        elif arg in _FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, multirun


def _expand(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Every combination a multirun will launch (a single one otherwise)."""
    if not multirun:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ablate.config import translate_compose_error

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        err = translate_compose_error(exc)
        raise (err or AblateError(" ".join(str(exc).split()))) from exc
    choices = []
    for o in parsed:
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        choices.append([f"{key}={v}" for v in values])
    return [list(c) for c in itertools.product(*choices)]


def _validate_all(args: Sequence[str]) -> None:
    """Compose every run a (multi)run will launch: a typo, a device this machine lacks or a store that
    cannot be written fails before the first run starts."""
    from ablate.config import compose

    overrides, multirun = _split_overrides(args)
    combos = _expand(overrides, multirun)
    devices, uris = set(), set()
    for combo in combos[:256]:
        cfg = compose(combo)
        devices.add(cfg.trainer.device)
        uris.add(cfg.tracking.uri)
    if devices - {"auto", "cpu"}:
        from ablate.train import check_device  # torch: paid only when a run asks for an accelerator

        for device in sorted(devices):
            check_device(device)
    from ablate.tracking.store import check_store

    for uri in sorted(uris):
        check_store(uri)


def _train_help(args: list[str]) -> int:
    """The trick menu (every group's options, from conf/) and the config the overrides compose."""
    from omegaconf import OmegaConf

    from ablate.config import CONF_DIR, compose, user_conf_dir
    from ablate.menu import CLIP_TARGETS, NORMS

    overrides, _ = _split_overrides(args)
    try:
        cfg = compose(overrides)
    except AblateError as exc:
        return _fail(str(exc))
    print("usage: ablate train [-m] [--cfg job] [key=value ...]\n")
    print("Train one recipe and record it in MLflow. Pick one option per trick family (group=option),")
    print("set any field (optimizer.lr=0.01); with -m, comma lists run every combination.\n")
    print("== Trick families (group: options) ==")
    local = user_conf_dir()
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        own = sorted(f.stem for f in (local / group.name).glob("*.yaml")) if local is not None else []
        yours = f"; yours (./conf): {', '.join(own)}" if own else ""
        print(f"  {group.name}: {', '.join(options)}{yours}")
    # Plain fields (no config group), listed from the menu.
    print(f"  norm: {', '.join(NORMS)}")
    print(f"  clip.to: {', '.join(CLIP_TARGETS)} "
          "(with clip=norm: above clip.threshold, rescale to it or to 1)\n")
    print("== Composed config (every field can be overridden) ==")
    print(OmegaConf.to_yaml(cfg), end="")
    return 0


def _train(args: list[str]) -> int:
    import hydra
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import DictConfig

    from ablate.config import CONF_DIR, register_configs, search_overrides

    if "--help" in args or "-h" in args:
        return _train_help(args)
    if not _HELP_FLAGS.intersection(args):
        try:
            _validate_all(args)
        except AblateError as exc:
            return _fail(str(exc))
    register_configs()
    GlobalHydra.instance().clear()  # compose() above leaves Hydra initialised; hydra.main initialises its own

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
    def job(cfg: DictConfig) -> None:
        from ablate.run import train_one

        try:
            train_one(cfg)
        except AblateError as exc:
            raise SystemExit(_fail(str(exc))) from None

    saved = sys.argv
    try:
        searched = search_overrides()  # ./conf, the user's own options
    except AblateError as exc:
        return _fail(str(exc))
    sys.argv = ["ablate train", *args, *searched, "hydra.job.name=train"]
    try:
        job()
    finally:
        sys.argv = saved
    return 0


def _ui(args: list[str]) -> int:

    from ablate.config import compose
    from ablate.tracking.store import check_store

    parser = _Parser(prog="ablate ui", description="Serve the MLflow UI on "
                     "127.0.0.1 against the store ablate train writes to.")
    parser.add_argument("--port", type=_port, default=5000)
    parser.add_argument("--create", action="store_true", help="create an empty store when there is none "
                        "(without it, a folder with no store is refused: MLflow would serve an empty one)")
    parser.add_argument("overrides", nargs="*", help="e.g. tracking.uri=sqlite:///other.db")
    ns = parser.parse_args(args)
    try:
        cfg = compose(ns.overrides)
    except AblateError as exc:
        return _fail(str(exc))
    uri = cfg.tracking.uri
    _check_port_free(ns.port)
    if ns.create:
        check_store(uri)  # writable: MLflow creates the store as it starts
    else:
        try:
            check_store(uri, read=True)  # MLflow would create an empty store, and serve it
        except AblateError as exc:
            raise AblateError(f"{exc}; or pass --create for an empty one") from None
    from ablate.tracking import relocate_artifacts

    relocate_artifacts(uri)  # a moved project folder: previews read the artifacts beside the store
    # MLflow 3.17's UI opens every experiment on its GenAI overview until "Model training" is chosen
    # at its top left: a setting of the browser (local storage), not of the store, which the
    # experiments' kind (records.TAG_EXPERIMENT_KIND) does not override. Say so once.
    print(f"MLflow UI for {redact(uri)} at http://127.0.0.1:{ns.port}", flush=True)
    print('choose "Model training" at its top left once: experiments then open on their runs table',
          flush=True)
    store = ["--backend-store-uri", uri]
    if redact(uri) != uri:  # a password: in the environment, not in argv where ps would show it
        os.environ["MLFLOW_BACKEND_STORE_URI"], store = uri, []
    command = [sys.executable, "-m", "mlflow", "ui", *store,
               "--host", "127.0.0.1", "--port", str(ns.port), "--workers", "1"]  # one local user
    # MLflow's job runner starts several more processes that ablate has no use for.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(sys.executable, command)
    return 0  # not reached


def _sweep(args: list[str]) -> int:
    if not args or args[0].startswith("-"):
        from ablate.sweep import available_studies

        print("usage: ablate sweep <study> [key=value ...]\nstudies: " + ", ".join(available_studies()))
        return 0 if args and args[0] in ("-h", "--help") else 2
    from ablate.sweep import run_sweep

    return run_sweep(args[0], args[1:])


def _plan(args: list[str]) -> int:
    if not args or args[0].startswith("-"):
        from ablate.sweep import available_studies

        print("usage: ablate plan <study> [key=value ...]\nstudies: " + ", ".join(available_studies()))
        return 0 if args and args[0] in ("-h", "--help") else 2
    from ablate.sweep.plan import run_plan

    return run_plan(args[0], args[1:])


def _worker(args: list[str]) -> int:

    parser = _Parser(prog="ablate worker", description="Pull and run trials of a "
                     "study until it has its n_trials finished trials.")
    parser.add_argument("study")
    parser.add_argument("--storage", default=None, help="the study's Optuna storage (file or URL); "
                        "default: $ABLATE_STORAGE, which keeps a password out of the command line")
    parser.add_argument("--index", type=int, default=0, help="the worker's index in its sweep (set by "
                        "ablate sweep; a joining worker's sampler is seeded apart from every other)")
    parser.add_argument("--deadline", type=float, default=None, help="unix time; no trial starts after")
    parser.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)  # by ablate sweep
    parser.add_argument("--standby", action="store_true", help=argparse.SUPPRESS)  # ... started early
    parser.add_argument("overrides", nargs="*", help="the study's overrides, checked against its stored "
                        "recipe; devices=[1] pins this worker to a GPU")
    ns = parser.parse_intermixed_args(args)
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
        return _fail("storage: missing; pass --storage URL (or set ABLATE_STORAGE) as given to ablate sweep")
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


_received: list[int] = []


def _report(args: list[str]) -> int:

    from ablate.config import compose

    parser = _Parser(prog="ablate report", description="Write the ablation report of "
                     "a study (or of runs selected by --experiment / --tag) from MLflow.")
    parser.add_argument("study", nargs="?", help="the study name (omit with --experiment or --tag)")
    parser.add_argument("--format", default="md,html", help="md, html or md,html (default)")
    parser.add_argument("--out", default="reports", help="folder receiving <name>/report.* (default reports)")
    parser.add_argument("--experiment", help="select `ablate train -m` runs of this MLflow experiment")
    parser.add_argument("--tag", help="select runs with this tag, KEY=VALUE")
    parser.add_argument("--target", type=float, help="val_acc level for 'epochs to reach' (default: auto)")
    parser.add_argument("overrides", nargs="*", help="tracking.uri=... (default sqlite:///mlflow.db)")
    ns, extra = parser.parse_known_args(args)
    study, overrides = ns.study, list(ns.overrides) + extra
    if study is not None and "=" in study:  # `ablate report tracking.uri=...` with --experiment
        overrides.insert(0, study)
        study = None
    if study is None and not (ns.experiment or ns.tag):
        parser.error("study: missing; give a study, or --experiment / --tag to select runs")
    from ablate.report import write_report
    from ablate.report.format import check_target, parse_formats
    from ablate.report.schema import parse_tag_filter
    from ablate.report.write import check_out
    from ablate.tracking.store import check_store

    # What the command line says is checked before MLflow is read: a report that cannot be written
    # is not built.
    parse_formats(ns.format)
    check_target(ns.target)
    if ns.tag is not None:
        parse_tag_filter(ns.tag)
    check_out(ns.out)
    cfg = compose(overrides)
    check_store(cfg.tracking.uri, read=True)  # MLflow would create an empty store, then find nothing
    paths = write_report(study, out=ns.out, formats=ns.format, tracking_uri=cfg.tracking.uri,
                         experiment=ns.experiment, tag=ns.tag, target=ns.target)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    _received.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ablate`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, rest = args[0], args[1:]
    if command != "ui":
        # MLflow's INFO lines ("Creating initial MLflow database tables...") are its business, not
        # the user's; its warnings stay. A user's own MLFLOW_LOGGING_LEVEL wins.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # SIGTERM ends runs the way Ctrl-C does: recorded KILLED, never left RUNNING.
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        if command == "train":
            return _train(rest)
        if command == "ui":
            return _ui(rest)
        if command == "sweep":
            return _sweep(rest)
        if command == "worker":
            return _worker(rest)
        if command == "plan":
            return _plan(rest)
        if command == "report":
            return _report(rest)
    except AblateError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 128 + (_received[-1] if _received else signal.SIGINT))
    return _fail(f"unknown command {command!r}; expected one of: train, sweep, plan, worker, report, ui")


def run() -> None:
    """The ``ablate`` console script: :func:`main`, then exit without the interpreter's teardown.

    Everything is written and flushed by the time ``main`` returns; tearing down torch, MLflow and
    Optuna module by module takes another 1-2.5 s per process, which every sweep's workers and
    supervisor would otherwise wait for.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nobody is reading any more
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
