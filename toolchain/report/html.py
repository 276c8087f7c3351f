"""report.html: report.md and the plots in one self-contained page (no scripts, no external assets; the
images are embedded as base64 PNG), for a browser, an e-mail or a CI artifact. Standard library only.

The Markdown is cwtool's own (report/markdown.py): headings, paragraphs, bullet lists, pipe tables,
**bold** and `code`. That subset is converted here; every text is HTML-escaped first.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

__all__ = ["render_html", "no_raw_html", "code_span", "shown_as_written", "md_text"]

# Where a renderer reads markup from text: a '<' opening raw HTML or an autolink (a tag, "<http:...>", "<1@x.com>"), and
# the "](" of a link or an image ("![x](http://...)" loads a remote image). "<=" and "< 0.5" are text.
_MARKUP = re.compile(r"(\\*)(<(?=[^\s=])|\](?=\())")


def no_raw_html(markdown: str) -> str:
    """``markdown`` with every '<' that would open raw HTML or an autolink, and every "](" of a link or an image, escaped:
    a class name from a data file ("<script>", "<img src=...>", "![x](http://...)") is text in any Markdown renderer,
    not markup. The backslashes already before it are doubled (k become 2k + 1), so a name ending in '\\' cannot cancel
    the escape. Inside code spans too: a name with backticks of its own can make a renderer and any splitter of ours
    disagree on where a span ends; in a true code span the escape is only shown (``shown_as_written``)."""
    return _MARKUP.sub(lambda m: "\\" * (2 * len(m.group(1)) + 1) + m.group(2), markdown)


# Markdown's other inline markup in a name: emphasis, code, a link's '[', strike-through, an entity ('&amp;'), a table's '|';
# and a backslash, except in a run before what no_raw_html escapes (it doubles that run itself).
_NAME_MARKUP = re.compile(r"\\(?!\\*(?:<(?=[^\s=])|\](?=\()))|[`*_\[~&|]|\](?!\()")


def md_text(text: str) -> str:
    """``text`` from a file (a class name) inside a line of a no_raw_html document, shown as written by any Markdown
    renderer and by render_html: '**bold**' was shown bold, '&amp;' as '&', a trailing backslash vanished."""
    return _NAME_MARKUP.sub(lambda m: "\\" + m.group(0), text)


def code_span(text: str) -> str:
    """``text`` as a Markdown code span: fenced by more backticks than it holds, so a backtick of its own cannot end it."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def shown_as_written(text: str) -> bool:
    """Whether ``text`` reads the same inside a code span of a no_raw_html document: no_raw_html's escapes ('<', '](',
    backslashes before them) show there as typed."""
    return _MARKUP.search(text) is None


STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: .3em .6em; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #666; font-size: 13px; }
td, td code { overflow-wrap: anywhere; }
@media print {
  body { max-width: none; margin: 0; font-size: 11px; }
  table { font-size: 9px; }
  figure, tr { break-inside: avoid; }
  h1, h2 { break-after: avoid; }
}
"""


# Left to right, as CommonMark reads inline text: a backslash before ASCII punctuation makes it text; a run of N backticks
# opens a code span that the next run of exactly N closes (its content is literal); everything else is text.
_INLINE = re.compile(r"\\([!-/:-@\[-`{-~])|(?<!`)(`+)(?!`)(.*?)(?<!`)\2(?!`)")


def _inline(text: str) -> str:
    """Escape, then `code` and **bold** (code first: its content is not parsed further). A backslash escape is text: a
    name's '\\*\\*' is not bold, and no_raw_html's '\\<' shows '<'."""
    kept: list[str] = []  # the escaped characters and code spans, out of the way of **bold**

    def keep(m: re.Match) -> str:
        if m.group(1) is not None:
            kept.append(html.escape(m.group(1)))
        else:
            code = m.group(3)
            if code.startswith(" ") and code.endswith(" ") and code.strip():
                code = code[1:-1]  # code_span's padding around a backtick of the text
            kept.append(f"<code>{html.escape(_MARKUP.sub(lambda e: chr(92) * (len(e.group(1)) // 2) + e.group(2), code))}</code>")  # as typed
        return f"\x00{len(kept) - 1}\x01"

    text = html.escape(_INLINE.sub(keep, text))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\x00(\d+)\x01", lambda m: kept[int(m.group(1))], text)


def _cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))  # a `\|` inside a cell is text
    return [c.strip().replace("\\|", "|") for c in cells]


def _table(rows: list[str]) -> str:
    align = ["num" if c.endswith(":") and not c.startswith(":") else "" for c in _cells(rows[1])] if len(rows) > 1 else []
    head = "".join(f"<th>{_inline(c)}</th>" for c in _cells(rows[0]))
    body = []
    for row in rows[2:]:
        cells = _cells(row)
        body.append("<tr>" + "".join(f"<td class=\"{align[i] if i < len(align) else ''}\">{_inline(c)}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _markdown(text: str) -> str:
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            blocks.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            blocks.append(_table(lines[i:j]))
            i = j
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            blocks.append(f"<ul>{''.join(items)}</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "- ")):
                para.append(_inline(lines[i]))
                i += 1
            blocks.append(f"<p>{' '.join(para)}</p>")
    return "\n".join(blocks)


def _figure(path: Path, caption: str) -> str:
    """The plot embedded, named by its file in its alt text and described by its caption (a screen reader read the
    caption twice); what it draws is in the report's tables and lines above it."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = f"plot {Path(path).name}: its numbers are in the tables above"
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def render_html(markdown: str, images: list[tuple[Path, str]], title: str) -> str:
    """One page: the report's Markdown as HTML, then every (PNG path, caption) embedded."""
    figures = "\n".join(_figure(p, c) for p, c in images)
    plots = f"\n<h2>Plots</h2>\n{figures}" if figures else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{_markdown(markdown)}{plots}\n</body></html>\n")
