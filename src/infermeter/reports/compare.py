"""``infermeter compare RUN_A RUN_B``: two runs' headline metrics side by side."""

from __future__ import annotations

from dataclasses import dataclass

from infermeter.reports.data import METRICS, Cell

COMPARE_METRICS = ["completed", "failed", "duration", "request_throughput", "output_throughput",
                   "total_token_throughput", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms",
                   "p99_tpot_ms", "mean_itl_ms", "p99_itl_ms", "mean_e2el_ms", "p99_e2el_ms",
                   "output_tokens_per_request"]
NO_VERDICT = {"completed", "duration", "output_tokens_per_request"}  # not better or worse by themselves
TIE = 0.01


@dataclass
class Row:
    metric: str
    label: str
    a: float | None
    b: float | None
    delta: float | None
    rel: float | None  # (b - a) / a
    better: str  # 'A', 'B', '=', '' (no verdict)


def work_differs(a: Cell, b: Cell) -> bool:
    ta, tb = a.metrics.get("output_tokens_per_request"), b.metrics.get("output_tokens_per_request")
    if ta is not None and tb is not None and max(ta, tb) > 0 and abs(ta - tb) / max(ta, tb) > TIE:
        return True
    return a.unequal_work or b.unequal_work


def warnings_for(a: Cell, b: Cell) -> list[str]:
    out = []
    if work_differs(a, b):
        ta, tb = a.metrics.get("output_tokens_per_request"), b.metrics.get("output_tokens_per_request")
        detail = f" ({ta:.1f} vs {tb:.1f} output tokens per request)" if ta is not None and tb is not None else ""
        which = [n for n, c in (("A", a), ("B", b)) if c.unequal_work]
        if which:
            detail += f"; {' and '.join(which)} did not produce the asked output lengths"
        out.append(f"the runs did unequal work{detail}: throughput and latency are not comparable, "
                   "no better side is named (rerun with --ignore-eos)")
    for n, c in (("A", a), ("B", b)):
        if "client-bound" in c.flags:
            out.append(f"run {n} was client-bound: the client may have limited its numbers")
        if "errors" in c.flags:
            out.append(f"run {n} had {c.metrics.get('failed', 0):.0f} failed requests")
        if c.stopped_early:
            out.append(f"run {n} stopped early: {c.stopped_early}")
    return out


def compare_rows(a: Cell, b: Cell) -> list[Row]:
    verdict_ok = not work_differs(a, b)
    rows = []
    for key in COMPARE_METRICS:
        va, vb = a.metrics.get(key), b.metrics.get(key)
        if va is None and vb is None:
            continue
        label, unit, higher = METRICS[key]
        delta = vb - va if va is not None and vb is not None else None
        rel = delta / va if delta is not None and va else None
        better = ""
        if verdict_ok and key not in NO_VERDICT and delta is not None:
            if rel is not None and abs(rel) < TIE or delta == 0:
                better = "="
            else:
                better = "B" if (delta > 0) == higher else "A"
        rows.append(Row(key, f"{label} ({unit})" if unit else label, va, vb, delta, rel, better))
    return rows


def render(a: Cell, b: Cell, name_a: str, name_b: str) -> tuple[object, list[str]]:
    """A rich Table and the warning lines."""
    from rich.table import Table
    from rich.text import Text

    from infermeter.reports.tables import fmt_value

    table = Table(title=None, show_lines=False)
    table.add_column("metric", no_wrap=True)
    table.add_column("A", justify="right", no_wrap=True)
    table.add_column("B", justify="right", no_wrap=True)
    table.add_column("Δ B−A", justify="right", no_wrap=True)
    table.add_column("Δ %", justify="right", no_wrap=True)
    table.add_column("better", justify="center", no_wrap=True, min_width=10)
    for r in compare_rows(a, b):
        delta = "–" if r.delta is None else ("+" if r.delta > 0 else "") + fmt_value(r.delta, r.metric)
        rel = "–" if r.rel is None else f"{r.rel * 100:+.1f}%"
        style = {"A": "bold", "B": "bold", "=": "dim"}.get(r.better, "")
        table.add_row(r.label, fmt_value(r.a, r.metric), fmt_value(r.b, r.metric), delta, rel,
                      Text(r.better or ("no verdict" if work_differs(a, b) and r.metric not in NO_VERDICT else ""),
                           style=style))
    return table, warnings_for(a, b)
