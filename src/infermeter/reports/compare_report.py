"""A whole comparison of two sides (every paired group, the gate, both sides' provenance),
and its forms: console, Markdown (a CI job summary), JSON, and tables for the HTML report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from infermeter.reports.compare import GroupComparison, compare_groups, parse_key, warnings_for
from infermeter.reports.compare_sides import BLOCKS, Run, pair_groups, provenance_of
from infermeter.reports.gate import EXIT_NO_VERDICT, EXIT_REGRESSION, GateResult, Threshold, evaluate, exit_code
from infermeter.reports.tables import Table, fmt_value

SHORT_METHOD = (("bootstrap", "bootstrap"), ("Mann-Whitney", "rank test"), ("Welch", "Welch t"))
KIND = {"better": "better", "worse": "worse", "no significant difference": "same", "no verdict": "flag"}


@dataclass
class CompareReport:
    name_a: str
    name_b: str
    comparisons: list[GroupComparison]
    gate: list[GateResult]
    exit_code: int
    provenance: tuple[dict[str, str], dict[str, str]]
    unpaired: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0

    @property
    def gate_status(self) -> str:
        if not self.gate:
            return "no thresholds"
        return {EXIT_REGRESSION: "FAILED", EXIT_NO_VERDICT: "NO VERDICT"}.get(self.exit_code, "passed")

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"a": self.name_a, "b": self.name_b, "confidence": self.confidence, "resamples": self.resamples,
                "seed": self.seed, "exit_code": self.exit_code, "gate_status": self.gate_status,
                "gate": [g.to_dict() for g in self.gate], "comparisons": [c.to_dict() for c in self.comparisons],
                "provenance": {"a": self.provenance[0], "b": self.provenance[1]}, "unpaired": self.unpaired,
                "warnings": self.warnings})


def json_safe(x: Any) -> Any:
    """Non-finite floats as null (JSON has no NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def build(runs_a: list[Run], runs_b: list[Run], name_a: str, name_b: str, *, keys: list[str] | None = None,
          thresholds: list[Threshold] | None = None, confidence: float = 0.95, resamples: int = 1000,
          seed: int = 0, fail_on_no_verdict: bool = False, blocks: int = BLOCKS) -> CompareReport:
    from infermeter.reports.compare import default_keys

    thresholds = thresholds or []
    keys = list(keys or default_keys())
    keys += [t.key for t in thresholds if t.key not in keys]
    for k in keys:
        parse_key(k)
    pairs, unpaired = pair_groups(runs_a, runs_b)
    comps = [compare_groups(ga, gb, keys, confidence=confidence, n_boot=resamples, seed=seed, blocks=blocks)
             for ga, gb in pairs]
    gate = evaluate(thresholds, comps)
    warnings = []
    for ga, gb in pairs:
        for w in warnings_for(ga.runs[0].cell, gb.runs[0].cell):
            if "unequal work" not in w:  # said as the no-verdict reason
                warnings.append(w if len(pairs) == 1 else f"{ga.name}: {w}")
    return CompareReport(name_a, name_b, comps, gate, exit_code(gate, fail_on_no_verdict),
                         (provenance_of(runs_a[0]), provenance_of(runs_b[0])), unpaired, warnings, confidence,
                         resamples, seed)


# ---------------------------------------------------------------------- tables
def _signed(x: float | None, key: str) -> str:
    if x is None:
        return "–"
    return ("+" if x > 0 else "") + fmt_value(x, key)


def _short(method: str) -> str:
    return next((short for word, short in SHORT_METHOD if word in method), method or "–")


def verdict_table(comp: GroupComparison, index: int = 0) -> Table:
    rows = []
    for v in comp.verdicts:
        fmt_key = v.key if parse_key(v.key)[0] == "throughput" else "mean_ttft_ms"
        rel = "–" if v.rel is None else f"{v.rel * 100:+.1f}%"
        rows.append([(v.label, ""), (fmt_value(v.a, fmt_key), "num"), (fmt_value(v.b, fmt_key), "num"),
                     (_signed(v.diff, fmt_key), "num"), (rel, "num"), (v.text, KIND[v.verdict]),
                     (_short(v.method), "")])
    for key, a, b in comp.info:
        rows.append([(key.replace("_", " "), ""), (fmt_value(a, key), "num"), (fmt_value(b, key), "num"),
                     (_signed(b - a, key) if a is not None and b is not None else "–", "num"), ("", "num"),
                     ("(no verdict: context)", ""), ("", "")])
    methods = sorted({v.method for v in comp.verdicts if v.method})
    note = (f"A: {comp.runs_a} run(s), B: {comp.runs_b} run(s). Verdicts at {comp.verdicts[0].confidence * 100:g}% "
            f"confidence. Methods: " + "; ".join(methods) + "." if comp.verdicts else "")
    if comp.notes:
        note += " " + " ".join(n[0].upper() + n[1:] + "." for n in comp.notes)
    title = comp.name_a if comp.name_a == comp.name_b else f"{comp.name_a} vs {comp.name_b}"
    return Table(f"verdict-{index}", title, ["metric", "A", "B", "Δ B−A", "Δ %", "verdict", "method"], rows,
                 note=note, group="Against the baseline")


def gate_table(gate: list[GateResult]) -> Table:
    kind = {"fail": "worse", "pass": "same", "no verdict": "flag"}
    rows = [[(g.threshold.text, ""), (g.group, ""), (g.status, kind[g.status]), (g.text.split(": ", 1)[1], "")]
            for g in gate]
    return Table("gate", "Gate (--fail-if)", ["threshold", "cells", "result", "detail"], rows,
                 note="A threshold fails only when the change crosses it and the difference is significant.")


def provenance_table(a: dict[str, str], b: dict[str, str]) -> Table:
    rows = []
    for k in a:
        same = a[k] == b.get(k)
        rows.append([(k, ""), (a[k], ""), (b.get(k, "unknown"), "" if same else "flag"), ("" if same else "≠", "")])
    return Table("provenance", "Provenance", ["", "A", "B", ""], rows,
                 note="What ran on each side (from each result's infermeter.target, provenance and telemetry).")


def tables(report: CompareReport) -> list[Table]:
    out = [gate_table(report.gate)] if report.gate else []
    out += [verdict_table(c, i) for i, c in enumerate(report.comparisons)]
    out.append(provenance_table(*report.provenance))
    return out


def summary_lines(report: CompareReport) -> list[str]:
    counts: dict[str, int] = {}
    for c in report.comparisons:
        for v in c.verdicts:
            counts[v.verdict] = counts.get(v.verdict, 0) + 1
    order = ("worse", "better", "no significant difference", "no verdict")
    lines = [f"A: {report.name_a}", f"B: {report.name_b}",
             "verdicts: " + ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))]
    for c in report.comparisons:
        where = "" if len(report.comparisons) == 1 else f" ({c.name_b})"
        lines += [f"no verdict{where}: {r}" for r in c.reasons]
    lines += [f"not compared: {u}" for u in report.unpaired]
    lines += [f"warning: {w}" for w in report.warnings]
    if report.gate:
        lines.append(f"gate: {report.gate_status} (exit {report.exit_code})")
    return lines


# ---------------------------------------------------------------------- forms
def to_markdown(report: CompareReport) -> str:
    from infermeter.reports.markdown import md_table, md_text

    out = [f"## infermeter compare: {md_text(report.name_b)} against {md_text(report.name_a)}", ""]
    if report.gate:
        mark = {"FAILED": "❌", "passed": "✅", "NO VERDICT": "⚠️"}.get(report.gate_status, "")
        out += [f"**Gate: {report.gate_status}** {mark} (exit code {report.exit_code})", ""]
    out += [md_text(line) + "  " for line in summary_lines(report)[2:] if not line.startswith("gate:")]
    out.append("")
    for t in tables(report):
        if t.id == "provenance":
            out += ["<details><summary>Provenance of both sides</summary>", ""]
        out += [f"### {md_text(t.title)}", "", md_table(t), ""]
        if t.note:
            out += [f"*{md_text(t.note)}*", ""]
        if t.id == "provenance":
            out += ["</details>", ""]
    return "\n".join(out).rstrip() + "\n"


def print_console(report: CompareReport, console: Any) -> None:
    from rich.table import Table as RichTable
    from rich.text import Text

    from infermeter.errors import safe_text

    style = {"better": "bold green", "worse": "bold red", "same": "dim", "flag": "yellow"}
    for line in summary_lines(report)[:2]:
        console.print(safe_text(line), markup=False)
    for t in tables(report):
        rt = RichTable(title=safe_text(t.title), title_justify="left", show_lines=False)
        for i, col in enumerate(t.columns):
            wraps = col in ("verdict", "detail") or (t.id == "provenance" and col in ("A", "B"))
            rt.add_column(col, justify="right" if t.rows and t.rows[0][i][1] == "num" else "left", no_wrap=not wraps,
                          overflow="fold")
        for row in t.rows:
            rt.add_row(*[Text(safe_text(text), style=style.get(kind, "")) for text, kind in row])
        console.print(rt)
        if t.note:
            console.print(safe_text(t.note), markup=False, style="dim")
    for line in summary_lines(report)[2:]:
        console.print(safe_text(line), markup=False)
