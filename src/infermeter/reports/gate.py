"""``compare --fail-if``: thresholds over vLLM's result keys that fail a CI job.

An expression is ``KEY OP CHANGE``: ``p99_ttft_ms>+5%`` (B's p99 TTFT more than 5 %
above A's), ``output_throughput<-3%`` (B's output throughput more than 3 % below A's),
``mean_itl_ms>+0.5`` (an absolute change, in the key's unit).  OP is one of
``> >= < <=``.  A threshold *fails* only when the change crosses it **and** the
difference is significant (its confidence interval excludes 0); a crossing that is
not significant, or a metric with no verdict, passes (``--fail-on-no-verdict`` makes
the latter fail with its own code).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

from infermeter.errors import UserError
from infermeter.reports.compare import GroupComparison, Verdict, parse_key

EXIT_OK = 0
EXIT_REGRESSION = 7  # a --fail-if threshold was crossed by a significant difference
EXIT_NO_VERDICT = 8  # with --fail-on-no-verdict: a --fail-if metric had no verdict (INVALID, unequal work, ...)

_OPS: dict[str, Callable[[float, float], bool]] = {">": operator.gt, ">=": operator.ge, "<": operator.lt,
                                                   "<=": operator.le}
_EXPR = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*(>=|<=|>|<)\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(%?)\s*$")
_FIX = 'write KEY OP CHANGE, e.g. --fail-if "p99_ttft_ms>+5%" or --fail-if "output_throughput<-3%"'


@dataclass(frozen=True)
class Threshold:
    key: str
    op: str
    value: float  # a fraction when relative (+5% -> 0.05), else in the key's unit
    relative: bool
    text: str

    def crossed(self, change: float) -> bool:
        return _OPS[self.op](change, self.value)


def parse_fail_if(expr: str) -> Threshold:
    """One ``--fail-if`` expression; a UserError (one line) when it is not understood."""
    m = _EXPR.match(expr or "")
    if not m:
        raise UserError(f"--fail-if {expr!r} is not an expression", _FIX)
    key, op, number, pct = m.groups()
    try:
        kind = parse_key(key)[0]
    except UserError as exc:
        raise UserError(f"--fail-if {expr!r}: {exc.problem}", exc.fix) from None
    if kind == "distribution":
        raise UserError(f"--fail-if {expr!r}: {key} is a rank test with no size of change",
                        "gate on a statistic instead, e.g. median_ttft_ms>+5%")
    value = float(number)
    return Threshold(key, op, value / 100.0 if pct else value, bool(pct), f"{key}{op}{number}{pct}")


@dataclass
class GateResult:
    threshold: Threshold
    group: str
    status: str  # "fail", "pass", "no verdict"
    change: float | None  # relative (fraction) or absolute, as the threshold
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold.text, "group": self.group, "status": self.status,
                "change": self.change, "text": self.text}


def _fmt_change(t: Threshold, x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x * 100:+.2f}%" if t.relative else f"{x:+.4g}"


def check(t: Threshold, v: Verdict, group: str) -> GateResult:
    if v.verdict == "no verdict":
        return GateResult(t, group, "no verdict", None, f"{t.text}: no verdict: {v.reason}")
    change = v.rel if t.relative else v.diff
    if change is None:
        return GateResult(t, group, "no verdict", None, f"{t.text}: no relative change (A is 0)")
    lo, hi = (v.rel_low, v.rel_high) if t.relative else (v.low, v.high)
    ci = f"{v.confidence * 100:g}% CI {_fmt_change(t, lo)} … {_fmt_change(t, hi)}"
    crossed = t.crossed(change)
    if crossed and v.significant:
        return GateResult(t, group, "fail", change, f"{t.text}: FAIL, {_fmt_change(t, change)} ({ci}), significant")
    if crossed:
        return GateResult(t, group, "pass", change,
                          f"{t.text}: pass, {_fmt_change(t, change)} crosses it but is not significant ({ci})")
    return GateResult(t, group, "pass", change, f"{t.text}: pass, {_fmt_change(t, change)} ({ci})")


def evaluate(thresholds: list[Threshold], comparisons: list[GroupComparison]) -> list[GateResult]:
    out = []
    for comp in comparisons:
        group = comp.name_a if comp.name_a == comp.name_b else f"{comp.name_a} vs {comp.name_b}"
        for t in thresholds:
            v = comp.verdict(t.key)
            if v is not None:
                out.append(check(t, v, group))
    return out


def exit_code(results: list[GateResult], fail_on_no_verdict: bool = False) -> int:
    if any(r.status == "fail" for r in results):
        return EXIT_REGRESSION
    if fail_on_no_verdict and any(r.status == "no verdict" for r in results):
        return EXIT_NO_VERDICT
    return EXIT_OK
