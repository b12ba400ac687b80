"""The report's energy and cost charts: output tokens per joule and dollars per million
output tokens against load, one series per target (docs/cost.md).  Drawn only where some
cell has the figure; a cell whose energy or price was n/a is left out of its series."""

from __future__ import annotations

from infermeter.reports.charts.base import Chart, int_label, palette, pyplot, slug, workload_desc
from infermeter.reports.charts.lines import Style, line_chart
from infermeter.reports.data import LOAD_LABELS, Cell, points_of

KEYS = ("output_tokens_per_joule", "usd_per_million_output_tokens")


def efficiency_charts(cells: list[Cell]) -> list[Chart]:
    if not any(c.metrics.get(k) is not None for c in cells for k in KEYS):
        return []
    plt = pyplot()
    pal = palette([c.target for c in cells])
    points = points_of(cells)
    workloads = list(dict.fromkeys(c.workload for c in cells))
    charts: list[Chart] = []
    for w in workloads:
        for mode in ("burst", "concurrency", "rate"):
            pts = [p for p in points if p.workload == w and p.load_mode == mode]
            if len({p.load_value for p in pts}) < 2:
                continue
            chart = line_chart(
                plt, pal, slug(f"efficiency-{w}-{mode}"), f"Energy and cost vs {mode} — {workload_desc(cells, w)}",
                "Left: output tokens per joule of GPU energy over the measured window (higher is better). Right: "
                "dollars per million output tokens at the measured throughput and the stated or dstack price "
                "(lower is better). A cell whose energy or price was n/a is not drawn. Error bars: 95 % confidence "
                "interval of the mean across repeats.",
                pts, [("output tokens per joule", [Style("output_tokens_per_joule")]),
                      ("cost per million output tokens", [Style("usd_per_million_output_tokens")])],
                LOAD_LABELS[mode], lambda p: p.load_value, int_label)
            if chart is not None:
                charts.append(chart)
    return charts
