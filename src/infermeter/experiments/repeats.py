"""Repeats of one load point: when a sweep runs another, and what they say together.

A point is ``(target, workload, load mode, load value)``; its runs are the cells
``...r0``, ``...r1``, ...  With ``min_samples`` a small point has extra repeats
(``Cell.extra``), run only while the point's finished runs hold fewer than
``min_samples`` requests and, with ``repeat_budget_s``, took less wall time than
that budget (finished runs of an earlier sweep of the same store count too).

``point_summaries`` groups an experiment's finished cells by point and gives, per
metric, the mean over the repeats with a 95 % Student-t interval
(``metrics.confidence.repeat_ci``): the numbers ``infermeter ls`` / ``show`` print.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from infermeter.experiments.cells import Cell
from infermeter.experiments.spec import ExperimentSpec
from infermeter.metrics.confidence import repeat_ci

Point = tuple[str, str, str, float]
# (index column, label) of the metrics summarised over repeats
SUMMARY_METRICS = (("output_throughput", "out tok/s"), ("mean_ttft_ms", "TTFT mean ms"),
                   ("mean_tpot_ms", "TPOT mean ms"), ("mean_itl_ms", "ITL mean ms"),
                   ("mean_e2el_ms", "E2EL mean ms"))


@dataclass
class _Spent:
    samples: int = 0
    wall_s: float = 0.0


@dataclass
class RepeatPlanner:
    """Tracks each point's samples and wall time; says whether an extra repeat still runs."""

    spec: ExperimentSpec
    points: dict[Point, _Spent] = field(default_factory=dict)

    def observe(self, cell: Cell, completed: int | None, wall_s: float) -> None:
        spent = self.points.setdefault(cell.point, _Spent())
        spent.samples += int(completed or 0)
        spent.wall_s += max(0.0, wall_s)

    def observe_row(self, cell: Cell, row: dict[str, Any]) -> None:
        """A cell finished by an earlier sweep (its index row)."""
        wall = (row["finished"] - row["started"]) if row.get("started") and row.get("finished") else 0.0
        self.observe(cell, row.get("completed"), wall)

    def skip_reason(self, cell: Cell) -> str | None:
        """Why an extra repeat is not run (None: run it; regular repeats always run)."""
        if not cell.extra or self.spec.min_samples is None:
            return None
        spent = self.points.get(cell.point, _Spent())
        if spent.samples >= self.spec.min_samples:
            return f"not needed: the point has {spent.samples} of min_samples {self.spec.min_samples} requests"
        budget = self.spec.repeat_budget_s
        if budget is not None and spent.wall_s >= budget:
            return (f"not run: repeat_budget_s {budget:g} spent on the point ({spent.wall_s:.1f} s, "
                    f"{spent.samples} of {self.spec.min_samples} requests)")
        return None


def point_of(row: dict[str, Any]) -> Point | None:
    if row.get("load_mode") is None or row.get("load_value") is None:
        return None
    return (str(row.get("target")), str(row.get("workload")), str(row["load_mode"]), float(row["load_value"]))


def point_label(point: Point) -> str:
    target, workload, mode, value = point
    return f"{target}.{workload}.{mode}-{int(value) if float(value).is_integer() else format(value, 'g')}"


def point_summaries(rows: Iterable[dict[str, Any]], min_runs: int = 2) -> list[dict[str, Any]]:
    """Per point with at least ``min_runs`` finished runs: runs, requests, and per metric the
    mean over the runs with its 95 % interval (``{"estimate", "low", "high", "n"}``)."""
    groups: dict[Point, list[dict[str, Any]]] = {}
    for row in rows:
        point = point_of(row)
        if point is not None and row.get("status") == "done":
            groups.setdefault(point, []).append(row)
    out = []
    for point, runs in groups.items():
        if len(runs) < min_runs:
            continue
        summary: dict[str, Any] = {"point": point_label(point), "runs": len(runs),
                                   "samples": sum(int(r.get("completed") or 0) for r in runs)}
        for key, _label in SUMMARY_METRICS:
            values = [float(r[key]) for r in runs if isinstance(r.get(key), (int, float))]
            summary[key] = repeat_ci(values) if values else None
        out.append(summary)
    return out


def format_ci(ci: dict[str, Any] | None, spec: str = ",.2f") -> str:
    """``12.34 ± 0.56`` (the interval's half-width), ``12.34`` from one run, ``-`` from none."""
    if not ci or ci.get("estimate") is None:
        return "-"
    if ci.get("low") is None or ci.get("high") is None:
        return format(ci["estimate"], spec)
    return f"{format(ci['estimate'], spec)} ± {format((ci['high'] - ci['low']) / 2, spec)}"


def summary_table(summaries: list[dict[str, Any]]) -> list[str]:
    """Aligned text lines: one per point, means ± 95 % CI half-width over its repeats."""
    head = ["point", "runs", "requests", *(label for _key, label in SUMMARY_METRICS)]
    table = [head] + [[s["point"], str(s["runs"]), str(s["samples"]),
                       *(format_ci(s[key], ",.1f" if key == "output_throughput" else ",.2f")
                         for key, _label in SUMMARY_METRICS)] for s in summaries]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    return ["  ".join(f"{v:<{w}}" if i == 0 else f"{v:>{w}}" for i, (v, w) in enumerate(zip(line, widths))).rstrip()
            for line in table]
