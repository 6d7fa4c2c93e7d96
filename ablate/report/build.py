"""The report from in-memory tables: analysis, figures and layout (no MLflow, no files).

Notebooks and ``benchmarks/bench_report.py`` call :func:`build_report` directly;
:func:`~ablate.report.write.write_report` calls it on what :mod:`~ablate.report.collect` read.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ablate.report.analyse import analyse
from ablate.report.draw import draw_figures
from ablate.report.layout import assemble
from ablate.report.model import N_BOOT
from ablate.report.render import ReportData

__all__ = ["build_report"]


def build_report(runs: pd.DataFrame, history: pd.DataFrame | None, spec: Mapping[str, Any] | None,
                 meta: Mapping[str, Any] | None = None, *, target: float | None = None,
                 figures: bool = True, n_boot: int = N_BOOT) -> ReportData:
    """The whole report from in-memory tables: analysis, figures and layout (no MLflow, no files).

    Args:
        runs: One row per finished run: ``run_id``, ``arm``, ``seed``, metric columns
            (``best_val_acc``, ``test_acc``, ``val_acc``, ``train_acc``), ``epochs_run``,
            ``train_time``, ``stop_reason``; optional ``state``, ``dataset``, ``params.*``, ``tags.*``.
        history: Long per-epoch history ``run_id, metric, step, value`` (None: no curves).
        spec: The study spec (see :func:`ablate.report.collect.normalise_spec`), or None.
        meta: Header facts (name, counts, versions, hardware, commits, tracking_uri...).
        target: Convergence target on val_acc in (0, 1]; None = the highest of
            :data:`~ablate.report.analyse.TARGET_LEVELS` that at least half of all runs reach.
        figures: False skips the figures.
        n_boot: Bootstrap resamples.

    Returns:
        The laid-out report; ``timings`` holds seconds for analysis, figures and assembly.
    """
    if history is None:
        history = pd.DataFrame({"run_id": pd.Series([], dtype=object),
                                "metric": pd.Series([], dtype=object),
                                "step": pd.Series([], dtype=np.int64),
                                "value": pd.Series([], dtype=np.float64)})
    t0 = time.perf_counter()
    result = analyse(runs, history, spec, meta, target=target, n_boot=n_boot)
    t1 = time.perf_counter()
    figs = draw_figures(result, result.runs, history) if figures else {}
    t2 = time.perf_counter()
    report = assemble(result.runs, spec, meta, result, figs)
    t3 = time.perf_counter()
    report.timings = {"analysis": t1 - t0, "figures": t2 - t1, "assemble": t3 - t2}
    return report
