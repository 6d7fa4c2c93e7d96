"""``ablate report``: what each trick contributes, as Markdown (+ PNGs) and one self-contained HTML file.

Two layers:

- :func:`build_report` is pure: runs and histories (DataFrames), the study spec and header facts
  in, a :class:`~ablate.report.render.ReportData` out. No MLflow, no files; notebooks and the
  benchmark use it directly. :func:`~ablate.report.render.render_markdown` and
  :func:`~ablate.report.render.render_html` turn it into text.
- :func:`write_report` reads a study from MLflow (:func:`~ablate.report.collect.collect`), builds,
  renders and writes ``<out>/<name>/report.md`` (+ PNGs) and ``report.html`` atomically.

The modules, in the order data flows through them:

============  =====================================================================================
collect       the only MLflow reader: a study or plain runs -> runs and history DataFrames, spec
analyse       the analysis as named steps -> :class:`Analysis`
designs       every design described once: reference arm, extra analysis step, extra sections
draw          which figures, with their captions (``figures`` draws them)
layout        the document: header, sections, appendix -> :class:`ReportData`
render        Markdown and HTML
build         analyse -> draw -> layout, in memory
write         collect -> build -> render -> files swapped into place
format        how numbers read; model: the dataclasses the others share
============  =====================================================================================
"""

from __future__ import annotations

from ablate.report.analyse import TARGET_LEVELS, Analysis, analyse
from ablate.report.build import build_report
from ablate.report.draw import draw_figures
from ablate.report.format import FORMATS, parse_formats
from ablate.report.layout import assemble
from ablate.report.render import ReportData, render_html, render_markdown
from ablate.report.write import write_report

__all__ = [
    "FORMATS",
    "TARGET_LEVELS",
    "Analysis",
    "ReportData",
    "analyse",
    "assemble",
    "build_report",
    "draw_figures",
    "parse_formats",
    "render_html",
    "render_markdown",
    "write_report",
]
