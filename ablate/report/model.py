"""The report's data model: what analysis hands to layout, and what a design adds to both.

- :class:`Analysis`: every number the report shows (DataFrames from :mod:`ablate.analysis`).
- :class:`Inputs`: what every analysis step reads (the runs, the spec, the value column...).
- :class:`Page`: what every section builder reads (the analysis, the runs, the figures...).
- :class:`ReportDesign`: one design described once (its reference arm, its extra analysis step,
  its sections, its header line); :mod:`ablate.report.designs` holds one per design.

Nothing here computes: the module sits below both :mod:`~ablate.report.analyse` and
:mod:`~ablate.report.layout`, so neither imports the other and :mod:`~ablate.report.designs` can
import both sides' building blocks without an import circle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ablate.report.format import MetricFormat
from ablate.report.render import Figure, Section

__all__ = ["CI", "N_BOOT", "Analysis", "Inputs", "Page", "ReportDesign", "SectionBuilder", "Step"]

CI = 0.95
"""Level of every confidence interval the report shows."""
N_BOOT = 2000
"""Bootstrap resamples per interval."""


@dataclass
class Analysis:
    """Every number the report shows, as DataFrames (see :mod:`ablate.analysis`).

    ``extras`` holds what a design's own analysis step adds, by the design's name; the
    ``cumulative``, ``factorial`` and ``search`` properties read it for the designs that have one.
    """

    runs: pd.DataFrame  # the input, with the value column added when it had to be computed
    fmt: MetricFormat
    metric: str  # the study's per-epoch metric (val_acc)
    maximize: bool
    design: str | None
    is_search: bool
    arms: list[str]  # best first
    reference: str | None
    summary: pd.DataFrame
    kind: ReportDesign  # the design's description (ablate.report.designs)
    comparisons: pd.DataFrame | None = None
    missing_comparisons: list[str] = field(default_factory=list)
    target: float | None = None
    convergence: pd.DataFrame | None = None
    overfitting: pd.DataFrame | None = None
    stability: pd.DataFrame | None = None
    cost: pd.DataFrame | None = None
    test: pd.Series | None = None
    grad: pd.DataFrame | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    margin: float | None = None  # the verdicts' equivalence margin (metric units); None = not tested
    alpha: float = 1.0 - CI  # the verdicts' family-wise level, 1 - resolve.confidence
    # adaptive seeds {start, step, max}: verdicts and intervals at levels valid under its stopping
    adaptive: dict[str, int] | None = None

    @property
    def cumulative(self) -> pd.DataFrame | None:
        """A cumulative design's steps: ``step, arm, mean, change, ci_low, ci_high, n_pairs``."""
        return self.extras.get("cumulative")

    @property
    def factorial(self) -> pd.DataFrame | None:
        """A factorial design's main effects and interactions (:func:`ablate.analysis.factorial_effects`)."""
        return self.extras.get("factorial")

    @property
    def search(self) -> dict[str, Any] | None:
        """A search's ``expected``, ``observed`` best values, ``params``, ``typed`` and ``importance``."""
        return self.extras.get("search")


@dataclass
class Inputs:
    """What every analysis step reads; ``paired`` is filled by the pairing step."""

    runs: pd.DataFrame
    history: pd.DataFrame
    spec: Mapping[str, Any]
    meta: Mapping[str, Any]
    column: str  # the per-run value compared (best_val_acc)
    target: float | None
    n_boot: int
    seed: int
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)  # one run per (arm, seed)


@dataclass(frozen=True)
class Page:
    """What every section builder reads."""

    result: Analysis
    runs: pd.DataFrame
    spec: Mapping[str, Any]
    meta: Mapping[str, Any]
    figs: Mapping[str, tuple[bytes, str]]

    def figure(self, key: str) -> list[Figure]:
        """The figure ``key`` as a block, or nothing when it was not drawn."""
        return [Figure(key, self.figs[key][1], self.figs[key][0])] if key in self.figs else []


Step = Callable[[Inputs, Analysis], None]
"""An analysis step: reads the inputs, fills its part of the analysis (or a note)."""
SectionBuilder = Callable[[Page], list[Section]]
"""A report section (or none): built from the page."""


@dataclass(frozen=True)
class ReportDesign:
    """One design, described once: how analysis and layout treat its studies.

    Attributes:
        name: The design's name in ``study.json`` (``leave_one_out``), ``search`` or ``runs``.
        title: The report's title before its name (``Ablation report``).
        arm_order: The arms in the design's own order, from the spec (cumulative: the order the
            tricks were added), or None when the design has none. Its last arm is the reference.
        step: The design's own analysis step, run after the common ones; it keeps its results
            in ``Analysis.extras[name]`` (or a note).
        sections: The design's sections, in order (the figures and the run appendix follow).
        frames: The design's own DataFrames for ``ReportData.frames``.
        describe: The header's Design line.
    """

    name: str
    title: str
    sections: tuple[SectionBuilder, ...]
    describe: Callable[[Analysis, Mapping[str, Any]], str]
    arm_order: Callable[[Mapping[str, Any]], list[str]] | None = None
    step: Step | None = None
    frames: Callable[[Analysis], dict[str, Any]] = field(default=lambda result: {})
