"""``ablate studies``: the studies stored in a folder (``runs/<study>/journal.log``) or an RDB storage,
each with its kind, progress, best value (a search) or verdicts so far (an ablation), last activity and
storage; one study's recipe; deleting one.

Reads the storage only through :mod:`ablate.sweep.storage` and :func:`ablate.sweep.spec.load_spec`;
MLflow is written only by :mod:`ablate.tracking` (its runs marked deleted).
"""

from __future__ import annotations

import datetime
import json
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from ablate.errors import AblateError
from ablate.records import ATTR_PARENT, ATTR_SPEC
from ablate.secrets import redact
from ablate.sweep.schema import check_name
from ablate.sweep.spec import StudySpec
from ablate.sweep.storage import best_trial, count_states, open_storage

__all__ = ["StoredStudy", "delete_study", "find_studies", "show_study", "studies_table"]


@dataclass(frozen=True)
class StoredStudy:
    """One study as its storage holds it."""

    name: str
    storage: str  # the URL or journal path (the password is redacted when shown)
    kind: str  # "search" or "ablation <design>"
    finished: int
    total: int | None
    running: int
    failed: int
    best: str  # the best value, or "-" when none finished
    verdicts: str  # an ablation's verdicts so far ("2 helps, 1 no effect, 1 unresolved"), or "-"
    last: str  # the last trial's start or end, UTC, or "-"
    spec: StudySpec | None  # None: not created by ablate sweep
    parent_run_id: str | None


def _journals(cwd: Path) -> list[Path]:
    runs = cwd / "runs"
    return sorted(runs.glob("*/journal.log")) if runs.is_dir() else []


def find_studies(storage: str | None = None, *, cwd: str | Path | None = None) -> list[StoredStudy]:
    """Every study in ``storage`` (a journal file or an RDB URL), or in ``runs/*/journal.log``."""
    base = Path(cwd or Path.cwd())
    urls = [storage] if storage else [str(p) for p in _journals(base)]
    found: list[StoredStudy] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for url in urls:
        opened = open_storage(url, heartbeat_interval=None)
        for frozen in opened.get_all_studies():
            study_id = opened.get_study_id_from_name(frozen.study_name)
            found.append(_describe(opened, url, study_id, frozen.study_name))
    return found


def _describe(storage: Any, url: str, study_id: int, name: str) -> StoredStudy:
    attrs = storage.get_study_user_attrs(study_id)
    spec = StudySpec.from_json(attrs[ATTR_SPEC]) if ATTR_SPEC in attrs else None
    trials = storage.get_all_trials(study_id, deepcopy=False)
    counts = count_states(trials)
    direction = spec.direction if spec else "maximize"
    best = best_trial(trials, direction)
    stamps = [t for trial in trials for t in (trial.datetime_start, trial.datetime_complete) if t]
    last = max(stamps).astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M") if stamps else "-"
    if spec is None:
        kind, total = "not ablate's", None
    elif spec.design:
        kind, total = f"ablation {spec.design}", len(spec.arms) * (
            spec.adaptive["start"] if spec.adaptive else len(spec.seeds))
    else:
        kind, total = "search", spec.n_trials
    return StoredStudy(name=name, storage=url, kind=kind, finished=counts["finished"], total=total,
                       running=counts["running"] + counts["finishing"], failed=counts["failed"],
                       best="-" if best is None else f"{best.value:.4g}",
                       verdicts=_verdicts(spec, trials) if spec is not None and spec.design else "-",
                       last=last, spec=spec, parent_run_id=attrs.get(ATTR_PARENT))


def _verdicts(spec: StudySpec, trials: Sequence[FrozenTrial]) -> str:
    """How many tricks help, hurt, have no effect or are unresolved, from the told values (the rule
    of the report and of ``ablate plan``); "-" before two paired seeds."""
    from ablate.analysis.verdicts import VERDICTS
    from ablate.sweep.plan import verdict_table

    made = verdict_table(spec, trials)
    if made is None:
        return "-"
    counts = Counter(str(v) for v in made[0]["verdict"])
    return ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v])


def _outcome(s: StoredStudy) -> str:
    """A search's best value with its metric, an ablation's verdicts."""
    if s.spec is not None and s.spec.design:
        return s.verdicts
    return s.best if s.spec is None or s.best == "-" else f"{s.best} {s.spec.metric}"


def studies_table(studies: list[StoredStudy]) -> str:
    """The listing ``ablate studies`` prints, one study a line."""
    if not studies:
        return "no studies here (ablate sweep <study> creates runs/<study>/journal.log)\n"
    header = ("study", "kind", "finished", "running", "failed", "best / verdicts", "last activity (UTC)",
              "storage")
    rows = [header] + [(s.name, s.kind, f"{s.finished}/{s.total if s.total is not None else '?'}",
                        str(s.running), str(s.failed), _outcome(s), s.last, redact(s.storage))
                       for s in studies]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def _one(name: str, storage: str | None, cwd: str | Path | None) -> StoredStudy:
    check_name("study", name)
    base = Path(cwd or Path.cwd())
    if storage is None:
        journal = base / "runs" / name / "journal.log"
        if not journal.is_file():
            here = ", ".join(p.parent.name for p in _journals(base)) or "none"
            raise AblateError(f"study: {name!r} is not stored under runs/ (stored: {here}); "
                              "give --storage URL for another storage")
        storage = str(journal)
    for study in find_studies(storage, cwd=base):
        if study.name == name:
            return study
    raise AblateError(f"study: no study {name!r} in {redact(storage)}")


def stored_study(name: str, storage: str | None = None, *, cwd: str | Path | None = None) -> StoredStudy:
    """The study ``name`` in ``storage``, or in ``runs/<name>/journal.log`` of the working folder.

    Raises:
        AblateError: no such study there (one line naming it and what is stored).
    """
    return _one(name, storage, cwd)


def serve_dashboard(study: StoredStudy, port: int) -> None:
    """Serve optuna-dashboard on 127.0.0.1:``port`` for the study's storage, until interrupted."""
    import optuna_dashboard

    storage = open_storage(study.storage, heartbeat_interval=None)
    study_id = storage.get_study_id_from_name(study.name)
    print(f"optuna-dashboard for study {study.name!r} ({redact(study.storage)}) at "
          f"http://127.0.0.1:{port}/dashboard/studies/{study_id}", flush=True)
    optuna_dashboard.run_server(storage, host="127.0.0.1", port=port)


def show_study(name: str, storage: str | None = None, *, cwd: str | Path | None = None) -> str:
    """The study's recipe, as ``ablate sweep`` stored it (passwords left out), as YAML."""
    import yaml

    study = _one(name, storage, cwd)
    if study.spec is None:
        raise AblateError(f"study: {name!r} was not created by ablate sweep (it has no recorded recipe)")
    doc = json.loads(study.spec.to_json())
    doc.pop("distributions", None)
    head = (f"# study {name}: {study.kind}, {study.finished}/{study.total} finished; "
            f"storage {redact(study.storage)}\n")
    return head + yaml.safe_dump(doc, sort_keys=False)


def delete_study(name: str, storage: str | None = None, *, yes: bool, cwd: str | Path | None = None) -> str:
    """Delete a study's storage (its journal folder, or the study in an RDB storage) and mark its MLflow
    runs deleted. Without ``yes`` nothing is deleted: an :class:`AblateError` says what would be.

    Returns:
        What was deleted, in words.
    """
    study = _one(name, storage, cwd)
    tracking = study.spec.tracking_uri if study.spec else ""
    journal = Path(study.storage) if "://" not in study.storage else None
    # A journal under runs/<name>/ with this study alone goes with its folder; otherwise the study only.
    whole = journal is not None and journal.parent.name == name and len(find_studies(study.storage)) == 1
    target = f"folder {journal.parent}" if whole and journal else f"study {name!r} in {redact(study.storage)}"
    runs = f" and its MLflow runs in {redact(tracking)}" if tracking and study.parent_run_id else ""
    if not yes:
        raise AblateError(f"--yes: not given; would delete {target}{runs}; rerun with --yes to delete")
    if tracking and study.parent_run_id:
        from ablate.tracking.studies import delete_study_runs

        delete_study_runs(tracking_uri=tracking, parent_run_id=study.parent_run_id)
    if whole and journal is not None:
        shutil.rmtree(journal.parent)
    else:
        optuna.delete_study(study_name=name, storage=open_storage(study.storage, heartbeat_interval=None))
    return f"deleted {target}{runs}"
