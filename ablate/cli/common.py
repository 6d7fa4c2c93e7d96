"""What every command shares: one-line errors, the argument parser, Hydra's flags understood
anywhere among the overrides (``--config-dir``, ``--cfg``, ``hydra.searchpath``), ports."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from ablate.errors import AblateError

INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def fail(message: str, code: int = 2) -> int:
    print(f"ablate: error: {message}", file=sys.stderr)
    return code


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (``--port: invalid int value: 'abc'``), not usage + error."""

    def error(self, message: str) -> NoReturn:
        raise AblateError(" ".join(message.removeprefix("argument ").split()))


def port(text: str) -> int:
    """``ablate ui --port``: a TCP port number, 1-65535."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; expected a port number 1-65535")
    return port


def check_port_free(port: int) -> None:
    """Refuse a port something already listens on (MLflow would print a traceback and exit 0)."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will bind it
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise AblateError(f"--port: cannot serve on 127.0.0.1:{port} ({exc.strerror or exc}); is another "
                              "server using it? Pass --port N") from None


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ablate")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def config_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", "-cd", action="append", default=[], metavar="DIR",
                        help="a folder of your own config groups (DIR/model/mynet.yaml is model=mynet) "
                        "and study files (DIR/<study>.yaml), searched after ./conf and ./sweeps; "
                        "hydra.searchpath=[file://DIR] does the same")


def print_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--cfg", "-c", nargs="?", const="job", metavar="job|hydra|all",
                        help=f"print the composed {what} instead of running (job; hydra and all print "
                        "Hydra's own settings too, train only)")
    parser.add_argument("--package", "-p", metavar="KEY", help="with --cfg, print only this part (optimizer)")
    parser.add_argument("--resolve", action="store_true", help="with --cfg, resolve interpolations")


def overrides_arg(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=text)


def searchpath(overrides: list[str], given: Sequence[str]) -> list[str]:
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


def optional_values(ns: argparse.Namespace, allowed: dict[str, Sequence[str]]) -> None:
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

