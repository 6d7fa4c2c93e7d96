"""``ablate <command>``: parse, compose, dispatch, exit codes.

Exit codes: 0 success, 2 bad input (one line on stderr naming the field), 130 interrupted.
Each command imports what it needs when it runs (Hydra, torch, Optuna, MLflow cost seconds), so
`ablate --help` and a bad input answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import pickle
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

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
  dashboard <study> [--storage URL] [--port N]
                         serve optuna-dashboard on 127.0.0.1 for the study's storage
  studies [show|delete <study>] [--storage URL] [--yes]
                         the stored studies: kind, progress, best value, last activity, storage;
                         a study's recipe; delete one (its storage and MLflow runs) with --yes
  completion bash|zsh    the shell completion script: eval "$(ablate completion bash)"
"""

INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
_GRAMMAR = "choice(...), range(...), interval(...), tag(...)"


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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ablate")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


# --- Hydra's flags, understood anywhere among the overrides ---------------------------------------------


def _config_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", "-cd", action="append", default=[], metavar="DIR",
                        help="a folder of your own config groups (DIR/model/mynet.yaml is model=mynet) "
                        "and study files (DIR/<study>.yaml), searched after ./conf and ./sweeps; "
                        "hydra.searchpath=[file://DIR] does the same")


def _print_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--cfg", "-c", nargs="?", const="job", metavar="job|hydra|all",
                        help=f"print the composed {what} instead of running (job; hydra and all print "
                        "Hydra's own settings too, train only)")
    parser.add_argument("--package", "-p", metavar="KEY", help="with --cfg, print only this part (optimizer)")
    parser.add_argument("--resolve", action="store_true", help="with --cfg, resolve interpolations")


def _overrides_arg(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=text)


def _searchpath(overrides: list[str], given: Sequence[str]) -> list[str]:
    """Take ``hydra.searchpath=[file://DIR,...]`` out of ``overrides``: with ``--config-dir`` folders,
    they are set where every composition (and a sweep's workers) looks (``ABLATE_CONFIG_DIRS``).

    Returns:
        The other overrides.

    Raises:
        AblateError: a folder that does not exist, or a search path entry that is not a file:// one.
    """
    from ablate.config import CONFIG_DIRS_ENV

    dirs, rest = list(given), []
    for override in overrides:
        key, sep, value = override.partition("=")
        if key.lstrip("+") != "hydra.searchpath" or not sep:
            rest.append(override)
            continue
        from hydra.core.override_parser.overrides_parser import OverridesParser

        try:
            entries = OverridesParser.create().parse_override(f"x={value}").value()
        except Exception:  # noqa: BLE001 - Hydra's grammar error: said below in one line
            entries = None
        if not isinstance(entries, list):
            raise AblateError(f"hydra.searchpath: {value!r} is not allowed; expected a list like "
                              "[file:///path/to/conf]")
        for entry in entries:
            if not str(entry).startswith("file://"):
                raise AblateError(f"hydra.searchpath: {entry!r} is not allowed; expected file://<folder> "
                                  "(or use --config-dir <folder>)")
            dirs.append(str(entry).removeprefix("file://"))
    for folder in dirs:
        if not Path(folder).is_dir():
            raise AblateError(f"--config-dir: {folder!r} is not a folder")
    if dirs:
        known = [d for d in os.environ.get(CONFIG_DIRS_ENV, "").split(os.pathsep) if d]
        os.environ[CONFIG_DIRS_ENV] = os.pathsep.join(
            dict.fromkeys([*known, *(str(Path(d).resolve()) for d in dirs)]))
    return rest


def _optional_values(ns: argparse.Namespace, allowed: dict[str, Sequence[str]]) -> None:
    """``--cfg`` and ``--info`` take an optional value: one that is an override (``--cfg
    optimizer=adam``) is given back to the overrides; any other must be one of ``allowed``."""
    for flag, choices in allowed.items():
        value = getattr(ns, flag)
        if value is None or value in choices:
            continue
        if "=" not in value:
            raise AblateError(f"--{flag}: {value!r} is not allowed; expected one of: {', '.join(choices)}")
        ns.overrides = [value, *ns.overrides]
        setattr(ns, flag, choices[0])


def _parse(overrides: Sequence[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ablate.config import translate_compose_error

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except Exception as exc:
        err = translate_compose_error(exc)
        raise (err or AblateError(" ".join(str(exc).split()))) from exc


def check_train_overrides(overrides: Sequence[str], multirun: bool) -> list[Any]:
    """Refuse a search space under ``ablate train`` (``interval(...)`` and ``tag(...)``: ``ablate sweep``
    searches them), and a list of values without ``-m``: one line naming the key.

    ``choice(...)``, ``range(...)`` and ``a,b`` are lists Hydra's ``-m`` runs one by one, as ablate's.
    """
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, ValueType

    parsed = _parse(overrides)
    for text, o in zip(overrides, parsed, strict=True):
        if not o.is_sweep_override():
            continue
        key, value = o.get_key_element(), text.partition("=")[2]
        sweep = o._value
        shuffled = isinstance(sweep, ChoiceSweep) and sweep.shuffle
        if isinstance(sweep, IntervalSweep) or sweep.tags or shuffled:
            raise AblateError(f"{key}: {value!r} is a search space, which ablate train does not search; "
                              f"search it with ablate sweep <study> params.{key}='{value}'")
        if not multirun:
            kind = "list" if o.value_type == ValueType.SIMPLE_CHOICE_SWEEP else "sweep"
            raise AblateError(f"{key}: {value!r} is a {kind} of values; add -m to train each one, or "
                              f"search it with ablate sweep <study> params.{key}='{value}'")
    return parsed


def _expand(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Every combination a multirun will launch (a single one otherwise)."""
    parsed = check_train_overrides(overrides, multirun)
    if not multirun:
        return [overrides]
    choices = []
    for o in parsed:
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        choices.append([f"{key}={v}" for v in values])
    return [list(c) for c in itertools.product(*choices)]


def _validate_all(overrides: list[str], multirun: bool) -> None:
    """Compose every run a (multi)run will launch: a typo, a device this machine lacks or a store that
    cannot be written fails before the first run starts."""
    from ablate.config import compose

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


# --- ablate train ------------------------------------------------------------------------------------


def _train_help(overrides: list[str]) -> int:
    """The trick menu (every group's options, from conf/) and the config the overrides compose."""
    from omegaconf import OmegaConf

    from ablate.config import CONF_DIR, compose, user_conf_dirs
    from ablate.menu import CLIP_TARGETS, NORMS

    cfg = compose(overrides)
    print("usage: ablate train [-m] [--cfg job [-p KEY]] [--info] [-cd DIR] [key=value ...]\n")
    print("Train one recipe and record it in MLflow. Pick one option per trick family (group=option),")
    print("set any field (optimizer.lr=0.01); with -m, comma lists (or choice(...), range(...)) run every")
    print("combination. Hydra's flags work anywhere among the overrides: --cfg job prints the composed")
    print("config, -p KEY one part of it, --info what Hydra searched, -cd DIR adds your own groups,")
    print("--hydra-help Hydra's own help, -sc install=bash the shell completion.\n")
    print("== Trick families (group: options) ==")
    local = user_conf_dirs()
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        own = sorted(f.stem for d in local for f in (d / group.name).glob("*.yaml"))
        yours = f"; yours ({', '.join(str(d) for d in local)}): {', '.join(own)}" if own else ""
        print(f"  {group.name}: {', '.join(options)}{yours}")
    # Plain fields (no config group), listed from the menu.
    print(f"  norm: {', '.join(NORMS)}")
    print(f"  clip.to: {', '.join(CLIP_TARGETS)} "
          "(with clip=norm: above clip.threshold, rescale to it or to 1)\n")
    print("== Composed config (every field can be overridden) ==")
    print(OmegaConf.to_yaml(cfg), end="")
    return 0


def _add_train(sub: Any) -> None:
    train = sub.add_parser("train", add_help=False, help="train one recipe (Hydra overrides)",
                           description="Train one recipe and record it in MLflow.")
    train.add_argument("--help", "-h", action="store_true", help="the trick menu and the composed config")
    train.add_argument("--hydra-help", action="store_true", help="Hydra's own help")
    train.add_argument("--multirun", "-m", action="store_true", help="run every combination of comma lists")
    _print_flags(train, "config")
    train.add_argument("--info", "-i", nargs="?", const="all", metavar="|".join(INFO_CHOICES),
                       help="print Hydra's information (search path, defaults) instead of running")
    train.add_argument("--run", "-r", action="store_true", help="run one job (the default)")
    train.add_argument("--shell-completion", "-sc", action="store_true",
                       help="with install=bash or install=zsh: print the shell completion script")
    _config_dir_flag(train)
    for flag, short in (("--config-name", "-cn"), ("--config-path", "-cp")):  # refused, with a reason
        train.add_argument(flag, short, help=argparse.SUPPRESS)
    _overrides_arg(train, "Hydra overrides: optimizer=adam norm=batch optimizer.lr=0.01")
    train.set_defaults(run=_train)


def _train(ns: argparse.Namespace) -> int:
    _optional_values(ns, {"cfg": ("job", "hydra", "all"), "info": INFO_CHOICES})
    for flag, value in (("-cn/--config-name", ns.config_name), ("-cp/--config-path", ns.config_path)):
        if value is not None:
            raise AblateError(f"{flag}: {value!r} is not allowed; ablate composes its own primary config: "
                              "add your own groups with --config-dir DIR")
    overrides: list[str] = ns.overrides
    if ns.shell_completion:
        return _completion_install(overrides)
    overrides = _searchpath(overrides, ns.config_dir)
    if ns.help:
        check_train_overrides(overrides, ns.multirun)
        return _train_help(overrides)
    if ns.info is None and not ns.hydra_help:
        _validate_all(overrides, ns.multirun)

    import hydra
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import DictConfig

    from ablate.config import CONF_DIR, register_configs, search_overrides

    register_configs()
    GlobalHydra.instance().clear()  # compose() above leaves Hydra initialised; hydra.main initialises its own

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
    def job(cfg: DictConfig) -> None:
        from ablate.run import train_one

        try:
            train_one(cfg)
        except AblateError as exc:
            raise SystemExit(_fail(str(exc))) from None

    # Hydra's own parser takes its overrides in one block: ours first, then the flags, in its order.
    flags = ["--hydra-help"] if ns.hydra_help else []
    flags += ["-m"] if ns.multirun else []
    flags += ["--cfg", ns.cfg] if ns.cfg else []
    flags += ["--package", ns.package] if ns.package else []
    flags += ["--resolve"] if ns.resolve else []
    flags += ["--info", ns.info] if ns.info else []
    saved = sys.argv
    sys.argv = ["ablate train", *overrides, *search_overrides(), "hydra.job.name=train", *flags]
    try:
        job()
    finally:
        sys.argv = saved
    return 0


# --- ablate dashboard -------------------------------------------------------------------------------


def _add_dashboard(sub: Any) -> None:
    dash = sub.add_parser("dashboard", help="serve optuna-dashboard on 127.0.0.1 for a study",
                          description="Serve optuna-dashboard on 127.0.0.1 for the study's storage "
                          "(runs/<study>/journal.log, or --storage).")
    dash.add_argument("study", nargs="?", help="the study (ablate studies lists them)")
    dash.add_argument("--storage", help="an Optuna storage (journal file or URL; default: "
                      "runs/<study>/journal.log of the working folder, or $ABLATE_STORAGE)")
    dash.add_argument("--port", type=_port, default=8080)
    dash.set_defaults(run=_dashboard)


def _dashboard(ns: argparse.Namespace) -> int:
    from ablate.sweep.studies import serve_dashboard, stored_study

    if ns.study is None:
        raise AblateError("study: missing; ablate dashboard <study>")
    study = stored_study(ns.study, ns.storage or os.environ.get("ABLATE_STORAGE"))
    _check_port_free(ns.port)
    serve_dashboard(study, ns.port)
    return 0


# --- ablate studies ----------------------------------------------------------------------------------


def _add_studies(sub: Any) -> None:
    studies = sub.add_parser("studies", help="list, show or delete the stored studies",
                             description="The studies stored under runs/<study>/journal.log (or in "
                             "--storage): kind, progress, best value, last activity and storage. "
                             "show <study> prints its recipe; delete <study> --yes removes its storage "
                             "and marks its MLflow runs deleted (without --yes: what would be deleted, "
                             "exit 2, nothing deleted).")
    studies.add_argument("action", nargs="?", default="list", metavar="show|delete", help="list (default)")
    studies.add_argument("study", nargs="?", help="the study (show, delete)")
    studies.add_argument("--storage", help="an Optuna storage (journal file or URL; default: "
                         "runs/*/journal.log of the working folder, or $ABLATE_STORAGE)")
    studies.add_argument("--yes", "-y", action="store_true", help="delete: really delete")
    studies.set_defaults(run=_studies)


def _studies(ns: argparse.Namespace) -> int:
    from ablate.sweep.studies import delete_study, find_studies, show_study, studies_table

    storage = ns.storage or os.environ.get("ABLATE_STORAGE")
    if ns.action == "list":
        if ns.study is not None:
            raise AblateError(f"action: {ns.study!r} is not allowed after list; expected: ablate studies "
                              "[show|delete <study>]")
        print(studies_table(find_studies(storage)), end="")
        return 0
    if ns.action not in ("show", "delete"):
        raise AblateError(f"action: {ns.action!r} is not allowed; expected one of: list, show, delete")
    if ns.study is None:
        raise AblateError(f"study: missing; ablate studies {ns.action} <study>")
    if ns.action == "show":
        print(show_study(ns.study, storage), end="")
        return 0
    print(delete_study(ns.study, storage, yes=ns.yes))
    return 0


# --- ablate completion -------------------------------------------------------------------------------


def _add_completion(sub: Any) -> None:
    from ablate.completion import SHELLS

    completion = sub.add_parser("completion", help="print the shell completion script",
                                description='Print the shell completion script; load it with '
                                'eval "$(ablate completion bash)" (or zsh), e.g. in ~/.bashrc.')
    completion.add_argument("shell", choices=(*SHELLS, "query"), help="bash or zsh")
    completion.add_argument("line", nargs="*", help=argparse.SUPPRESS)  # query: the line to complete
    completion.set_defaults(run=_completion)


def _completion(ns: argparse.Namespace) -> int:
    from ablate.completion import main as query
    from ablate.completion import script

    if ns.shell == "query":
        return query(ns.line)
    print(script(ns.shell), end="")
    return 0


def _completion_install(overrides: list[str]) -> int:
    """Hydra's ``-sc install=bash``: the same script as ``ablate completion bash``."""
    from ablate.completion import SHELLS, script

    for override in overrides:
        action, _, shell = override.partition("=")
        if action == "install" and shell in SHELLS:
            print(script(shell), end="")
            return 0
        if action == "uninstall" and shell in SHELLS:
            print("complete -r ablate 2>/dev/null || true")
            return 0
    raise AblateError(f"--shell-completion: {' '.join(overrides) or 'nothing'!r} is not allowed; expected "
                      "install=bash or install=zsh (or uninstall=...)")


def _add_ui(sub: Any) -> None:
    ui = sub.add_parser("ui", help="serve the MLflow UI on 127.0.0.1", description="Serve the MLflow UI on "
                        "127.0.0.1 against the store ablate train writes to.")
    ui.add_argument("--port", type=_port, default=5000)
    ui.add_argument("--create", action="store_true", help="create an empty store when there is none "
                    "(without it, a folder with no store is refused: MLflow would serve an empty one)")
    _overrides_arg(ui, "e.g. tracking.uri=sqlite:///other.db")
    ui.set_defaults(run=_ui)


def _ui(ns: argparse.Namespace) -> int:
    from ablate.config import compose
    from ablate.tracking.store import check_store

    cfg = compose(ns.overrides)
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


def _add_study_command(sub: Any, name: str, summary: str, description: str) -> None:
    command = sub.add_parser(name, add_help=False, help=summary, description=description)
    command.add_argument("study", nargs="?", help="a study file's name (sweeps/<study>.yaml)")
    command.add_argument("--help", "-h", action="store_true",
                         help="with a study: its settings and what can be overridden")
    _print_flags(command, "study spec")
    command.add_argument("--info", "-i", nargs="?", const="searchpath", metavar="searchpath",
                         help="print the folders searched for studies and config groups")
    _config_dir_flag(command)
    _overrides_arg(command, "study fields (n_trials=40 pruner=hyperband), params.K='interval(a,b)', "
                   "or a trial field fixed for every trial (trainer.epochs=5)")
    command.set_defaults(run=functools.partial(_study_command, name))


def _study_command(command: str, ns: argparse.Namespace) -> int:
    from ablate.config import CONF_DIR, user_conf_dirs
    from ablate.sweep.spec import available_studies, study_search_path

    _optional_values(ns, {"cfg": ("job", "all"), "info": ("searchpath", "all")})
    if ns.study is not None and "=" in ns.study:  # `ablate sweep --cfg n_trials=3 x`: not a study name
        raise AblateError(f"study: {ns.study!r} is not allowed; give the study's name first: "
                          f"ablate {command} <study> [key=value ...]")
    overrides = _searchpath(ns.overrides, ns.config_dir)
    if ns.info:
        print("studies: " + ", ".join(str(f) for f in study_search_path()))
        print("config groups: " + ", ".join(str(f) for f in [CONF_DIR, *user_conf_dirs()]))
        return 0
    if ns.study is None:
        print(f"usage: ablate {command} <study> [--help] [--cfg] [-cd DIR] [key=value ...]\n"
              "studies: " + ", ".join(available_studies()))
        return 0 if ns.help else 2
    from ablate.sweep.spec import compose_study

    spec = compose_study(ns.study, overrides)
    if ns.help:
        print(_study_help(command, spec), end="")
        return 0
    if ns.cfg:
        print(_spec_yaml(spec, ns.package), end="")
        return 0
    if command == "plan":
        from ablate.sweep.plan import run_plan

        return run_plan(ns.study, overrides)
    from ablate.sweep import run_sweep

    return run_sweep(ns.study, overrides)


def _spec_document(spec: Any) -> dict[str, Any]:
    """The spec as stored (passwords left out), as plain data."""
    doc: dict[str, Any] = json.loads(spec.to_json())
    return doc


def _spec_yaml(spec: Any, package: str | None = None) -> str:
    import yaml

    doc: Any = _spec_document(spec)
    if package:
        for part in package.split("."):
            if not isinstance(doc, dict) or part not in doc:
                raise AblateError(f"--package: {package!r} is not allowed; expected a key of the study spec "
                                  f"({', '.join(sorted(_spec_document(spec)))})")
            doc = doc[part]
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def _study_help(command: str, spec: Any) -> str:
    from ablate.sweep.schema import PRUNERS, SAMPLERS

    doc = _spec_document(spec)
    doc.pop("distributions", None)
    lines = [f"usage: ablate {command} {spec.name} [--cfg [-p KEY]] [-cd DIR] [key=value ...]", ""]
    lines.append(f"Study {spec.name}: " + (f"ablation design {spec.design}, {len(spec.arms)} arms"
                                           if spec.design else f"search over {len(spec.params)} parameters"))
    lines += ["", "== Settings (override any: key=value) =="]
    for key in ("n_trials", "workers", "timeout", "metric", "direction", "storage", "out_dir", "experiment",
                "tracking_uri", "devices", "trials_per_device", "max_failures", "heartbeat_interval",
                "grace_period", "seeds"):
        if key in doc:
            lines.append(f"  {key}: {json.dumps(doc[key])}")
    lines.append(f"  sampler: {doc['sampler'].get('name')}  (sampler=one of {', '.join(SAMPLERS)}; "
                 "sampler.seed=N ...)")
    lines.append(f"  pruner: {doc['pruner'].get('name')}  (pruner=one of {', '.join(PRUNERS)})")
    if spec.params:
        grammar = "choice, range, interval, tag(log, ...)"
        lines += ["", f"== Searched parameters (params.KEY='grammar': {grammar}) =="]
        lines += [f"  params.{k}: {v}" for k, v in spec.params.items()]
    if spec.arms:
        lines += ["", "== Arms =="]
        lines += [f"  {k}: {' '.join(v) or '(reference)'}" for k, v in spec.arms.items()]
    lines += ["", "== Fixed for every trial (fixed.KEY=value, or any trial field: trainer.epochs=5) =="]
    lines += [f"  {k}: {v}" for k, v in spec.fixed.items()] or ["  (none)"]
    lines += ["", "--cfg prints the whole composed spec; ablate plan <study> what it would run and cost."]
    return "\n".join(lines) + "\n"


def _add_worker(sub: Any) -> None:
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
    _config_dir_flag(worker)
    _overrides_arg(worker, "the study's overrides, checked against its stored recipe; devices=[1] pins "
                   "this worker to a GPU")
    worker.set_defaults(run=_worker)


def _worker(ns: argparse.Namespace) -> int:
    ns.overrides = _searchpath(ns.overrides, ns.config_dir)
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


def _add_report(sub: Any) -> None:
    report = sub.add_parser("report", help="write a study's ablation report (Markdown, HTML)",
                            description="Write the ablation report of a study (or of runs selected by "
                            "--experiment / --tag) from MLflow.")
    report.add_argument("study", nargs="?", help="the study name (omit with --experiment or --tag)")
    report.add_argument("--format", default="md,html", help="md, html or md,html (default)")
    report.add_argument("--out", default="reports", help="folder receiving <name>/report.* (default reports)")
    report.add_argument("--experiment", help="select `ablate train -m` runs of this MLflow experiment")
    report.add_argument("--tag", help="select runs with this tag, KEY=VALUE")
    report.add_argument("--target", type=float, help="val_acc level for 'epochs to reach' (default: auto)")
    _overrides_arg(report, "tracking.uri=... (default sqlite:///mlflow.db)")
    report.set_defaults(run=_report)


def _report(ns: argparse.Namespace) -> int:
    from ablate.config import compose

    study, overrides = ns.study, list(ns.overrides)
    if study is not None and "=" in study:  # `ablate report tracking.uri=...` with --experiment
        overrides.insert(0, study)
        study = None
    if study is None and not (ns.experiment or ns.tag):
        raise AblateError("study: missing; give a study, or --experiment / --tag to select runs")
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


def build_parser() -> argparse.ArgumentParser:
    """``ablate``'s parser: one subparser per command, each with its own ``--help``."""
    parser = _Parser(prog="ablate", usage="ablate <command> [options] [overrides]",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     description=USAGE.split("\n", 2)[2], add_help=False)
    parser.add_argument("--help", "-h", action="help",
                        help="this help; ablate <command> --help for a command's")
    parser.add_argument("--version", "-V", action="version", version=f"ablate {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser, prog="ablate")
    _add_train(sub)
    _add_study_command(sub, "sweep", "run a study with parallel workers",
                       "Run a study from sweeps/ (the --config-dir folders and ./sweeps first) with parallel "
                       "workers, pruning, resume and MLflow parent/child runs.")
    _add_study_command(sub, "plan", "what a sweep would run and cost; nothing created",
                       "What a sweep would run and cost, nothing created.")
    _add_worker(sub)
    _add_report(sub)
    _add_ui(sub)
    _add_dashboard(sub)
    _add_studies(sub)
    _add_completion(sub)
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
        return _fail(f"unknown command {args[0]!r}; expected one of: {', '.join(commands)}")
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
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 128 + (_received[-1] if _received else signal.SIGINT))
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


if __name__ == "__main__":
    run()
