"""``ablate studies``: list, show or delete the stored studies."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ablate.errors import AblateError


def add_studies(sub: Any) -> None:
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

