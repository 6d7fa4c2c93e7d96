"""``ablate completion bash|zsh`` (and Hydra's ``-sc install=bash``): the shell completion script."""

from __future__ import annotations

import argparse
from typing import Any

from ablate.errors import AblateError


def add_completion(sub: Any) -> None:
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


def completion_install(overrides: list[str]) -> int:
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

