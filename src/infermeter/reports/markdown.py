"""``summary.md``: the headline tables and links to the chart PNGs, for a blog post or PR."""

from __future__ import annotations

from infermeter.errors import safe_text
from infermeter.reports.charts import Chart
from infermeter.reports.tables import SUMMARY_METRICS, Table


def md_text(text: object) -> str:
    """One line of Markdown table text: control characters (ESC, BEL, bidi overrides) made ``?`` as on
    the terminal (errors.safe_text), and pipes, backslashes, HTML and newlines made inert."""
    s = safe_text(text).replace("\\", "\\\\").replace("|", "\\|")
    return s.replace("<", "&lt;").replace(">", "&gt;").replace("`", "\\`")


def md_table(t: Table) -> str:
    lines = ["| " + " | ".join(md_text(c) for c in t.columns) + " |",
             "|" + "|".join("---:" if i and kind == "num" else "---"
                            for i, (_, kind) in enumerate(t.rows[0] if t.rows else [("", "")] * len(t.columns)))
             + "|"]
    for row in t.rows:
        lines.append("| " + " | ".join(md_text(text) or " " for text, _ in row) + " |")
    return "\n".join(lines)


def render_markdown(*, title: str, intro: list[str], warnings: list[str], charts: list[Chart], targets: Table,
                    comparisons: list[Table]) -> str:
    out = [f"# {md_text(title)}", ""]
    out += [md_text(line) + "  " for line in intro]
    out.append("")
    for w in warnings:
        out += [f"> **Note:** {md_text(w)}", ""]
    out += ["## Targets", "", md_table(targets), ""]
    if charts:
        out += ["## Charts", ""]
        for c in charts:
            out += [f"![{md_text(c.title)}]({c.id}.png)", "", f"*{md_text(c.caption)}*", ""]
    shown = [t for t in comparisons if t.metric in SUMMARY_METRICS]
    if shown:
        out += ["## Headline numbers", "",
                "Means across repeats (± 95 % CI where a cell ran more than once); ratios compare each target "
                "with the first; no better side is named where the cells did unequal work. The HTML report has "
                "every metric and every cell.", ""]
        for t in shown:
            out += [f"### {md_text(t.title)}", "", f"*{md_text(t.note)}*" if t.note else "", "", md_table(t), ""]
    return "\n".join(out).rstrip() + "\n"
