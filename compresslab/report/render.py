"""Render one report document to Markdown and to self-contained HTML.

The report is built once as a list of plain blocks (``sections.py`` decides *what* to say) and
rendered twice here (*how* it looks), so ``report.md`` and ``report.html`` can never disagree on
a number. Every piece of text from the manifest is escaped on the way out: model ids, module
names and notes are user-controlled strings, and a ``<`` in one must not break the page.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Heading:
    """A section title; ``level`` 1 is the page title."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    """A paragraph of plain text; ``kind`` "warn" renders as a highlighted banner."""

    text: str
    kind: str = "text"


@dataclass(frozen=True)
class Bullets:
    """An unordered list of plain-text items."""

    items: Sequence[str]


@dataclass(frozen=True)
class Table:
    """A table of already formatted cells (numbers are formatted in ``sections.py``)."""

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""


@dataclass(frozen=True)
class Image:
    """A plot, by its file name under ``plots/``; HTML embeds the bytes, Markdown links."""

    name: str
    alt: str


@dataclass(frozen=True)
class Code:
    """Preformatted text (commands, the resolved config); collapsible in HTML when long."""

    text: str
    summary: str = ""


Block = Heading | Para | Bullets | Table | Image | Code


@dataclass
class Document:
    """An ordered list of blocks plus the page title."""

    title: str
    blocks: list[Block] = field(default_factory=list)


# ----------------------------------------------------------------------------- markdown


def _md_cell(text: str) -> str:
    """Escape a table cell: a raw ``|`` or newline would split the row."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def _md_text(text: str) -> str:
    """Neutralise HTML in prose: Markdown viewers render raw tags, which we never want. Only a ``<``
    that could open a tag is backslash-escaped (``\\<b>`` shows ``<b>``); ``> 1x`` and ``< 64`` stay
    plain characters, readable in the .md file itself; a leading ``>`` is escaped (a quote block)."""
    text = _TAG_START.sub(r"\\<", text)
    return "\\" + text if text.startswith(">") else text


def _md_table(t: Table) -> list[str]:
    out = []
    if t.caption:
        out += [_md_text(t.caption), ""]
    out.append("| " + " | ".join(_md_text(_md_cell(h)) for h in t.headers) + " |")
    out.append("|" + "|".join("---" for _ in t.headers) + "|")
    for row in t.rows:
        out.append("| " + " | ".join(_md_text(_md_cell(c)) for c in row) + " |")
    return out


def to_markdown(doc: Document, plot_dir: str = "plots") -> str:
    """Render ``doc`` as GitHub-flavoured Markdown; images are relative links into ``plot_dir``."""
    lines: list[str] = [f"# {_md_text(doc.title)}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            lines.append("#" * max(1, min(b.level, 6)) + " " + _md_text(b.text))
        elif isinstance(b, Para):
            text = _md_text(b.text)
            lines.append(f"> **{text}**" if b.kind == "warn" else text)
        elif isinstance(b, Bullets):
            lines += [f"- {_md_text(i)}" for i in b.items]
        elif isinstance(b, Table):
            lines += _md_table(b)
        elif isinstance(b, Image):
            lines.append(f"![{_md_cell(b.alt)}]({plot_dir}/{b.name})")
        elif isinstance(b, Code):
            if b.summary:
                lines += [_md_text(b.summary), ""]
            fence = "````" if "```" in b.text else "```"
            lines += [fence, b.text, fence]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}
h2{margin-top:1.8em;border-bottom:1px solid #ccc;padding-bottom:.15em}
.table{overflow-x:auto;max-width:100%;margin:.6em 0}
table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}
td.t{text-align:left}
.caption{color:#555;font-size:.9em;margin:.8em 0 .2em}
p,li{overflow-wrap:break-word}
.warn{background:#fff4ce;border-left:4px solid #e0a800;padding:.5em .8em}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em}
code{font-family:ui-monospace,Menlo,Consolas,monospace}
"""

_CODE_COLLAPSE_LINES = 15  # longer code blocks (the resolved config) start collapsed


# a cell that reads as a figure (91.06, -1.49 ⚠, 2.41x, 1,234, —) is right-aligned, text left-aligned
_FIGURE = re.compile(r"^(—|[-+]?[\d.,]+(e[-+]?\d+)?\s*(x|%|MB|ms|s|k|M)?( ⚠)?( \(busy\))?)$")


def _html_table(t: Table) -> str:
    e = html.escape
    # the caption sits outside the table so it wraps at the page width, and the wrapper scrolls a
    # table too wide for the page instead of widening the page
    parts = [f'<p class="caption">{e(t.caption)}</p>'] if t.caption else []
    parts.append('<div class="table"><table>')
    parts.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in t.headers) + "</tr>")
    for row in t.rows:
        parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" if _FIGURE.match(c) else f'<td class="t">{e(c)}</td>'
                                      for c in row) + "</tr>")
    parts.append("</table></div>")
    return "\n".join(parts)


def to_html(doc: Document, images: Mapping[str, bytes]) -> str:
    """Render ``doc`` as one HTML file with every PNG embedded, so it survives being mailed.

    ``images`` maps a plot's file name to its PNG bytes; an :class:`Image` block whose name is
    absent renders as a short note rather than a broken link.
    """
    e = html.escape
    body: list[str] = [f"<h1>{e(doc.title)}</h1>"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            lvl = max(2, min(b.level, 6))
            body.append(f"<h{lvl}>{e(b.text)}</h{lvl}>")
        elif isinstance(b, Para):
            cls = ' class="warn"' if b.kind == "warn" else ""
            body.append(f"<p{cls}>{e(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            body.append(_html_table(b))
        elif isinstance(b, Image):
            png = images.get(b.name)
            if png is None:
                body.append(f"<p><em>Plot {e(b.name)} is not available.</em></p>")
            else:
                data = base64.b64encode(png).decode("ascii")
                body.append(f'<img alt="{e(b.alt)}" src="data:image/png;base64,{data}">')
        elif isinstance(b, Code):
            pre = f"<pre><code>{e(b.text)}</code></pre>"
            if b.text.count("\n") >= _CODE_COLLAPSE_LINES:
                summary = e(b.summary or "Show")
                body.append(f"<details><summary>{summary}</summary>{pre}</details>")
            else:
                if b.summary:
                    body.append(f"<p>{e(b.summary)}</p>")
                body.append(pre)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{e(doc.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
