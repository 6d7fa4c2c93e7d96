"""``ablate report``: a study's (or selected runs') ablation report as Markdown and HTML."""

from __future__ import annotations

import argparse
from typing import Any

from ablate.cli.common import overrides_arg
from ablate.errors import AblateError


def add_report(sub: Any) -> None:
    report = sub.add_parser("report", help="write a study's ablation report (Markdown, HTML)",
                            description="Write the ablation report of a study (or of runs selected by "
                            "--experiment / --tag) from MLflow.")
    report.add_argument("study", nargs="?", help="the study name (omit with --experiment or --tag)")
    report.add_argument("--format", default="md,html", help="md, html or md,html (default)")
    report.add_argument("--out", default="reports", help="folder receiving <name>/report.* (default reports)")
    report.add_argument("--experiment", help="select `ablate train -m` runs of this MLflow experiment")
    report.add_argument("--tag", help="select runs with this tag, KEY=VALUE")
    report.add_argument("--target", type=float, help="val_acc level for 'epochs to reach' (default: auto)")
    overrides_arg(report, "tracking.uri=... (default sqlite:///mlflow.db)")
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

