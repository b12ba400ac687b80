"""Charts over all cells of a load mode or of the whole report: latency against throughput
(Pareto fronts), GPU memory per target, and failed requests."""

from __future__ import annotations

import math
from typing import Any

from infermeter.reports.charts.base import (Chart, Hover, axis_label, compact, finish, int_label, mpl_text,
                                            new_figure, set_x_scale, set_y_scale, style_ax, target_handles,
                                            workload_desc)
from infermeter.reports.charts.lines import hover_text, plot_series, series
from infermeter.reports.data import LOAD_LABELS, Cell, Point


def _pareto_front(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both (higher x, lower y)."""
    front, best_y = [], math.inf
    for x, y in sorted(pts, key=lambda t: (-t[0], t[1])):
        if y < best_y:
            front.append((x, y))
            best_y = y
    return sorted(front)


def pareto(plt: Any, pal: dict, chart_id: str, points: list[Point], mode: str) -> Chart | None:
    """One load mode's cells (bursts, concurrencies and rates answer different questions and are
    never mixed): p99 TTFT and mean TPOT against output throughput, each target's Pareto front."""
    points = [p for p in points if p.load_mode == mode]
    panels = [("p99_ttft_ms", "p99 TTFT vs output throughput"), ("mean_tpot_ms", "mean TPOT vs output throughput")]
    data = {k: [(p, p.mean("output_throughput"), p.mean(k)) for p in points] for k, _ in panels}
    if sum(1 for _p, x, y in data["mean_tpot_ms"] if x and y) < 3:
        return None
    fig, axes = new_figure(plt, 2)
    hover: Hover = []
    for ax, (key, title) in zip(axes, panels):
        xs_all, ys_all = [], []
        for target in sorted({p.target for p in points}):
            pts = [(x, y, p) for p, x, y in data[key] if p.target == target and x and y]
            if not pts:
                continue
            color, marker = pal[target]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, marker=marker, s=22, alpha=0.45)
            hover.extend((ax, x, y, hover_text(p, key, y, None) + f", {x:,.0f} tok/s") for x, y, p in pts)
            front = _pareto_front([(x, y) for x, y, _p in pts])
            ax.plot([p[0] for p in front], [p[1] for p in front], color=color, marker=marker, linewidth=2,
                    markersize=6, drawstyle="steps-post")
            xs_all += [p[0] for p in pts]
            ys_all += [p[1] for p in pts]
        style_ax(ax, title, "output throughput (tok/s)", axis_label(key))
        if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 100:
            from matplotlib.ticker import FuncFormatter
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(compact))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, p: ""))
        set_y_scale(ax, ys_all)
        if not xs_all:
            ax.text(0.5, 0.5, "no cell with this metric", transform=ax.transAxes, ha="center", color="#777777")
    handles, labels = target_handles(sorted({p.target for p in points}), pal)
    from matplotlib.lines import Line2D
    handles.append(Line2D([], [], linestyle="", marker="o", color="#777777", alpha=0.45, markersize=5))
    labels.append(f"one {mode} cell (any workload)")
    handles.append(Line2D([], [], color="#555555", linewidth=2, drawstyle="steps-post"))
    labels.append("line: Pareto front")
    what = {"burst": "burst", "concurrency": "closed-loop concurrency", "rate": "fixed-rate"}.get(mode, mode)
    return finish(plt, fig, chart_id, f"Latency vs throughput — {what} cells",
                  f"Every {what} cell as one dot (other load modes have their own chart: their throughputs "
                  "answer different questions); the line joins each target's Pareto-optimal cells — those that "
                  "no other cell of the same target beats on both throughput (right is better) and latency "
                  "(down is better). A p99 the cell's samples cannot support is left out.", handles, labels, hover)


def memory(plt: Any, pal: dict, chart_id: str, cells: list[Cell]) -> Chart | None:
    per: dict[str, dict[str, float]] = {}
    for c in cells:
        for phase, v in c.memory_mib.items():
            d = per.setdefault(c.target, {})
            d[phase] = max(d.get(phase, 0.0), v)
    if not per:
        return None
    targets = sorted(per)
    bars = [(phase, label, alpha) for phase, label, alpha in
            (("loaded", "after load", 0.3), ("ready", "before a cell's traffic (largest)", 0.6), ("peak", "peak", 1.0))
            if any(phase in d for d in per.values())]
    fig, axes = new_figure(plt, 1, panel_w=max(4.5, 0.65 * len(bars) * len(targets) + 2), h=4.2)
    ax = axes[0]
    width = 0.8 / len(bars)
    hover: Hover = []
    for i, t in enumerate(targets):
        color, _ = pal[t]
        for j, (phase, label, alpha) in enumerate(bars):
            v = per[t].get(phase)
            if v is None:
                continue
            x = i + (j - (len(bars) - 1) / 2) * width
            ax.bar(x, v / 1024, width * 0.95, color=color, alpha=alpha, edgecolor=color)
            hover.append((ax, x, v / 1024, f"{t}: {label} {v / 1024:.1f} GiB"))
            ax.annotate(f"{v / 1024:.1f}", (x, v / 1024), xytext=(0, 2), textcoords="offset points",
                        ha="center", fontsize=8)
    ax.set_xticks(range(len(targets)), [mpl_text(t) for t in targets])
    if sum(len(t) for t in targets) > 8 * len(targets) + 20:  # long names: slant them so they do not collide
        ax.tick_params(axis="x", labelrotation=20)
        for label in ax.get_xticklabels():
            label.set_ha("right")
    style_ax(ax, "", "target", "GPU memory used (GiB)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.grid(False, axis="x")
    ax.set_ylim(0, max(v for d in per.values() for v in d.values()) / 1024 * 1.15)
    from matplotlib.patches import Patch
    handles = [Patch(color="#555555", alpha=alpha) for _p, _l, alpha in bars]
    return finish(plt, fig, chart_id, "GPU memory after load and at peak",
                   "Memory used on the GPU(s), summed over GPUs, from telemetry: once a launched server had loaded "
                   "its model, before any request (from the sweep's launch record); at the start of a cell, before "
                   "its traffic (the largest over cells: a server that allocates its cache lazily grows here); and "
                   "the most seen during the runs.",
                   handles, [label for _p, label, _a in bars], hover)


def errors(plt: Any, pal: dict, chart_id: str, cells: list[Cell], points: list[Point],
            workloads: list[str]) -> Chart | None:
    groups = []
    for w in workloads:
        for mode in ("burst", "concurrency", "rate"):
            pts = [p for p in points if p.workload == w and p.load_mode == mode]
            if any((p.mean("failed") or 0) > 0 for p in pts):
                groups.append((w, mode, pts))
    if not groups:
        return None
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = new_figure(plt, ncols, nrows=nrows, h=3.8)
    hover: Hover = []
    for ax, (w, mode, pts) in zip(axes, groups):
        data = series(pts, "error_rate", lambda p: p.load_value)
        ys = plot_series(ax, data, pal, "error_rate", hover=hover)
        style_ax(ax, workload_desc(cells, w), LOAD_LABELS[mode], "failed requests (%)")
        set_x_scale(ax, [x for v in data.values() for x, *_ in v], fmt=int_label)
        ax.set_ylim(0, max(max(ys, default=0) * 1.15, 1))
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    targets = sorted({p.target for p in points})
    handles, labels = target_handles(targets, pal)
    return finish(plt, fig, chart_id, "Failed requests",
                   "Share of requests that failed, per workload and load, for every workload where any cell had "
                   "errors. The tables list each cell's error messages.", handles, labels, hover)
