"""The self-contained HTML report: inline CSS, charts as base64 PNG, no scripts, no network.

Over each chart lies an inline SVG of invisible circles, one per drawn point, each with a
``<title>``: the browser shows a point's values when the pointer rests on it, with no script.
Every text that came from a server, a spec or a result file is escaped (``html.escape``)."""

from __future__ import annotations

import base64
from html import escape

from infermeter.reports.charts import Chart
from infermeter.reports.tables import Table

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1400px;
color:#222;padding:0 1em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin-bottom:.3em}figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.92em;max-width:1100px}
table{border-collapse:collapse;font-size:.86em;margin:.4em 0 1.4em}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f5f5f5;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.better{color:#0a6b2d;font-weight:600}td.worse{color:#a1260d}td.same{color:#777}td.flag{color:#8a5a00}
.note{color:#666;font-size:.9em}.warn{background:#fff7e0;border-left:4px solid #e6a700;padding:.4em .8em}
.scroll{overflow-x:auto}nav a{margin-right:1em}code{background:#f3f3f3;padding:0 .2em}
.chart{position:relative;display:inline-block;max-width:100%}.chart img{display:block}
.chart svg{position:absolute;left:0;top:0;width:100%;height:100%}
.chart circle{fill:#000;fill-opacity:0;stroke:none;pointer-events:all;cursor:crosshair}
.chart circle:hover{fill-opacity:.15;stroke:#222;stroke-width:1}
"""


def _table(t: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in t.columns)
    body = []
    for row in t.rows:
        tds = "".join(f'<td class="{escape(kind)}">{escape(text)}</td>' if kind else f"<td>{escape(text)}</td>"
                      for text, kind in row)
        body.append(f"<tr>{tds}</tr>")
    note = f'<p class="note">{escape(t.note)}</p>' if t.note else ""
    return (f'<h3 id="t-{escape(t.id)}">{escape(t.title)}</h3>{note}<div class="scroll"><table><thead><tr>{head}'
            f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _hover(c: Chart) -> str:
    if not c.hover:
        return ""
    dots = "".join(f'<circle cx="{x:g}" cy="{y:g}" r="6"><title>{escape(text)}</title></circle>'
                   for x, y, text in c.hover)
    return f'<svg viewBox="0 0 {c.width} {c.height}">{dots}</svg>'


def _figure(c: Chart) -> str:
    data = base64.b64encode(c.png).decode("ascii")
    hint = " Rest the pointer on a point for its values." if c.hover else ""
    return (f'<figure id="c-{escape(c.id)}"><div class="chart"><img src="data:image/png;base64,{data}" '
            f'width="{c.width}" height="{c.height}" alt="{escape(c.title)}">{_hover(c)}</div><figcaption>'
            f"<b>{escape(c.title)}.</b> {escape(c.caption)}{hint} <span class=\"note\">({escape(c.id)}.png, "
            f"{escape(c.id)}.svg)</span></figcaption></figure>")


def render_html(*, title: str, intro: list[str], warnings: list[str], charts: list[Chart], targets: Table,
                comparisons: list[Table], all_cells: Table, errors: list[tuple[str, list[str]]],
                cell_warnings: list[tuple[str, list[str]]], baseline: list[Table] | None = None,
                baseline_lines: list[str] | None = None) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{escape(title)}</h1>"]
    parts += [f'<p class="note">{escape(line)}</p>' for line in intro]
    parts.append('<nav><a href="#charts">Charts</a><a href="#comparisons">Side by side</a>'
                 '<a href="#cells">Every cell</a><a href="#problems">Errors and warnings</a></nav>')
    parts += [f'<p class="warn">{escape(w)}</p>' for w in warnings]
    parts.append(_table(targets))
    if baseline:  # the verdicts of 'infermeter compare' against --baseline (reports/compare_report.py)
        parts.append('<h2 id="baseline">Against the baseline</h2>')
        parts += [f'<p class="note">{escape(line)}</p>' for line in baseline_lines or []]
        parts += [_table(t) for t in baseline]
    parts.append('<h2 id="charts">Charts</h2>')
    if not charts:
        parts.append('<p class="note">No chart: the data holds no series of two or more load points.</p>')
    parts += [_figure(c) for c in charts]
    parts.append('<h2 id="comparisons">Side by side</h2>')
    parts.append('<p class="note">Each value is the mean across repeats (± the 95 % confidence interval when a cell '
                 "ran more than once). A ratio column compares each target with the first; no better side is named "
                 "where the compared cells did unequal work.</p>")
    current = None
    for t in comparisons:
        if t.group != current:
            parts.append(f"<h2>{escape(t.group)}</h2>")
            current = t.group
        parts.append(_table(t))
    parts.append('<h2 id="cells">Every cell</h2>')
    parts.append(_table(all_cells))
    parts.append('<h2 id="problems">Errors and warnings</h2>')
    if not errors and not cell_warnings:
        parts.append('<p class="note">No cell recorded errors or warnings.</p>')
    if errors:
        parts.append("<h3>Error messages (first few per cell)</h3><ul>")
        parts += [f"<li><code>{escape(cid)}</code><ul>" + "".join(f"<li>{escape(m)}</li>" for m in msgs)
                  + "</ul></li>" for cid, msgs in errors]
        parts.append("</ul>")
    if cell_warnings:
        parts.append("<h3>Warnings</h3><ul>")
        parts += [f"<li><code>{escape(cid)}</code><ul>" + "".join(f"<li>{escape(m)}</li>" for m in msgs)
                  + "</ul></li>" for cid, msgs in cell_warnings]
        parts.append("</ul>")
    parts.append('<p class="note">Generated by infermeter report.</p></body></html>')
    return "\n".join(parts)
