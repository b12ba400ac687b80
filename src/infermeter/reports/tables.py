"""Tables: every cell, and side-by-side comparisons with ratio columns.

Table cells are ``(text, kind)``: kind is '' or one of 'better', 'worse', 'same', 'flag', 'num'
(the HTML colours them; Markdown ignores them).  Text is plain (unescaped): the writers escape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infermeter.metrics.efficiency import FIGURES
from infermeter.reports.data import (LOAD_LABELS, METRICS, Cell, Point, fmt_load, points_of, single_prompt_workloads,
                                     targets_of)

TCell = tuple[str, str]

# headline metrics compared side by side, per load mode
COMPARED = {"burst": ["output_throughput", "total_token_throughput", "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms",
                      "mean_itl_ms"],
            "concurrency": ["output_throughput", "total_token_throughput", "mean_ttft_ms", "p99_ttft_ms",
                            "mean_tpot_ms", "mean_itl_ms"],
            "rate": ["sent_rate", "completion_rate", "request_throughput", "output_throughput", "success_pct",
                     "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms"]}
# per GPU, energy and cost (docs/cost.md): a table only where some cell has them
EFFICIENCY = ["output_throughput_per_gpu", "energy_per_output_token_j", "usd_per_million_output_tokens"]
for _keys in COMPARED.values():
    _keys.extend(EFFICIENCY)
SUMMARY_METRICS = ["output_throughput", "p99_ttft_ms", *EFFICIENCY]
TIE = 0.01  # within 1 %: about the same


@dataclass
class Table:
    id: str
    title: str
    columns: list[str]
    rows: list[list[TCell]]
    note: str = ""
    group: str = ""
    metric: str = ""
    extra: dict = field(default_factory=dict)


def fmt_value(v: float | None, key: str = "") -> str:
    if v is None:
        return "–"
    unit = METRICS.get(key, ("", "", True))[1]
    a = abs(v)
    if key in ("completed", "failed"):
        return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"
    if unit in ("%", "% of sent"):
        return f"{v:.1f}"
    if key in FIGURES and a < 10:
        return f"{v:.3g}"  # joules and dollars per token: three significant digits
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_stat(p: Point | None, key: str) -> str:
    if p is None:
        return "–"
    mean, ci, n = p.stat(key)
    if mean is None:
        return "–"
    s = fmt_value(mean, key)
    if ci is not None:
        decimals = len(s.split(".", 1)[1]) if "." in s else 0  # the mean's precision
        s += f" ± {ci:,.{decimals}f}"
    return s


def ratio_cell(a: Point | None, b: Point | None, key: str) -> TCell:
    """B vs A for one metric: the ratio and which is better, or the flag that forbids a verdict."""
    if a is None or b is None:
        return ("–", "")
    if "unequal work" in a.flags or "unequal work" in b.flags:
        return ("unequal work: no verdict", "flag")
    va, vb = a.mean(key), b.mean(key)
    if va is None or vb is None:
        return ("–", "")
    higher = METRICS[key][2]
    if va == 0:
        if vb == 0:
            return ("same", "same")
        return (("better" if (vb > 0) == higher else "worse"), "better" if (vb > 0) == higher else "worse")
    r = vb / va
    if abs(r - 1) < TIE:
        return (f"{r:.2f}× ≈ same", "same")
    better = r > 1 if higher else r < 1
    text = f"{r:.2f}× {'better' if better else 'worse'}"
    ca, cb = a.stat(key)[1], b.stat(key)[1]
    if ca is not None and cb is not None and abs(vb - va) < ca + cb:
        text += " (CIs overlap)"
    return (text, "better" if better else "worse")


def _flag_text(points: list[Point]) -> str:
    parts = []
    for p in points:
        fl = [f for f in p.flags if f != "imported"]
        if fl:
            parts.append(f"{p.target}: {', '.join(fl)}")
    return "; ".join(parts)


SINGLE = ("single prompts", "prompt length")


def comparison_tables(cells: list[Cell], metrics_for: dict[str, list[str]] | None = None) -> list[Table]:
    """Per workload and load mode, per metric: one row per load point, a column per target,
    ratio columns (each target vs the first) and the flags.  Single-prompt workloads (burst 1
    only) form one group whose rows are the prompt lengths."""
    targets = targets_of(cells)
    singles = single_prompt_workloads(cells)
    index: dict[tuple, Point] = {}
    for p in points_of(cells):
        if p.workload in singles and p.input_len is not None:
            index[(p.target, *SINGLE, float(p.input_len))] = p
        else:
            index[(p.target, p.workload, p.load_mode or "?", p.load_value)] = p
    groups: list[tuple[str, str]] = []
    for k in index:
        if k[1:3] not in groups:
            groups.append(k[1:3])
    tables: list[Table] = []
    for w, mode in groups:
        values = sorted({k[3] for k in index if k[1:3] == (w, mode)}, key=lambda v: (v is None, v))
        for key in (metrics_for or COMPARED).get(mode, COMPARED["burst"]):
            label, unit, higher = METRICS[key]
            first = "prompt length (input tokens)" if (w, mode) == SINGLE else LOAD_LABELS.get(mode, "load")
            cols = [first] + list(targets)
            cols += [f"{t} vs {targets[0]}" for t in targets[1:]] + ["flags"]
            rows: list[list[TCell]] = []
            for v in values:
                pts = [index.get((t, w, mode, v)) for t in targets]
                if all(p is None or p.mean(key) is None for p in pts):
                    continue
                row: list[TCell] = [(fmt_load(None if mode == "?" else "x", v).split(" ", 1)[-1], "")]
                row += [(fmt_stat(p, key), "num") for p in pts]
                row += [ratio_cell(pts[0], p, key) for p in pts[1:]]
                row.append((_flag_text([p for p in pts if p is not None]), "flag"))
                rows.append(row)
            if not rows:
                continue
            where = "single prompts (burst 1)" if (w, mode) == SINGLE else f"{w}, {mode}"
            tables.append(Table(id=f"{w}-{mode}-{key}", title=f"{label} ({unit}) — {where}" if unit else
                                f"{label} — {where}", columns=cols, rows=rows, group=where, metric=key,
                                note=("higher is better" if higher else "lower is better")
                                + (f"; ratios are each target vs {targets[0]}" if len(targets) > 1 else "")))
    return tables


ALL_CELL_METRICS = ["completed", "failed", "request_throughput", "output_throughput", "total_token_throughput",
                    "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "p99_e2el_ms",
                    "output_tokens_per_request", *EFFICIENCY]
_SHORT = {"completed": "ok", "failed": "failed", "request_throughput": "req/s", "output_throughput": "out tok/s",
          "total_token_throughput": "total tok/s", "mean_ttft_ms": "TTFT mean ms", "p99_ttft_ms": "TTFT p99 ms",
          "mean_tpot_ms": "TPOT mean ms", "mean_itl_ms": "ITL mean ms", "p99_e2el_ms": "E2E p99 ms",
          "output_tokens_per_request": "out tok/req", "output_throughput_per_gpu": "tok/s per GPU",
          "energy_per_output_token_j": "J/token", "usd_per_million_output_tokens": "$/Mtok"}


def all_cells_table(cells: list[Cell]) -> Table:
    cols = ["target", "workload", "load", "repeat"] + [_SHORT[k] for k in ALL_CELL_METRICS] + ["flags"]
    rows = []
    for c in cells:
        row: list[TCell] = [(c.target, ""), (c.workload, ""), (fmt_load(c.load_mode, c.load_value), ""),
                            (str(c.repeat), "num")]
        row += [(fmt_value(c.metrics.get(k), k), "num") for k in ALL_CELL_METRICS]
        row.append((", ".join(c.flags), "flag" if c.flags else ""))
        rows.append(row)
    return Table(id="all-cells", title="Every cell", columns=cols, rows=rows,
                 note="one row per run (repeats separately); flags: unequal work = outputs not all of the asked "
                      "length, client-bound = the client may have limited the measurement, errors = some requests "
                      "failed, stopped early = a stop rule ended the cell, imported = from vLLM output")


def targets_table(cells: list[Cell]) -> Table:
    rows = []
    for t in targets_of(cells):
        cs = [c for c in cells if c.target == t]
        backends = sorted({c.backend for c in cs if c.backend})
        models = sorted({c.model for c in cs if c.model})
        exps = sorted({c.experiment for c in cs if c.experiment})
        flags = sorted({f for c in cs for f in c.flags})
        rows.append([(t, ""), (", ".join(backends), ""), (", ".join(models), ""), (str(len(cs)), "num"),
                     (", ".join(exps), ""), (", ".join(flags), "flag" if flags else "")])
    return Table(id="targets", title="Targets", columns=["target", "backend", "model", "cells", "experiment",
                                                         "flags seen"], rows=rows)
