"""TTFT, ITL, TPOT and E2EL of every request at one load, per target: CDFs above, histograms below.

A CDF stops at the highest quantile its samples support (with n samples, anything above
1 - 1/n is simply the maximum) and marks p50, p90 and p99 only where n is enough for them
(``metrics.stats.min_samples_for``); the caption names what was left out."""

from __future__ import annotations

from typing import Any

from infermeter.core.records import RequestRecord
from infermeter.metrics.stats import min_samples_for
from infermeter.reports.charts.base import Chart, Hover, compact, finish, new_figure, style_ax, target_handles
from infermeter.reports.samples import Focus, read_records

PANELS = [("ttft", "TTFT", "time to first token"), ("itl", "ITL", "gap between streamed chunks"),
          ("tpot", "TPOT", "time per output token after the first"), ("e2el", "E2EL", "end-to-end latency")]
MARKED = (50.0, 90.0, 99.0)


def samples_ms(records: list[RequestRecord]) -> dict[str, list[float]]:
    """Every successful request's TTFT, TPOT and E2EL, and every ITL gap, in ms."""
    out: dict[str, list[float]] = {k: [] for k, *_ in PANELS}
    for r in records:
        if not r.ok:
            continue
        for key in ("ttft", "tpot", "e2el"):
            v = getattr(r, key)
            if v is not None:
                out[key].append(v * 1000)
        out["itl"].extend(g * 1000 for g in r.itls)
    return out


def supported(n: int) -> list[float]:
    return [p for p in MARKED if n >= min_samples_for(p)]


def distributions(plt: Any, pal: dict, chart_id: str, focus: Focus) -> Chart | None:
    import numpy as np

    data = {t: samples_ms([r for c in cs for r in read_records(c)]) for t, cs in sorted(focus.cells.items())}
    data = {t: d for t, d in data.items() if any(d.values())}
    if not data:
        return None
    fig, axes = new_figure(plt, 4, panel_w=4.0, h=3.4, nrows=2)
    hover: Hover = []
    missing: list[str] = []
    for i, (key, name, what) in enumerate(PANELS):
        cdf_ax, hist_ax = axes[i], axes[4 + i]
        values = {t: np.sort(np.asarray(d[key], dtype=float)) for t, d in data.items() if d[key]}
        if not values:
            for ax in (cdf_ax, hist_ax):
                ax.text(0.5, 0.5, f"no {name} samples", transform=ax.transAxes, ha="center", color="#777777")
            style_ax(cdf_ax, f"{name} CDF", f"{name} (ms)", "share of requests" if key != "itl" else "share of gaps")
            style_ax(hist_ax, f"{name} histogram", f"{name} (ms)", "share per bin")
            missing.append(f"{name}: no samples")
            continue
        lo = min(float(v[0]) for v in values.values())
        hi = max(float(v[-1]) for v in values.values())
        log = lo > 0 and hi / lo >= 100
        bins = np.geomspace(lo, hi, 41) if log else np.linspace(lo, hi if hi > lo else lo + 1, 41)
        for t, v in values.items():
            color, marker = pal[t]
            n = len(v)
            q = np.arange(1, n + 1) / n
            top = n - 1 if n > 1 else 1  # the last step is the maximum: no quantile the samples support
            cdf_ax.step(v[:top], q[:top], where="post", color=color, linewidth=1.6)
            for p in supported(n):
                x = float(np.percentile(v, p))
                cdf_ax.plot([x], [p / 100], marker=marker, color=color, markersize=5, linestyle="")
                hover.append((cdf_ax, x, p / 100, f"{t}: p{p:g} {name} {x:,.1f} ms (n = {n:,})"))
            left = [f"p{p:g}" for p in MARKED if p not in supported(n)]
            if left:
                missing.append(f"{name} {', '.join(left)} of {t} (n = {n})")
            weights = np.full(n, 1.0 / n)
            hist_ax.hist(v, bins=bins, weights=weights, histtype="step", color=color, linewidth=1.5)
            hover.append((hist_ax, float(np.median(v)), 0, f"{t}: {name} median {float(np.median(v)):,.1f} ms, "
                                                          f"mean {float(v.mean()):,.1f} ms (n = {n:,})"))
        for ax, title, ylabel in ((cdf_ax, f"{name} CDF", "share of requests" if key != "itl" else "share of gaps"),
                                  (hist_ax, f"{name} histogram", "share per bin")):
            style_ax(ax, title, f"{name} (ms) — {what}", ylabel)
            if log:
                from matplotlib.ticker import FuncFormatter

                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(FuncFormatter(compact))
                ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, p: ""))
        cdf_ax.set_ylim(0, 1.02)
        cdf_ax.set_yticks([0, 0.5, 0.9, 0.99], ["0", "p50", "p90", "p99"])
    handles, labels = target_handles(list(data), pal)
    caption = (f"Every successful request at {focus.label}, pooled over repeats. Top: share of requests (of gaps, "
               "for ITL) at or below each value — a curve further left is faster, a long flat tail is a slow "
               "minority. Bottom: the same samples as histograms (share of each target's samples per bin). "
               "Markers: p50, p90, p99 where the samples support them; a curve stops below its maximum.")
    if missing:
        caption += " Too few samples, not plotted: " + "; ".join(missing) + "."
    return finish(plt, fig, chart_id, f"Latency distributions — {focus.label}", caption, handles, labels,
                  hover)
