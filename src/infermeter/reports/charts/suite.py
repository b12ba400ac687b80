"""Every chart a report's data supports, in report order (``build_charts``)."""

from __future__ import annotations

from typing import Any

from infermeter.reports.charts.base import Chart, int_label, palette, pyplot, slug, tokens_label, workload_desc
from infermeter.reports.charts.distributions import distributions
from infermeter.reports.charts.lines import Style, line_chart, rate_styles
from infermeter.reports.charts.overview import errors, memory, pareto
from infermeter.reports.charts.timelines import timeline
from infermeter.reports.data import LOAD_LABELS, Cell, points_of, single_prompt_workloads, targets_of
from infermeter.reports.samples import Focus


def build_charts(cells: list[Cell], *, focus: list[Focus] | None = None) -> list[Chart]:
    """Every chart the data supports, in report order; ``focus``: the loads and cells shown closely
    (distributions and timelines; reports/samples.focus_of)."""
    plt = pyplot()
    pal = palette([c.target for c in cells])
    points = points_of(cells)
    charts: list[Chart] = []
    used: set[str] = set()

    def cid(base: str) -> str:
        s, n = slug(base), 1
        while s in used:
            n += 1
            s = f"{slug(base)}-{n}"
        used.add(s)
        return s

    def add(ch: Chart | None) -> None:
        if ch is not None:
            charts.append(ch)

    singles = single_prompt_workloads(cells)
    workloads: list[str] = []
    for c in cells:
        if c.workload not in workloads:
            workloads.append(c.workload)
    repeats_note = "Error bars: 95 % confidence interval of the mean across repeats (where a cell ran more than once)."

    # -------- burst / concurrency sweeps, one set of charts per workload
    for w in workloads:
        if w in singles:
            continue
        for mode in ("burst", "concurrency"):
            pts = [p for p in points if p.workload == w and p.load_mode == mode]
            if len({p.load_value for p in pts}) < 2:
                continue
            desc = workload_desc(cells, w)
            xl = LOAD_LABELS[mode]
            x_of = lambda p: p.load_value  # noqa: E731
            xf = int_label
            base = next((t for t in targets_of(cells) if any(p.target == t for p in pts)), None)
            add(line_chart(plt, pal, cid(f"throughput-{w}-{mode}"), f"Token throughput vs {mode} — {desc}",
                            f"Output tokens per second and input + output tokens per second, against the number of "
                            f"{xl.split(' (')[0]}. Higher is better. {repeats_note}",
                            pts, [("output throughput", [Style("output_throughput")]),
                                  ("total token throughput", [Style("total_token_throughput")])], xl, x_of, xf, gaps_vs=base))
            add(line_chart(plt, pal, cid(f"ttft-{w}-{mode}"), f"Time to first token vs {mode} — {desc}",
                            f"Mean and 99th-percentile time to first token. Lower is better. A p99 its cell's samples cannot "
                            f"support (fewer than 100 requests) is not plotted. {repeats_note}",
                            pts, [("mean TTFT", [Style("mean_ttft_ms")]), ("p99 TTFT", [Style("p99_ttft_ms")])],
                            xl, x_of, xf, gaps_vs=base))
            add(line_chart(plt, pal, cid(f"tpot-itl-{w}-{mode}"), f"Per-token latency vs {mode} — {desc}",
                            "Mean time per output token (after the first) and mean inter-token latency "
                            f"(gap between streamed chunks). Lower is better. {repeats_note}",
                            pts, [("mean TPOT", [Style("mean_tpot_ms")]), ("mean ITL", [Style("mean_itl_ms")])],
                            xl, x_of, xf))

    # -------- single prompts of growing length
    spts = [p for p in points if p.workload in singles and p.input_len]
    if len({p.input_len for p in spts}) >= 2:
        add(line_chart(plt, pal, cid("single-prompt-length"), "Single prompts: latency and throughput vs prompt length",
                        "One request at a time (burst 1). Left: mean time to first token (prefill time); right: output "
                        f"tokens per second of that single request. {repeats_note}",
                        spts, [("mean TTFT", [Style("mean_ttft_ms")]),
                               ("output throughput", [Style("output_throughput")])],
                        "prompt length (input tokens; k = 1024)", lambda p: float(p.input_len) if p.input_len else None,
                        tokens_label))

    # -------- fixed request rates
    for w in workloads:
        pts = [p for p in points if p.workload == w and p.load_mode == "rate"]
        if len({p.load_value for p in pts}) < 2:
            continue

        def ideal(ax: Any, i: int, xs: list[float]) -> None:
            if i == 0 and xs and min(xs) > 0:
                lo, hi = min(xs), max(xs)
                line = [lo * (hi / lo) ** (k / 100) for k in range(101)]  # straight y = x on a log x axis too
                ax.plot(line, line, color="#999999", linestyle=":", linewidth=1.2, zorder=0)
                at = min(hi, ax.get_ylim()[1] * 0.5)
                ax.annotate("offered = achieved", xy=(at, at), xytext=(-6, 6), textcoords="offset points",
                            fontsize=8, color="#777777", ha="right", va="bottom")

        add(line_chart(plt, pal, cid(f"rate-{w}"), f"Fixed request rates — {workload_desc(cells, w)}",
                        "Open-loop load at a fixed offered rate. Left: requests sent per second (dashed: the client's "
                        "achieved arrival rate, hollow markers) and completed per second (solid, filled), each between the first and the last "
                        "of its events, so a short run's final drain does not lower it; the dotted line is offered = "
                        "achieved, and completions falling below it mean the server could not keep up. Middle: share "
                        "of the requests sent that succeeded; right: time to first token, mean (solid) and p99 (dashed).",
                        pts, [("achieved request rate", rate_styles(pts)),
                              ("successful requests", [Style("success_pct")]),
                              ("TTFT — mean, p99", [Style("mean_ttft_ms", "-", "mean (solid, filled)"), Style("p99_ttft_ms", "--", "p99 (dashed, hollow)")])],
                        LOAD_LABELS["rate"], lambda p: p.load_value, int_label, extra=ideal))

    # -------- latency vs throughput, one chart per load mode (never mixed)
    for mode in ("burst", "concurrency", "rate"):
        add(pareto(plt, pal, cid(f"pareto-{mode}"), [p for p in points if p.workload not in singles], mode))

    # -------- GPU memory
    add(memory(plt, pal, cid("gpu-memory"), cells))

    # -------- errors
    add(errors(plt, pal, cid("errors"), cells, points, workloads))

    # -------- one load closely: distributions per target, a timeline per cell
    for f in focus or []:
        where = f"{f.workload}-{f.mode}-{int_label(f.value) if f.value is not None else 'x'}"
        add(distributions(plt, pal, cid(f"distributions-{f.only_cell or where}"), f))
        for target in sorted(f.cells):
            first = min(f.cells[target], key=lambda c: c.repeat)
            add(timeline(plt, pal, cid(f"timeline-{first.cell_id or target + '-' + where}"), first))
    return charts
