"""Metric-against-load line charts: one series per target, error bars over repeats, rings on
the minority of points that are flagged (or that are not), and gap labels against the first target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from infermeter.reports.charts.base import (FLAGGED, Chart, Hover, finish, mpl_text, set_x_scale, set_y_scale,
                                            style_ax, target_handles, value_text)
from infermeter.reports.data import METRICS, Point, fmt_load

RINGS_FLAGGED = "ringed: unequal work or client-bound"
RINGS_CLEAN = "ringed: the only points NOT flagged (every other point is unequal work or client-bound)"
ALL_FLAGGED = "every point is flagged unequal work or client-bound"


@dataclass
class Style:
    """How one metric of a panel is drawn: the first solid with filled markers, a second dashed
    with hollow markers, so two lines of one target can be told apart where they overlap."""

    key: str
    linestyle: str = "-"
    label: str = ""

    @property
    def hollow(self) -> bool:
        return self.linestyle != "-"


def series(points: list[Point], key: str, x_of: Callable[[Point], float | None]) -> dict[str, list[tuple]]:
    """target -> [(x, mean, ci, flagged, point)] sorted by x."""
    out: dict[str, list[tuple]] = {}
    for p in points:
        x = x_of(p)
        mean, ci, _n = p.stat(key)
        if x is None or mean is None:
            continue
        out.setdefault(p.target, []).append((x, mean, ci, any(f in p.flags for f in FLAGGED), p))
    for v in out.values():
        v.sort(key=lambda t: t[0])
    return out


def hover_text(p: Point, key: str, mean: float, ci: float | None) -> str:
    label, unit, _ = METRICS[key]
    where = fmt_load(p.load_mode, p.load_value)
    text = f"{p.target} · {p.workload}, {where}: {label} {value_text(mean)}"
    text += f" ± {value_text(ci)}" if ci else ""
    text += f" {unit}" if unit else ""
    if len(p.cells) > 1:
        text += f" ({len(p.cells)} repeats)"
    fl = [f for f in p.flags if f != "imported"]
    return text + (f" [{', '.join(fl)}]" if fl else "")


def plot_series(ax: Any, data: dict[str, list[tuple]], pal: dict[str, tuple[str, str]], key: str, *,
                style: Style | None = None, hover: Hover | None = None) -> list[float]:
    style = style or Style(key)
    ys: list[float] = []
    for target in sorted(data):
        pts = data[target]
        color, marker = pal[target]
        xs = [p[0] for p in pts]
        ms = [p[1] for p in pts]
        errs = [p[2] or 0.0 for p in pts]
        ys.extend(ms)
        ys.extend(m - e for m, e in zip(ms, errs) if e)
        ys.extend(m + e for m, e in zip(ms, errs) if e)
        ax.errorbar(xs, ms, yerr=errs if any(errs) else None, color=color, marker=marker, markersize=5,
                    markerfacecolor="white" if style.hollow else color, markeredgewidth=1.3,
                    linestyle=style.linestyle, linewidth=1.8, capsize=3, elinewidth=1)
        if hover is not None:
            suffix = f" ({style.label})" if style.label else ""
            hover.extend((ax, x, m, hover_text(p, key, m, c) + suffix) for x, m, c, _f, p in pts)
    return ys


def ring(axes_points: list[tuple[Any, float, float, bool]]) -> str | None:
    """Ring the minority: the flagged points, or where nearly all are flagged the exceptions.
    Returns the legend text for the rings (None: nothing flagged)."""
    flagged = [t for t in axes_points if t[3]]
    if not flagged:
        return None
    if len(flagged) == len(axes_points):
        return ALL_FLAGGED
    invert = len(flagged) * 2 > len(axes_points)
    for ax, x, y, f in axes_points:
        if f != invert:
            ax.scatter([x], [y], s=150, facecolors="none", edgecolors="#333333", linewidths=1.2, zorder=5)
    return RINGS_CLEAN if invert else RINGS_FLAGGED


def gap_labels(ax: Any, data: dict[str, list[tuple]], pal: dict[str, tuple[str, str]], base: str) -> bool:
    """'tgi +12 %' beside each other target's point: its difference from ``base`` at that load
    (on many loads, every other one, counting from the largest)."""
    ref = {x: m for x, m, *_ in data.get(base, [])}
    xs = sorted(ref)
    keep = set(xs[::-1][:: 2 if len(xs) > 6 else 1])
    drew = False
    others = [t for t in sorted(data) if t != base]
    for k, target in enumerate(others):
        for x, m, *_ in data[target]:
            if x not in keep or not ref.get(x):
                continue
            pct = (m / ref[x] - 1) * 100
            ax.annotate(f"{mpl_text(target)} {pct:+.0f} %", (x, m), xytext=(0, 6 + 9 * k if pct >= 0 else -12 - 9 * k),
                        textcoords="offset points", ha="center", fontsize=6.5, color=pal[target][0])
            drew = True
    return drew


def line_chart(plt: Any, pal: dict, chart_id: str, title: str, caption: str, points: list[Point],
               panels: list[tuple[str, list[Style]]], xlabel: str, x_of: Callable[[Point], float | None],
               x_fmt: Callable[[float], str] | None = None,
               extra: Callable[[Any, int, list[float]], None] | None = None, gaps_vs: str | None = None) -> Chart | None:
    """panels: (panel title, [Style per metric]).  ``gaps_vs``: label each other target's gap to this one."""
    from infermeter.reports.charts.base import new_figure

    fig, axes = new_figure(plt, len(panels))
    xs_all: list[float] = []
    marks: list[tuple[Any, float, float, bool]] = []
    hover: Hover = []
    drawn, gaps = 0, False
    for i, (ax, (ptitle, styles)) in enumerate(zip(axes, panels)):
        ys: list[float] = []
        used: list[Style] = []
        for st in styles:
            data = series(points, st.key, x_of)
            marks += [(ax, x, m, f) for v in data.values() for x, m, _c, f, _p in v]
            xs_all.extend(x for v in data.values() for x, *_r in v)
            ys.extend(plot_series(ax, data, pal, st.key, style=st, hover=hover))
            if data:
                used.append(st)
            if gaps_vs is not None and len(data) > 1 and gaps_vs in data:
                gaps |= gap_labels(ax, data, pal, gaps_vs)
        if ys:
            drawn += 1
        unit = METRICS[styles[0].key][1]
        ylabel = f"{ptitle.split(' — ')[0]} ({unit})" if unit else ptitle
        style_ax(ax, ptitle, xlabel, ylabel)
        set_x_scale(ax, xs_all, fmt=x_fmt)
        set_y_scale(ax, ys)
        if gaps:
            ax.margins(y=0.12)
        if len(used) > 1:
            _style_legend(ax, used)
        if extra:
            extra(ax, i, xs_all)
    if not drawn:
        plt.close(fig)
        return None
    handles, labels = target_handles(sorted({p.target for p in points}), pal)
    rings = ring(marks)
    if rings:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], linestyle="", marker="o", markersize=11, markerfacecolor="none",
                              markeredgecolor="#333333" if rings != ALL_FLAGGED else "none"))
        labels.append(rings)
    if gaps:
        caption += f" Labels: each target's difference from {gaps_vs} at that load."
    return finish(plt, fig, chart_id, title, caption, handles, labels, hover)


def _style_legend(ax: Any, used: list[Style]) -> None:
    """Which line is which metric, in the panel itself (a figure legend would mix panels)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="#555555", linestyle=s.linestyle, marker="o", markersize=5,
                      markerfacecolor="white" if s.hollow else "#555555", linewidth=1.5) for s in used]
    ax.legend(handles, [mpl_text(s.label or METRICS[s.key][0]) for s in used], fontsize=8, frameon=False,
              loc="best")


def rate_styles(pts: list[Point]) -> list[Style]:
    """Sent and completed per second; where a result predates those (and has no records to derive
    them from): completed / duration for every point, so that one chart does not mix the two."""
    if pts and all(p.mean("completion_rate") is not None for p in pts):
        return [Style("completion_rate", "-", "completed (solid, filled)"),
                Style("sent_rate", "--", "sent (dashed, hollow)")]
    return [Style("request_throughput", "-", "completed / duration")]
