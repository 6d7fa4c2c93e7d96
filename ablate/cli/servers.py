"""``ablate ui`` and ``ablate dashboard``: MLflow's UI and optuna-dashboard, served on 127.0.0.1."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ablate.cli.common import check_port_free, overrides_arg, port
from ablate.errors import AblateError
from ablate.secrets import redact  # no torch, Optuna or MLflow: cheap to import


def add_ui(sub: Any) -> None:
    ui = sub.add_parser("ui", help="serve the MLflow UI on 127.0.0.1", description="Serve the MLflow UI on "
                        "127.0.0.1 against the store ablate train writes to.")
    ui.add_argument("--port", type=port, default=5000)
    ui.add_argument("--create", action="store_true", help="create an empty store when there is none "
                    "(without it, a folder with no store is refused: MLflow would serve an empty one)")
    overrides_arg(ui, "e.g. tracking.uri=sqlite:///other.db")
    ui.set_defaults(run=_ui)


def _ui(ns: argparse.Namespace) -> int:
    from ablate.config import compose
    from ablate.tracking.store import check_store

    cfg = compose(ns.overrides)
    uri = cfg.tracking.uri
    check_port_free(ns.port)
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


def add_dashboard(sub: Any) -> None:
    dash = sub.add_parser("dashboard", help="serve optuna-dashboard on 127.0.0.1 for a study",
                          description="Serve optuna-dashboard on 127.0.0.1 for the study's storage "
                          "(runs/<study>/journal.log, or --storage).")
    dash.add_argument("study", nargs="?", help="the study (ablate studies lists them)")
    dash.add_argument("--storage", help="an Optuna storage (journal file or URL; default: "
                      "runs/<study>/journal.log of the working folder, or $ABLATE_STORAGE)")
    dash.add_argument("--port", type=port, default=8080)
    dash.set_defaults(run=_dashboard)


def _dashboard(ns: argparse.Namespace) -> int:
    from ablate.sweep.studies import serve_dashboard, stored_study

    if ns.study is None:
        raise AblateError("study: missing; ablate dashboard <study>")
    study = stored_study(ns.study, ns.storage or os.environ.get("ABLATE_STORAGE"))
    check_port_free(ns.port)
    serve_dashboard(study, ns.port)
    return 0

