"""The report's charts (matplotlib, Agg backend, imported only when a chart is drawn).

Every chart is a ``Chart`` holding its PNG bytes.  Each target is one series, in the same
colour and marker in every chart (``palette``: keyed by the sorted target names).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from infermeter.reports.data import LOAD_LABELS, METRICS, Cell, Point, points_of, single_prompt_workloads

DPI = 100
# Okabe-Ito (colour-blind safe), then a few more distinct colours
COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000",
          "#999999", "#882255", "#44AA99", "#117733"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p"]
FLAGGED = ("unequal work", "client-bound")


@dataclass
class Chart:
    id: str  # file name stem, unique in a report
    title: str
    caption: str
    png: bytes
    width: int  # pixels
    height: int


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def palette(targets: list[str]) -> dict[str, tuple[str, str]]:
    """target -> (colour, marker), stable: keyed by the sorted names."""
    return {t: (COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]) for i, t in enumerate(sorted(set(targets)))}


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return s[:60] or "x"


def mpl_text(text: Any) -> str:
    """Text for matplotlib: no mathtext ($...$), one line."""
    return str(text).replace("\n", " ").replace("$", r"\$")


def _compact(v: float, _pos: Any = None) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            x = v / div
            return f"{x:.0f}{suf}" if x == int(x) or a >= 10 * div else f"{x:.1f}{suf}".replace(".0" + suf, suf)
    if a >= 1:
        return f"{v:.0f}" if v == int(v) or a >= 10 else f"{v:.1f}"
    return f"{v:.2g}"


def _int_label(v: float) -> str:
    return f"{int(round(v))}" if abs(v - round(v)) < 1e-9 else f"{v:g}"


def _tokens_label(v: float) -> str:
    return f"{v / 1024:g}k" if v >= 1024 and v % 1024 == 0 else _compact(v)


def _set_x_scale(ax: Any, xs: list[float], *, fmt: Callable[[float], str] | None = None) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    pos = sorted({x for x in xs if x is not None and x > 0})
    if len(pos) >= 3 and pos[-1] / pos[0] >= 16:
        ax.set_xscale("log", base=2)
        ticks = pos
        while len(ticks) > 12:
            ticks = ticks[::2]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: (fmt or _compact)(v)))
        ax.set_xlim(pos[0] / 1.25, pos[-1] * 1.25)
    elif pos:
        if fmt is not None:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: fmt(v)))


def _set_y_scale(ax: Any, ys: list[float], *, zero_ok: bool = True) -> None:
    from matplotlib.ticker import FuncFormatter

    pos = [y for y in ys if y is not None and y > 0]
    if pos and len(pos) == len([y for y in ys if y is not None]) and max(pos) / min(pos) >= 100:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(_compact))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, p: ""))
    else:
        if zero_ok:
            ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(_compact))


def _new_figure(plt: Any, ncols: int, *, panel_w: float = 5.0, h: float = 4.2, nrows: int = 1) -> tuple[Any, list]:
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_w * ncols + 1.6, h * nrows), dpi=DPI,
                             layout="constrained", squeeze=False)
    return fig, [a for row in axes for a in row]


def _finish(plt: Any, fig: Any, chart_id: str, title: str, caption: str, handles: list | None = None,
            labels: list | None = None) -> Chart:
    fig.suptitle(mpl_text(title), fontsize=12, fontweight="bold")
    if handles:
        labels = [mpl_text(x).replace("\n", " ") for x in labels or []]
        fig.legend(handles, labels, loc="outside lower center", frameon=False, fontsize=9,
                   ncols=min(len(labels), 6))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    w, h = (int(round(v)) for v in fig.get_size_inches() * DPI)
    plt.close(fig)
    return Chart(chart_id, title, caption, buf.getvalue(), w, h)


def _style_ax(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(mpl_text(title), fontsize=11)
    ax.set_xlabel(mpl_text(xlabel))
    ax.set_ylabel(mpl_text(ylabel))
    ax.grid(True, which="major", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def _axis_label(key: str) -> str:
    label, unit, _ = METRICS[key]
    return f"{label} ({unit})" if unit else label


def _series(points: list[Point], key: str, x_of: Callable[[Point], float | None]) -> dict[str, list[tuple]]:
    """target -> [(x, mean, ci, flagged)] sorted by x."""
    out: dict[str, list[tuple]] = {}
    for p in points:
        x = x_of(p)
        mean, ci, _n = p.stat(key)
        if x is None or mean is None:
            continue
        out.setdefault(p.target, []).append((x, mean, ci, any(f in p.flags for f in FLAGGED)))
    for v in out.values():
        v.sort(key=lambda t: t[0])
    return out


def _plot_series(ax: Any, series: dict[str, list[tuple]], pal: dict[str, tuple[str, str]], *,
                 linestyle: str = "-", label_suffix: str = "", hollow_flagged: bool = True) -> list[float]:
    ys: list[float] = []
    for target in sorted(series):
        pts = series[target]
        color, marker = pal[target]
        xs = [p[0] for p in pts]
        ms = [p[1] for p in pts]
        errs = [p[2] or 0.0 for p in pts]
        ys.extend(ms)
        ys.extend(m - e for m, e in zip(ms, errs) if e)
        ys.extend(m + e for m, e in zip(ms, errs) if e)
        ax.errorbar(xs, ms, yerr=errs if any(errs) else None, color=color, marker=marker, markersize=5,
                    linestyle=linestyle, linewidth=1.8, capsize=3, elinewidth=1, label=target + label_suffix)
        flagged = [(x, m) for x, m, _c, f in pts if f]
        if hollow_flagged and flagged:
            ax.scatter([f[0] for f in flagged], [f[1] for f in flagged], s=150, facecolors="none",
                       edgecolors="#333333", linewidths=1.2, zorder=5)
    return ys


def _legend_handles(targets: list[str], pal: dict[str, tuple[str, str]], *, flagged: bool = False,
                    styles: list[tuple[str, str]] | None = None) -> tuple[list, list]:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=pal[t][0], marker=pal[t][1], linewidth=1.8) for t in sorted(targets)]
    labels = sorted(targets)
    for ls, text in styles or []:
        handles.append(Line2D([], [], color="#555555", linestyle=ls, linewidth=1.5))
        labels.append(text)
    if flagged:
        handles.append(Line2D([], [], linestyle="", marker="o", markersize=11, markerfacecolor="none",
                              markeredgecolor="#333333"))
        labels.append("ringed: unequal work or client-bound")
    return handles, labels


def workload_desc(cells: list[Cell], workload: str) -> str:
    c = next((c for c in cells if c.workload == workload), None)
    if c is None:
        return workload
    bits = [b for b in [c.dataset] if b]
    if c.input_len is not None and c.output_len is not None:
        bits.append(f"{c.input_len:,} → {c.output_len:,} tokens")
    return f"{workload} ({', '.join(bits)})" if bits else workload


def _line_chart(plt: Any, pal: dict, chart_id: str, title: str, caption: str, points: list[Point],
                panels: list[tuple[str, list[tuple[str, str, str]]]], xlabel: str,
                x_of: Callable[[Point], float | None], x_fmt: Callable[[float], str] | None = None,
                extra: Callable[[Any, int, list[float]], None] | None = None) -> Chart | None:
    """panels: (panel title, [(metric key, linestyle, style label)])."""
    fig, axes = _new_figure(plt, len(panels))
    any_flag, xs_all, styles_used = False, [], []
    drawn = 0
    for i, (ax, (ptitle, metrics)) in enumerate(zip(axes, panels)):
        ys: list[float] = []
        for key, ls, style_label in metrics:
            series = _series(points, key, x_of)
            any_flag |= any(f for v in series.values() for *_r, f in v)
            xs_all.extend(x for v in series.values() for x, *_r in v)
            ys.extend(_plot_series(ax, series, pal, linestyle=ls))
            if style_label and series and (ls, style_label) not in styles_used:
                styles_used.append((ls, style_label))
        if ys:
            drawn += 1
        unit = METRICS[metrics[0][0]][1]
        ylabel = f"{ptitle.split(' — ')[0]} ({unit})" if unit else ptitle
        _style_ax(ax, ptitle, xlabel, ylabel)
        _set_x_scale(ax, xs_all, fmt=x_fmt)
        _set_y_scale(ax, ys)
        if extra:
            extra(ax, i, xs_all)
    if not drawn:
        plt.close(fig)
        return None
    targets = sorted({p.target for p in points})
    handles, labels = _legend_handles(targets, pal, flagged=any_flag,
                                      styles=styles_used if len(styles_used) > 1 else None)
    return _finish(plt, fig, chart_id, title, caption, handles, labels)


def build_charts(cells: list[Cell], *, title_prefix: str = "") -> list[Chart]:
    """Every chart the data supports, in report order."""
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
            xf = _int_label
            add(_line_chart(plt, pal, cid(f"throughput-{w}-{mode}"), f"Token throughput vs {mode} — {desc}",
                            f"Output tokens per second and input + output tokens per second, against the number of "
                            f"{xl.split(' (')[0]}. Higher is better. {repeats_note}",
                            pts, [("output throughput", [("output_throughput", "-", "")]),
                                  ("total token throughput", [("total_token_throughput", "-", "")])], xl, x_of, xf))
            add(_line_chart(plt, pal, cid(f"ttft-{w}-{mode}"), f"Time to first token vs {mode} — {desc}",
                            f"Mean and 99th-percentile time to first token. Lower is better. {repeats_note}",
                            pts, [("mean TTFT", [("mean_ttft_ms", "-", "")]), ("p99 TTFT", [("p99_ttft_ms", "-", "")])],
                            xl, x_of, xf))
            add(_line_chart(plt, pal, cid(f"tpot-itl-{w}-{mode}"), f"Per-token latency vs {mode} — {desc}",
                            "Mean time per output token (after the first) and mean inter-token latency "
                            f"(gap between streamed chunks). Lower is better. {repeats_note}",
                            pts, [("mean TPOT", [("mean_tpot_ms", "-", "")]), ("mean ITL", [("mean_itl_ms", "-", "")])],
                            xl, x_of, xf))

    # -------- single prompts of growing length
    spts = [p for p in points if p.workload in singles and p.input_len]
    if len({p.input_len for p in spts}) >= 2:
        add(_line_chart(plt, pal, cid("single-prompt-length"), "Single prompts: latency and throughput vs prompt length",
                        "One request at a time (burst 1). Left: mean time to first token (prefill time); right: output "
                        f"tokens per second of that single request. {repeats_note}",
                        spts, [("mean TTFT", [("mean_ttft_ms", "-", "")]),
                               ("output throughput", [("output_throughput", "-", "")])],
                        "prompt length (input tokens; k = 1024)", lambda p: float(p.input_len) if p.input_len else None,
                        _tokens_label))

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

        add(_line_chart(plt, pal, cid(f"rate-{w}"), f"Fixed request rates — {workload_desc(cells, w)}",
                        "Open-loop load at a fixed offered rate. Left: requests sent per second (dashed: the client's "
                        "achieved arrival rate) and completed per second (solid), each between the first and the last "
                        "of its events, so a short run's final drain does not lower it; the dotted line is offered = "
                        "achieved, and completions falling below it mean the server could not keep up. Middle: share "
                        "of the requests sent that succeeded; right: time to first token, mean (solid) and p99 (dashed).",
                        pts, [("achieved request rate", _rate_series(pts)),
                              ("successful requests", [("success_pct", "-", "")]),
                              ("TTFT — mean, p99", [("mean_ttft_ms", "-", "mean"), ("p99_ttft_ms", "--", "p99")])],
                        LOAD_LABELS["rate"], lambda p: p.load_value, _int_label, extra=ideal))

    # -------- latency vs throughput, all cells
    add(_pareto(plt, pal, cid("pareto"), points))

    # -------- GPU memory
    add(_memory(plt, pal, cid("gpu-memory"), cells))

    # -------- errors
    add(_errors(plt, pal, cid("errors"), cells, points, workloads))
    return charts


def _pareto_front(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both (higher x, lower y)."""
    front, best_y = [], math.inf
    for x, y in sorted(pts, key=lambda t: (-t[0], t[1])):
        if y < best_y:
            front.append((x, y))
            best_y = y
    return sorted(front)


def _pareto(plt: Any, pal: dict, chart_id: str, points: list[Point]) -> Chart | None:
    panels = [("p99_ttft_ms", "p99 TTFT vs output throughput"), ("mean_tpot_ms", "mean TPOT vs output throughput")]
    data = {k: [(p.target, p.mean("output_throughput"), p.mean(k)) for p in points] for k, _ in panels}
    if sum(1 for t, x, y in data["p99_ttft_ms"] if x and y) < 3:
        return None
    fig, axes = _new_figure(plt, 2)
    for ax, (key, title) in zip(axes, panels):
        xs_all, ys_all = [], []
        for target in sorted({t for t, _, _ in data[key]}):
            pts = [(x, y) for t, x, y in data[key] if t == target and x and y]
            if not pts:
                continue
            color, marker = pal[target]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, marker=marker, s=22, alpha=0.45)
            front = _pareto_front(pts)
            ax.plot([p[0] for p in front], [p[1] for p in front], color=color, marker=marker, linewidth=2,
                    markersize=6, drawstyle="steps-post")
            xs_all += [p[0] for p in pts]
            ys_all += [p[1] for p in pts]
        _style_ax(ax, title, "output throughput (tok/s)", _axis_label(key))
        if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 100:
            from matplotlib.ticker import FuncFormatter
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(_compact))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, p: ""))
        _set_y_scale(ax, ys_all)
    targets = sorted({p.target for p in points})
    handles, labels = _legend_handles(targets, pal)
    from matplotlib.lines import Line2D
    handles.append(Line2D([], [], linestyle="", marker="o", color="#777777", alpha=0.45, markersize=5))
    labels.append("one cell (any workload, load)")
    handles.append(Line2D([], [], color="#555555", linewidth=2, drawstyle="steps-post"))
    labels.append("line: Pareto front")
    return _finish(plt, fig, chart_id, "Latency vs throughput across all cells",
                   "Every cell (all workloads and loads) as one dot; the line joins each target's Pareto-optimal "
                   "cells — those that no other cell of the same target beats on both throughput (right is better) "
                   "and latency (down is better).", handles, labels)


def _memory(plt: Any, pal: dict, chart_id: str, cells: list[Cell]) -> Chart | None:
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
    fig, axes = _new_figure(plt, 1, panel_w=max(4.5, 0.65 * len(bars) * len(targets) + 2), h=4.2)
    ax = axes[0]
    width = 0.8 / len(bars)
    for i, t in enumerate(targets):
        color, _ = pal[t]
        for j, (phase, _label, alpha) in enumerate(bars):
            v = per[t].get(phase)
            if v is None:
                continue
            x = i + (j - (len(bars) - 1) / 2) * width
            ax.bar(x, v / 1024, width * 0.95, color=color, alpha=alpha, edgecolor=color)
            ax.annotate(f"{v / 1024:.1f}", (x, v / 1024), xytext=(0, 2), textcoords="offset points",
                        ha="center", fontsize=8)
    ax.set_xticks(range(len(targets)), [mpl_text(t) for t in targets])
    if sum(len(t) for t in targets) > 8 * len(targets) + 20:  # long names: slant them so they do not collide
        ax.tick_params(axis="x", labelrotation=20)
        for label in ax.get_xticklabels():
            label.set_ha("right")
    _style_ax(ax, "", "target", "GPU memory used (GiB)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.grid(False, axis="x")
    ax.set_ylim(0, max(v for d in per.values() for v in d.values()) / 1024 * 1.15)
    from matplotlib.patches import Patch
    handles = [Patch(color="#555555", alpha=alpha) for _p, _l, alpha in bars]
    return _finish(plt, fig, chart_id, "GPU memory after load and at peak",
                   "Memory used on the GPU(s), summed over GPUs, from telemetry: once a launched server had loaded "
                   "its model, before any request (from the sweep's launch record); at the start of a cell, before "
                   "its traffic (the largest over cells: a server that allocates its cache lazily grows here); and "
                   "the most seen during the runs.",
                   handles, [label for _p, label, _a in bars])


def _errors(plt: Any, pal: dict, chart_id: str, cells: list[Cell], points: list[Point],
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
    fig, axes = _new_figure(plt, ncols, nrows=nrows, h=3.8)
    for ax, (w, mode, pts) in zip(axes, groups):
        series = _series(pts, "error_rate", lambda p: p.load_value)
        ys = _plot_series(ax, series, pal, hollow_flagged=False)
        _style_ax(ax, workload_desc(cells, w), LOAD_LABELS[mode], "failed requests (%)")
        _set_x_scale(ax, [x for v in series.values() for x, *_ in v], fmt=_int_label)
        ax.set_ylim(0, max(max(ys, default=0) * 1.15, 1))
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    targets = sorted({p.target for p in points})
    handles, labels = _legend_handles(targets, pal)
    return _finish(plt, fig, chart_id, "Failed requests",
                   "Share of requests that failed, per workload and load, for every workload where any cell had "
                   "errors. The tables list each cell's error messages.", handles, labels)


def _rate_series(pts: list) -> list[tuple[str, str, str]]:
    """Sent and completed per second; results written before those existed: completed / duration."""
    if any(p.mean("completion_rate") is not None for p in pts):
        return [("completion_rate", "-", "completed"), ("sent_rate", "--", "sent")]
    return [("request_throughput", "-", "completed / duration")]
