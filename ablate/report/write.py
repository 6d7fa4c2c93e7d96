"""``ablate report``'s files: read from MLflow, build, render, and swap the folder into place.

Everything is built in memory and written to a staging folder beside the final one; the previous
report is removed only once the new one is complete, so a failure leaves an earlier report as it
was and no file behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ablate.errors import AblateError
from ablate.report import render
from ablate.report.build import build_report
from ablate.report.collect import collect
from ablate.report.format import FORMATS, check_target, parse_formats
from ablate.report.render import ReportData
from ablate.tracking import attach_report, relocate_artifacts

__all__ = ["check_out", "write_report"]

_NAMES = {"md": "report.md", "html": "report.html"}


def _folder_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "report"
    return safe[:120]


def _rendered(report: ReportData, formats: Sequence[str]) -> dict[str, bytes]:
    """``{file name: bytes}``: ``report.md`` and its PNGs, and/or ``report.html``."""
    files: dict[str, bytes] = {}
    if "md" in formats:
        text, images = render.render_markdown(report)
        files[_NAMES["md"]] = text.encode("utf-8")
        files.update(images)
    if "html" in formats:
        files[_NAMES["html"]] = render.render_html(report).encode("utf-8")
    return files


def check_out(out: str | os.PathLike[str]) -> None:
    """Refuse an ``--out`` that cannot receive a report: a file, a path under a file, a folder (or
    the nearest existing folder above it) that cannot be written. Nothing is created here.

    Raises:
        AblateError: naming ``--out`` and what is wrong.
    """
    root = Path(out)
    existing = root
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == root else f"is under {str(existing)!r}, which is a file"
        raise AblateError(f"--out: {str(out)!r} {where}; expected a folder (created if absent)")
    try:
        tempfile.TemporaryFile(dir=existing).close()  # modes are not the whole story (root, ro mounts)
    except OSError as exc:
        raise AblateError(f"--out: cannot write to {str(existing)!r} ({exc.strerror or exc}); expected a "
                          "writable folder") from None


def write_report(study: str | None, *, out: str | os.PathLike[str] = "reports",
                 formats: str | Sequence[str] = FORMATS, tracking_uri: str, experiment: str | None = None,
                 tag: str | None = None, target: float | None = None, attach: bool = True) -> list[Path]:
    """Read a study (or plain runs) from MLflow and write its report.

    Writes ``<out>/<name>/report.md`` with its PNGs beside it and/or ``report.html`` (figures
    inline), and logs them on the study's parent run, where ``name`` is the study, else the
    experiment, else the tag filter. Everything is built in memory, written to a temporary folder
    inside ``out`` and moved into place only when complete: a failure leaves no file behind and an
    earlier report untouched.

    Args:
        study: Study name; None selects runs by ``experiment`` and/or ``tag``.
        out: Folder holding the reports.
        formats: ``("md", "html")``, a subset, or ``"md,html"``.
        tracking_uri: The MLflow store.
        experiment: MLflow experiment to read from.
        tag: ``KEY=VALUE`` tag filter.
        target: Convergence target on val_acc in (0, 1]; None = automatic.
        attach: Log the written files as artifacts of the study's MLflow parent run (when it has
            one), where MLflow's UI lists and previews them.

    Returns:
        The written report files (``report.md`` and/or ``report.html``), in ``formats`` order.

    Raises:
        AblateError: an unknown format, study or experiment, no finished runs, mixed datasets or
            metrics, a bad target, an ``out`` that cannot be written.
    """
    chosen = parse_formats(formats)
    target = check_target(target)
    check_out(out)
    relocate_artifacts(tracking_uri)  # a moved project folder: study.json is read from the artifacts
    collected = collect(study, tracking_uri=tracking_uri, experiment=experiment, tag=tag)
    meta = dict(collected.meta, parent_run_id=collected.parent_run_id)
    report = build_report(collected.runs, collected.history, collected.spec, meta, target=target)
    files = _rendered(report, chosen)

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    final = root / _folder_name(str(meta.get("name") or study or "report"))
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.new-", dir=root))
    try:
        for file, data in files.items():
            (staging / file).write_bytes(data)
        _swap_into_place(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if attach and study is not None and collected.parent_run_id:
        attach_report(tracking_uri=tracking_uri, parent_run_id=collected.parent_run_id, folder=final)
    return [final / _NAMES[f] for f in chosen]


def _swap_into_place(staging: Path, final: Path) -> None:
    """Replace ``final`` by ``staging``: the old report is removed only once the new one is in place."""
    if not final.exists():
        staging.chmod(0o755)  # mkdtemp makes it private; a report folder is as readable as its parent
        os.replace(staging, final)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    backup.rmdir()  # only the unique name is wanted: rename needs it free
    os.replace(final, backup)
    try:
        staging.chmod(0o755)
        os.replace(staging, final)
    except BaseException:
        os.replace(backup, final)  # put the previous report back
        raise
    shutil.rmtree(backup, ignore_errors=True)
