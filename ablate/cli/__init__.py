"""``ablate <command>``: parse, compose, dispatch, exit codes.

Exit codes: 0 success, 2 bad input (one line on stderr naming the field), 130 interrupted.
Each command imports what it needs when it runs (Hydra, torch, Optuna, MLflow cost seconds), so
`ablate --help` and a bad input answer at once. One module per command (``train``, ``study``: sweep
and plan, ``worker``, ``report``, ``servers``: ui and dashboard, ``studies``, ``completion``), what
they share in ``common``; this one builds the parser and dispatches.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from ablate.cli.common import Parser, fail, version_text
from ablate.cli.completion import add_completion
from ablate.cli.report import add_report
from ablate.cli.servers import add_dashboard, add_ui
from ablate.cli.studies import add_studies
from ablate.cli.study import add_study_command
from ablate.cli.train import add_train
from ablate.cli.worker import add_worker
from ablate.errors import AblateError

__all__ = ["build_parser", "main", "run"]

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
  dashboard <study> [--storage URL] [--port N]
                         serve optuna-dashboard on 127.0.0.1 for the study's storage
  studies [show|delete <study>] [--storage URL] [--yes]
                         the stored studies: kind, progress, best value, last activity, storage;
                         a study's recipe; delete one (its storage and MLflow runs) with --yes
  completion bash|zsh    the shell completion script: eval "$(ablate completion bash)"
"""


_received: list[int] = []


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    _received.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def build_parser() -> argparse.ArgumentParser:
    """``ablate``'s parser: one subparser per command, each with its own ``--help``."""
    parser = Parser(prog="ablate", usage="ablate <command> [options] [overrides]",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     description=USAGE.split("\n", 2)[2], add_help=False)
    parser.add_argument("--help", "-h", action="help",
                        help="this help; ablate <command> --help for a command's")
    parser.add_argument("--version", "-V", action="version", version=f"ablate {version_text()}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=Parser, prog="ablate")
    add_train(sub)
    add_study_command(sub, "sweep", "run a study with parallel workers",
                       "Run a study from sweeps/ (the --config-dir folders and ./sweeps first) with parallel "
                       "workers, pruning, resume and MLflow parent/child runs.")
    add_study_command(sub, "plan", "what a sweep would run and cost; nothing created",
                       "What a sweep would run and cost, nothing created.")
    add_worker(sub)
    add_report(sub)
    add_ui(sub)
    add_dashboard(sub)
    add_studies(sub)
    add_completion(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ablate`` console script."""
    from ablate.config.composition import CONFIG_DIRS_ENV

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] == "help":
        print(USAGE, end="")
        return 0
    parser = build_parser()
    from ablate.completion import COMMANDS as commands
    if not args[0].startswith("-") and args[0] not in commands:
        return fail(f"unknown command {args[0]!r}; expected one of: {', '.join(commands)}")
    if args[0] != "ui":
        # MLflow's INFO lines ("Creating initial MLflow database tables...") are its business, not
        # the user's; its warnings stay. A user's own MLFLOW_LOGGING_LEVEL wins.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # SIGTERM ends runs the way Ctrl-C does: recorded KILLED, never left RUNNING.
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    saved_dirs = os.environ.get(CONFIG_DIRS_ENV)
    try:
        try:
            ns, extra = parser.parse_known_args(args)
        except SystemExit as done:  # --help, --version
            return int(done.code or 0)
        # Overrides after a flag (`optimizer=adam --cfg job seed=1`) are overrides too.
        unknown = [e for e in extra if e.startswith("-")]
        if unknown:
            raise AblateError(f"unrecognized arguments: {' '.join(unknown)}")
        if extra:
            if not hasattr(ns, "overrides"):
                raise AblateError(f"unrecognized arguments: {' '.join(extra)}")
            ns.overrides = [*ns.overrides, *extra]
        return int(ns.run(ns))
    except AblateError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted", 128 + (_received[-1] if _received else signal.SIGINT))
    finally:
        if saved_dirs is None:
            os.environ.pop(CONFIG_DIRS_ENV, None)
        else:
            os.environ[CONFIG_DIRS_ENV] = saved_dirs


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

