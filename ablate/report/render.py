"""The report as a document: a few block types, rendered to GitHub Markdown and to one HTML file.

Every piece of text in a block is plain text; the renderers escape it for their format, so a run
named ``<script>alert(1)</script>`` or an arm holding ``|`` shows as written, never as markup:

- Markdown: ``& < >`` become entities, Markdown punctuation (``\\ ` * _ [ ] | ~``) is backslash-
  escaped, line breaks become spaces (a table row is one line), and a leading ``#``, ``-``, ``+``,
  ``=`` or ``1.`` is escaped so it cannot start a heading or a list.
- HTML: :func:`html.escape` (quotes included) on every string; figures are inline ``data:`` PNGs;
  no script, no external resource, and a Content-Security-Policy that would refuse them anyway.
- A :class:`Link` cell becomes a link only to an ``http(s)`` address (escaped as above, and in
  Markdown percent-encoded where it would end the link); any other target shows as plain text.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from ablate.report.format import VERDICT_COLOURS, verdict_class

__all__ = [
    "Bullets",
    "Figure",
    "Link",
    "Paragraph",
    "ReportData",
    "Rich",
    "Section",
    "Table",
    "md_inline",
    "render_html",
    "render_markdown",
]

Rich = Union[str, Sequence[tuple[str, str]]]  # noqa: UP007 (a runtime alias; py3.10 lacks | on generics)
"""Plain text, or ``[(style, text), ...]`` with style ``""`` (plain), ``"b"`` (bold) or ``"code"``."""


@dataclass
class Paragraph:
    """A paragraph of text; ``note`` paragraphs are set smaller and greyer in HTML."""

    text: Rich
    note: bool = False


@dataclass
class Bullets:
    """A bulleted list, one item per line."""

    items: list[Rich]


@dataclass(frozen=True)
class Link:
    """A table cell that links to a page (an MLflow run's), as plain text and an address."""

    text: str
    href: str

    def __str__(self) -> str:
        return self.text

    @property
    def safe(self) -> bool:
        """Only http(s) addresses become links (never ``javascript:`` or ``data:``)."""
        return self.href.lower().startswith(("http://", "https://"))


Cell = Union[str, Link]  # noqa: UP007 (a runtime alias, as Rich)


@dataclass
class Table:
    """A table of preformatted strings (a cell may be a :class:`Link`).

    Attributes:
        columns: Header cells.
        rows: One list of cells per row (same length as ``columns``).
        align: ``"l"`` or ``"r"`` per column (numbers right); default all left.
        collapsed: HTML only: fold the table under a ``<details>`` element (long appendices).
        summary: The ``<summary>`` text when collapsed.
        row_classes: HTML only: a class per row ("" for none), such as a verdict's
            (:func:`~ablate.report.format.verdict_class`), whose colour its first cell takes.
    """

    columns: list[str]
    rows: Sequence[Sequence[Cell]]
    align: list[str] | None = None
    collapsed: bool = False
    summary: str = ""
    row_classes: list[str] | None = None


@dataclass
class Figure:
    """A PNG figure. ``name`` is the file stem in Markdown output (fixed, ASCII, never user text)."""

    name: str
    caption: str
    png: bytes


@dataclass
class Section:
    """A titled section of blocks (``level`` 2 = ``##``)."""

    title: str
    blocks: list[Any] = field(default_factory=list)
    level: int = 2


@dataclass
class ReportData:
    """Everything a renderer needs, plus the analysis tables for programmatic use.

    Attributes:
        title: Document title.
        header: ``(field, value)`` facts shown first (study, design, dataset, versions...).
        sections: Body sections in order.
        frames: The analysis DataFrames behind the tables (``arms``, ``comparisons``...).
        timings: Seconds spent per stage (``analysis``, ``figures``, ``assemble``).
    """

    title: str
    header: list[tuple[str, str]]
    sections: list[Section]
    frames: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


# --- Markdown ------------------------------------------------------------------------------------

_MD_PUNCT = re.compile(r"([\\`*\[\]|~])")
_MD_LONE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # intraword _ is inert
_MD_LEADING = re.compile(r"^([#+\-=]|\d+[.)])")
_WS = re.compile(r"\s+")


def md_inline(text: Any, *, block_start: bool = False) -> str:
    """Plain text as Markdown inline content that renders as written, on one line.

    Args:
        text: Any value; ``str()`` of it is used.
        block_start: The text opens a paragraph or list item, where ``#``, ``-``, ``+``, ``=`` or
            ``1.`` would start a heading or a list (table cells are inline only and need not).
    """
    s = _WS.sub(" ", str(text)).strip()
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_PUNCT.sub(r"\\\1", s)
    s = _MD_LONE_UNDERSCORE.sub(r"\\_", s)
    m = _MD_LEADING.match(s) if block_start else None
    if m:
        lead = m.group(1)
        s = ("\\" + s) if not lead[0].isdigit() else lead[:-1] + "\\" + lead[-1] + s[len(lead):]
    return s


def _md_rich(text: Rich) -> str:
    """Rich text opening a paragraph or list item."""
    if isinstance(text, str):
        return md_inline(text, block_start=True)
    parts = []
    for k, (style, chunk) in enumerate(text):
        if style == "b" and chunk.strip():
            parts.append(f"**{md_inline(chunk)}**")
        elif style == "code" and "`" not in chunk and "|" not in chunk and chunk.strip():
            parts.append(f"`{_WS.sub(' ', chunk).strip()}`")
        else:
            # Keep the spaces around plain chunks: they separate it from the styled ones.
            lead = " " if chunk[:1].isspace() else ""
            trail = " " if chunk[-1:].isspace() and chunk.strip() else ""
            parts.append(lead + md_inline(chunk, block_start=k == 0) + trail)
    out = "".join(parts)
    return out


def _md_table(table: Table) -> list[str]:
    align = table.align or ["l"] * len(table.columns)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(md_inline(c) or " " for c in table.columns) + " |",
             "| " + " | ".join(rule) + " |"]
    lines.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows)
    return lines


def _md_cell(cell: Cell) -> str:
    if isinstance(cell, Link) and cell.safe:
        href = "".join(f"%{ord(ch):02X}" if ch in ' ()<>|"\\`' or ord(ch) < 33 else ch for ch in cell.href)
        return f"[{md_inline(cell.text)}]({href})"
    return md_inline(cell)


def render_markdown(report: ReportData) -> tuple[str, dict[str, bytes]]:
    """The report as GitHub-flavoured Markdown.

    Returns:
        ``(text, files)``: the Markdown, and ``{file name: PNG bytes}`` to write beside it (the
        Markdown references them by relative name).
    """
    out = [f"# {md_inline(report.title)}", ""]
    out += _md_table(Table(["Field", "Value"], [[k, v] for k, v in report.header]))
    out.append("")
    files: dict[str, bytes] = {}
    for section in report.sections:
        out += ["#" * section.level + " " + md_inline(section.title), ""]
        for block in section.blocks:
            if isinstance(block, Paragraph):
                text = _md_rich(block.text)
                out += [f"*{text}*" if block.note and text else text, ""]
            elif isinstance(block, Bullets):
                out += ["- " + _md_rich(item) for item in block.items] + [""]
            elif isinstance(block, Table):
                if block.collapsed and block.summary:
                    out += [md_inline(block.summary, block_start=True), ""]
                out += [*_md_table(block), ""]
            elif isinstance(block, Figure):
                file = f"{block.name}.png"
                files[file] = block.png
                caption = md_inline(block.caption)
                out += [f"![{caption}]({file})", "", f"*{caption}*", ""]
    return "\n".join(out).rstrip() + "\n", files


# --- HTML ----------------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.5 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;background:#fff;margin:0}
main{max-width:1200px;margin:0 auto;padding:24px 28px 48px;box-sizing:border-box}
p,li,figcaption{max-width:1000px}
h1{font-size:1.7em;margin:0 0 .6em;border-bottom:1px solid #d1d9e0;padding-bottom:.3em}
h2{font-size:1.3em;margin:1.6em 0 .5em;border-bottom:1px solid #d1d9e0;padding-bottom:.25em}
h3{font-size:1.1em;margin:1.3em 0 .4em}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:13px;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #d1d9e0;padding:4px 9px;vertical-align:top;text-align:left}
th{background:#f6f8fa;font-weight:600}
td.r,th.r{text-align:right;font-variant-numeric:tabular-nums}td.r{white-space:nowrap}
table.header td:first-child{width:11em;font-weight:600;background:#f6f8fa}
tr:nth-child(even) td{background:#fbfcfd}
ul{padding-left:1.4em}li{margin:.25em 0}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f2f4f7;
padding:1px 4px;border-radius:4px}
figure{margin:.6em 0 1.4em}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption,p.note{color:#59636e;font-size:13px}
details summary{cursor:pointer;color:#0969da;margin:.3em 0}
""" + "".join(f"tr.{verdict_class(v)} td:first-child{{color:{c};font-weight:600}}\n"
              for v, c in VERDICT_COLOURS.items())


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_rich(text: Rich) -> str:
    if isinstance(text, str):
        return _esc(text)
    tags = {"b": "strong", "code": "code"}
    return "".join(f"<{tags[s]}>{_esc(c)}</{tags[s]}>" if s in tags else _esc(c) for s, c in text)


def _html_cell(cell: Cell) -> str:
    if isinstance(cell, Link) and cell.safe:
        return f'<a href="{_esc(cell.href)}">{_esc(cell.text)}</a>'
    return _esc(cell)


def _html_table(table: Table, cls: str = "", *, head_row: bool = True) -> str:
    align = table.align or ["l"] * len(table.columns)
    klass = [' class="r"' if a == "r" else "" for a in align]
    head = "".join(f"<th{k}>{_esc(c)}</th>" for k, c in zip(klass, table.columns, strict=False))
    thead = f"<thead><tr>{head}</tr></thead>" if head_row else ""
    rows = table.row_classes or [""] * len(table.rows)
    body = "\n".join((f'<tr class="{_esc(rc)}">' if rc else "<tr>")
                     + "".join(f"<td{k}>{_html_cell(c)}</td>" for k, c in zip(klass, row, strict=False))
                     + "</tr>" for row, rc in zip(table.rows, rows, strict=False))
    attr = f' class="{cls}"' if cls else ""
    text = f"<table{attr}>{thead}\n<tbody>\n{body}\n</tbody></table>"
    if table.collapsed:
        text = f"<details><summary>{_esc(table.summary or 'show table')}</summary>\n{text}\n</details>"
    return text


def render_html(report: ReportData) -> str:
    """The report as one self-contained HTML file (inline CSS and images, no script)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Mailed or opened from disk, the file must never fetch or run anything.
        ('<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
         'style-src \'unsafe-inline\'">'),
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(report.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body><main>",
        f"<h1>{_esc(report.title)}</h1>",
        _html_table(Table(["Field", "Value"], [[k, v] for k, v in report.header]), "header", head_row=False),
    ]
    for section in report.sections:
        level = min(max(section.level, 2), 6)
        out.append(f"<h{level}>{_esc(section.title)}</h{level}>")
        for block in section.blocks:
            if isinstance(block, Paragraph):
                klass = ' class="note"' if block.note else ""
                out.append(f"<p{klass}>{_html_rich(block.text)}</p>")
            elif isinstance(block, Bullets):
                out.append("<ul>" + "".join(f"<li>{_html_rich(i)}</li>" for i in block.items) + "</ul>")
            elif isinstance(block, Table):
                out.append(_html_table(block))
            elif isinstance(block, Figure):
                data = base64.b64encode(block.png).decode("ascii")
                out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(block.caption)}">'
                           f"<figcaption>{_esc(block.caption)}</figcaption></figure>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"
