"""What every chart shares: the ``Chart`` it becomes, the palette, axes, legends and the hover points.

A chart is drawn once and saved twice: a PNG at ``SCALE`` times the page's pixel size (sharp on
slides and high-density screens) and an SVG.  ``hover`` holds each drawn point's position in page
pixels with the text the HTML report shows when the pointer rests on it.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from infermeter.reports.data import METRICS, Cell

DPI = 100  # page pixels per inch: the size the HTML shows
SCALE = 2  # the PNG has SCALE x the page's pixels
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
    width: int  # page pixels (the PNG has SCALE x as many)
    height: int
    svg: bytes = b""
    hover: list[tuple[float, float, str]] = field(default_factory=list)  # (x, y) in page pixels, text


# (axes, x, y, text) in data coordinates, collected while drawing
Hover = list[tuple[Any, float, float, str]]


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed; matplotlib is a core dependency)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "infermeter"  # the same SVG ids every time
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


def compact(v: float, _pos: Any = None) -> str:
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


def int_label(v: float) -> str:
    return f"{int(round(v))}" if abs(v - round(v)) < 1e-9 else f"{v:g}"


def tokens_label(v: float) -> str:
    return f"{v / 1024:g}k" if v >= 1024 and v % 1024 == 0 else compact(v)


def value_text(v: float) -> str:
    """A value for a hover text: three significant figures, thousands separated."""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def set_x_scale(ax: Any, xs: list[float], *, fmt: Callable[[float], str] | None = None) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    pos = sorted({x for x in xs if x is not None and x > 0})
    if len(pos) >= 3 and pos[-1] / pos[0] >= 16:
        ax.set_xscale("log", base=2)
        ticks = pos
        while len(ticks) > 12:
            ticks = ticks[::2]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: (fmt or compact)(v)))
        ax.set_xlim(pos[0] / 1.25, pos[-1] * 1.25)
    elif pos:
        if fmt is not None:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: fmt(v)))


def set_y_scale(ax: Any, ys: list[float], *, zero_ok: bool = True) -> None:
    from matplotlib.ticker import FuncFormatter

    pos = [y for y in ys if y is not None and y > 0]
    if pos and len(pos) == len([y for y in ys if y is not None]) and max(pos) / min(pos) >= 100:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(compact))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, p: ""))
    else:
        if zero_ok:
            ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(compact))


def new_figure(plt: Any, ncols: int, *, panel_w: float = 5.0, h: float = 4.2, nrows: int = 1) -> tuple[Any, list]:
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_w * ncols + 1.6, h * nrows), dpi=DPI,
                             layout="constrained", squeeze=False)
    return fig, [a for row in axes for a in row]


def finish(plt: Any, fig: Any, chart_id: str, title: str, caption: str, handles: list | None = None,
           labels: list | None = None, hover: Hover | None = None) -> Chart:
    fig.suptitle(mpl_text(title), fontsize=12, fontweight="bold")
    if handles:
        labels = [mpl_text(x).replace("\n", " ") for x in labels or []]
        fig.legend(handles, labels, loc="outside lower center", frameon=False, fontsize=9,
                   ncols=min(len(labels), 6))
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI * SCALE, metadata={"Software": None})
    fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    w, h = (int(round(v)) for v in fig.get_size_inches() * DPI)
    points = _page_points(fig, hover or [], w, h)
    plt.close(fig)
    return Chart(chart_id, title, caption, png.getvalue(), w, h, svg=svg.getvalue(), hover=points)


def _page_points(fig: Any, hover: Hover, w: int, h: int) -> list[tuple[float, float, str]]:
    """Data coordinates -> page pixels (origin top left), for points inside their axes."""
    fig.canvas.draw()
    fw, fh = fig.bbox.width, fig.bbox.height
    out = []
    for ax, x, y, text in hover:
        px, py = ax.transData.transform((x, y))
        ax_box = ax.get_window_extent()
        if not (ax_box.x0 - 1 <= px <= ax_box.x1 + 1 and ax_box.y0 - 1 <= py <= ax_box.y1 + 1):
            continue
        out.append((round(px / fw * w, 1), round((1 - py / fh) * h, 1), text))
    return out


def style_ax(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(mpl_text(title), fontsize=11)
    ax.set_xlabel(mpl_text(xlabel))
    ax.set_ylabel(mpl_text(ylabel))
    ax.grid(True, which="major", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def axis_label(key: str) -> str:
    label, unit, _ = METRICS[key]
    return f"{label} ({unit})" if unit else label


def target_handles(targets: list[str], pal: dict[str, tuple[str, str]]) -> tuple[list, list]:
    from matplotlib.lines import Line2D

    return ([Line2D([], [], color=pal[t][0], marker=pal[t][1], linewidth=1.8) for t in sorted(targets)],
            sorted(targets))


def workload_desc(cells: list[Cell], workload: str) -> str:
    c = next((c for c in cells if c.workload == workload), None)
    if c is None:
        return workload
    bits = [b for b in [c.dataset] if b]
    if c.input_len is not None and c.output_len is not None:
        bits.append(f"{c.input_len:,} → {c.output_len:,} tokens")
    return f"{workload} ({', '.join(bits)})" if bits else workload
