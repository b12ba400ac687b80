"""One cell over time: requests in flight, output tokens per second and each request's TTFT at its
start (from the per-request records), the server's KV-cache usage and queue (its ``/metrics``), and
GPU memory and power (telemetry), on the records' clock with the telemetry phases shaded.

A panel whose data the cell lacks is left out, and the caption says which and why."""

from __future__ import annotations

from typing import Any

import numpy as np

from infermeter.core.records import RequestRecord
from infermeter.reports.charts.base import Chart, Hover, compact, finish, new_figure, style_ax
from infermeter.reports.data import Cell, fmt_load
from infermeter.reports.samples import read_records, read_telemetry

PHASE_COLORS = {"idle": "#eeeeee", "loading": "#fde2c8", "ready": "#e3f1dc", "warmup": "#fff3b0",
                "load": "#ffffff", "cooldown": "#dde8f5"}
MAX_HOVER = 120  # hover points per panel: enough to read, not a megabyte of page


def _thin(items: list, k: int = MAX_HOVER) -> list:
    step = max(1, len(items) // k)
    return items[::step]


def in_flight(records: list[RequestRecord]) -> tuple[list[float], list[int]]:
    """A step series: the number of requests sent and not yet answered, after each event."""
    events = sorted([(r.sent, 1) for r in records if r.sent is not None]
                    + [(r.end, -1) for r in records if r.sent is not None and r.end is not None])
    ts, ns, n = [], [], 0
    for t, d in events:
        n += d
        ts.append(t)
        ns.append(n)
    return ts, ns


def tokens_per_second(records: list[RequestRecord]) -> tuple[list[float], list[float], float]:
    """Output tokens per second in bins of a hundredth of the run (at least 10 ms): each streamed
    event carries its request's tokens divided evenly over its events.  (left edges plus the last
    right edge, values with the last repeated: a ``where="post"`` step draws the last bin too)"""

    times, weights = [], []
    for r in records:
        if r.token_times:
            w = r.output_tokens / len(r.token_times)
            times += r.token_times
            weights += [w] * len(r.token_times)
    if not times:
        return [], [], 0.0
    lo, hi = min(times), max(times)
    width = max((hi - lo) / 100, 0.01)
    n = max(1, int(np.ceil((hi - lo) / width)))
    edges = lo + width * np.arange(n + 2 if lo + n * width <= hi else n + 1)  # the last event inside
    counts, edges = np.histogram(times, bins=edges, weights=weights)
    values = [float(c) / width for c in counts]
    return [float(e) for e in edges], values + values[-1:], width


def _server(samples: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(s["t_rel"], float(s[key])) for s in samples if s.get("kind") == "server"
           and isinstance(s.get(key), (int, float)) and isinstance(s.get("t_rel"), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


GAP_INTERVALS = 2.5  # a pause longer than this many sampling intervals (and GAP_MIN_S) is a gap, as for energy
GAP_MIN_S = 1.0


def broken(xs: list[float], ys: list[float]) -> tuple[list[float], list[float], list[tuple[float, float]]]:
    """The series with a NaN where samples pause longer than a gap (so no line is drawn across a time
    nothing was sampled: a flat line there would be a value nobody saw), and the gaps."""
    if len(xs) < 2:
        return list(xs), list(ys), []
    diffs = np.diff(np.asarray(xs, dtype=float))
    positive = diffs[diffs > 1e-3]
    interval = float(positive.min()) if len(positive) else GAP_MIN_S  # the sampling step (extra samples are closer)
    limit = max(GAP_INTERVALS * interval, GAP_MIN_S)
    bx, by, gaps = [xs[0]], [ys[0]], []
    for (x0, x1), y in zip(zip(xs, xs[1:]), ys[1:]):
        if x1 - x0 > limit:
            gaps.append((x0, x1))
            bx.append(float("nan"))
            by.append(float("nan"))
        bx.append(x1)
        by.append(y)
    return bx, by, gaps


def _gap_text(what: str, gaps: list[tuple[float, float]]) -> str:
    spans = ", ".join(f"{a:.2f}–{b:.2f} s" for a, b in gaps[:3]) + (" and more" if len(gaps) > 3 else "")
    return f"{what}: no sample {spans} (the line is broken there, not drawn across)"


def _gpus(samples: list[dict[str, Any]], key: str) -> dict[str, tuple[list[float], list[float]]]:
    out: dict[str, tuple[list[float], list[float]]] = {}
    for s in samples:
        if s.get("kind") == "gpu" and isinstance(s.get(key), (int, float)) and isinstance(s.get("t_rel"), (int, float)):
            xs, ys = out.setdefault(f"GPU {s.get('gpu', 0)}", ([], []))
            xs.append(s["t_rel"])
            ys.append(float(s[key]))
    return out


def _phases(ax: Any, spans: list[dict[str, Any]]) -> None:
    for sp in spans:
        a, b = sp.get("start_rel"), sp.get("end_rel")
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b <= a:
            continue
        ax.axvspan(a, b, color=PHASE_COLORS.get(sp.get("name"), "#f4f4f4"), alpha=0.8, zorder=0, linewidth=0)
        ax.axvline(a, color="#bbbbbb", linewidth=0.6, zorder=0)


def timeline(plt: Any, pal: dict, chart_id: str, cell: Cell) -> Chart | None:
    records = read_records(cell)
    if not records:
        return None
    meta, samples = read_telemetry(cell)
    color, marker = pal[cell.target]
    panels: list[tuple[str, str, Any]] = []  # (title, y label, draw(ax, hover))
    absent: list[str] = []
    gapped: list[str] = []  # sampled series with pauses longer than a gap

    ts, ns = in_flight(records)
    panels.append(("requests in flight", "requests", lambda ax, h: (
        ax.step(ts, ns, where="post", color=color, linewidth=1.4),
        h.extend((ax, t, n, f"{t:.2f} s: {n} in flight") for t, n in _thin(list(zip(ts, ns)))))))
    bx, by, width = tokens_per_second(records)
    if bx:
        panels.append(("output tokens per second", "tok/s", lambda ax, h: (
            ax.step(bx, by, where="post", color=color, linewidth=1.4),
            h.extend((ax, x + width / 2, y, f"{x:.2f}–{x + width:.2f} s: {y:,.0f} tok/s")
                     for x, y in _thin(list(zip(bx[:-1], by)))))))
    else:
        absent.append("tokens per second (no streamed events)")
    ttft = [(r.sent, r.ttft * 1000, r.index) for r in records if r.ok and r.sent is not None and r.ttft is not None]
    failed = [r.sent for r in records if not r.ok and r.sent is not None]
    if ttft:
        def draw_ttft(ax: Any, h: Hover) -> None:
            ax.scatter([p[0] for p in ttft], [p[1] for p in ttft], s=8, color=color, marker=marker, alpha=0.6)
            if failed:
                ax.scatter(failed, [0] * len(failed), s=14, color="#a1260d", marker="x", label="failed (at its send)")
                ax.legend(fontsize=7, frameon=False)
            h.extend((ax, x, y, f"request {i}: sent at {x:.2f} s, TTFT {y:,.1f} ms") for x, y, i in _thin(ttft))
        panels.append(("TTFT of each request at its start", "TTFT (ms)", draw_ttft))
    else:
        absent.append("TTFT (no successful request)")
    spans = (meta or {}).get("phases") or []
    if not samples:
        absent.append("server KV cache, server queue, GPU memory and power (the cell has no telemetry series)")
    else:
        kx, ky = _server(samples, "kv_usage")
        if kx:
            kbx, kby, kgaps = broken(kx, [y * 100 for y in ky])
            if kgaps:
                gapped.append(_gap_text("server KV cache", kgaps))
            panels.append(("server KV-cache usage", "% of the cache", lambda ax, h: (
                ax.plot(kbx, kby, color=color, linewidth=1.4, marker=".", markersize=3),
                h.extend((ax, x, y * 100, f"{x:.2f} s: KV cache {y * 100:.1f} %") for x, y in _thin(list(zip(kx, ky)))))))
        else:
            absent.append("server KV cache (its /metrics has no KV usage)")
        rx, ry = _server(samples, "running")
        wx, wy = _server(samples, "waiting")
        if rx or wx:
            rbx, rby, rgaps = broken(rx, ry)
            wbx, wby, _ = broken(wx, wy)
            if rgaps:
                gapped.append(_gap_text("server queue", rgaps))

            def draw_queue(ax: Any, h: Hover) -> None:
                if rx:
                    ax.plot(rbx, rby, color=color, linewidth=1.4, marker=".", markersize=3, label="running")
                if wx:
                    ax.plot(wbx, wby, color=color, linewidth=1.4, linestyle="--", marker=".", markersize=3,
                            label="waiting (queued)")
                ax.legend(fontsize=7, frameon=False)
                h.extend((ax, x, y, f"{x:.2f} s: {y:g} running") for x, y in _thin(list(zip(rx, ry))))
                h.extend((ax, x, y, f"{x:.2f} s: {y:g} waiting") for x, y in _thin(list(zip(wx, wy))))
            panels.append(("server: requests running and waiting", "requests", draw_queue))
        else:
            absent.append("server queue (its /metrics has no running or waiting gauge)")
        for key, title, unit, scale, what in (("mem_used_bytes", "GPU memory used", "GiB", 1 / 2 ** 30, "memory"),
                                              ("power_w", "GPU power", "W", 1.0, "power")):
            series = _gpus(samples, key)
            if not series:
                absent.append(f"GPU {what} (no GPU samples with it)")
                continue

            for name, (xs, _ys) in sorted(series.items()):
                gaps = broken(xs, _ys)[2]
                if gaps:
                    gapped.append(_gap_text(f"{name} {what}", gaps))

            def draw_gpu(ax: Any, h: Hover, series: Any = series, scale: float = scale, unit: str = unit) -> None:
                for k, (name, (xs, ys)) in enumerate(sorted(series.items())):
                    ys = [y * scale for y in ys]
                    bx_, by_, _ = broken(xs, ys)
                    ax.plot(bx_, by_, color=color, linewidth=1.4, linestyle=["-", "--", ":", "-."][k % 4],
                            marker=".", markersize=3, label=name if len(series) > 1 else None)
                    h.extend((ax, x, y, f"{name} at {x:.2f} s: {y:,.1f} {unit}") for x, y in _thin(list(zip(xs, ys))))
                if len(series) > 1:
                    ax.legend(fontsize=7, frameon=False)
            panels.append((title, unit, draw_gpu))
    ncols = min(4 if len(panels) > 6 else 3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = new_figure(plt, ncols, panel_w=4.6, h=3.0, nrows=nrows)
    hover: Hover = []
    for ax, (title, ylabel, draw) in zip(axes, panels):
        _phases(ax, spans)
        draw(ax, hover)
        style_ax(ax, title, "seconds from the run's start", ylabel)
        ax.set_ylim(bottom=0)
        from matplotlib.ticker import FuncFormatter

        ax.yaxis.set_major_formatter(FuncFormatter(compact))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    from matplotlib.patches import Patch

    names = [sp.get("name") for sp in spans if isinstance(sp.get("start_rel"), (int, float))]
    names = [n for i, n in enumerate(names) if n and n not in names[:i]]
    handles = [Patch(facecolor=PHASE_COLORS.get(n, "#f4f4f4"), edgecolor="#bbbbbb") for n in names]
    caption = (f"{cell.target}, cell {cell.cell_id} ({cell.workload}, {fmt_load(cell.load_mode, cell.load_value)}), "
               f"{len(records):,} measured requests, on the clock of the request records (0: the run's start). "
               "Requests in flight rise as requests are sent and fall as they end; tokens per second dips where the "
               "server stalls; TTFT against start time shows queueing build up (rising) or a cold start (early "
               "outliers).")
    if spans:
        caption += " Shading: the telemetry phases (idle, loading, ready, warm-up, load, cool-down)."
    if absent:
        caption += " Not shown: " + "; ".join(absent) + "."
    if gapped:
        caption += " Sampling gaps: " + "; ".join(gapped) + "."
    return finish(plt, fig, chart_id, f"Timeline — {cell.target}, {cell.workload}, "
                  f"{fmt_load(cell.load_mode, cell.load_value)}", caption, handles,
                  [f"phase: {n}" for n in names], hover)
