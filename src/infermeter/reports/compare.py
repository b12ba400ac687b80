"""``infermeter compare A B``: is B better, worse, or not significantly different from A?

A *side* is a result JSON file, a store's cell folder, an experiment folder, or a saved
baseline.  Each side's runs are put in *groups* by their coordinates (target, workload,
load); the groups of A and B with the same coordinates are compared (two single runs are
compared whatever their coordinates).  A group's runs are its repeats.

Per group and metric (vLLM's result keys):

* latency statistics (``mean_ttft_ms``, ``p99_itl_ms``, ...): with one run on a side, a
  bootstrap interval of B − A on the per-request samples (the records file, else the
  result's ``ttfts``/``itls`` arrays), resampled by request (metrics/significance.py);
  with 2+ repeats on both sides, Welch's interval over the runs' own values, so that
  run-to-run noise (a busy machine, another tenant) counts;
* each latency's distribution (``ttft_distribution``, ...): the Mann-Whitney rank test on
  one value per request (for ITL, the request's mean gap; repeats pooled);
* throughput: Welch's interval over the repeats when both sides have two or more.

A metric is ``better`` or ``worse`` when its interval excludes 0 (the rank test: p below
1 − confidence), else ``no significant difference``.  Unequal work, an INVALID side,
or missing samples give ``no verdict`` with the reason.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from infermeter.core.notices import Notice
from infermeter.errors import UserError
from infermeter.metrics.significance import (Difference, bootstrap_compare, mann_whitney, point_estimate,
                                             welch_compare)
from infermeter.reports.compare_sides import BLOCKS, FAMILIES, Group, Run, group_samples
from infermeter.reports.data import METRICS, Cell
FAMILY_LABEL = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2E latency"}
THROUGHPUT_KEYS = ("request_throughput", "output_throughput", "total_token_throughput")
# one value per run, judged like throughput (over repeats); in the default keys where a side has them
EFFICIENCY_KEYS = ("output_throughput_per_gpu", "energy_per_output_token_j", "output_tokens_per_joule",
                   "usd_per_million_output_tokens", "usd_per_million_total_tokens")
DEFAULT_STATS = ("mean", "median", "p99")
INFO_KEYS = ("completed", "failed", "duration", "output_tokens_per_request")
LATENCY_KEY = re.compile(r"^(mean|median|std|p\d{1,3}(?:\.\d+)?)_(ttft|tpot|itl|e2el)_ms$")
DISTRIBUTION_KEY = re.compile(r"^(ttft|tpot|itl|e2el)_distribution$")
TIE = 0.01  # output tokens per request differing by more than this fraction: unequal work


# ---------------------------------------------------------------------- keys
def parse_key(key: str) -> tuple[str, str, str]:
    """("latency", family, stat), ("distribution", family, "") or ("throughput", key, "");
    UserError for a key this comparison cannot judge."""
    m = LATENCY_KEY.match(key)
    if m:
        stat = m.group(1)
        if stat.startswith("p") and not 0 < float(stat[1:]) < 100:
            raise UserError(f"{key!r}: percentile {stat[1:]} is outside 0-100", "use e.g. p99_ttft_ms")
        return "latency", m.group(2), stat
    m = DISTRIBUTION_KEY.match(key)
    if m:
        return "distribution", m.group(1), ""
    if key in THROUGHPUT_KEYS or key in EFFICIENCY_KEYS:
        return "throughput", key, ""
    raise UserError(f"unknown metric key {key!r}",
                    "use a vLLM result key: mean_/median_/std_/pNN_ + ttft/tpot/itl/e2el + _ms (e.g. p99_ttft_ms), "
                    f"{', '.join(THROUGHPUT_KEYS)}, or ttft_distribution (the rank test)")


def default_keys() -> list[str]:
    keys = list(THROUGHPUT_KEYS)
    for fam in FAMILIES:
        keys += [f"{s}_{fam}_ms" for s in DEFAULT_STATS] + [f"{fam}_distribution"]
    return keys


def key_label(key: str) -> str:
    kind, fam, stat = parse_key(key)
    if kind == "throughput":
        label, unit, _ = METRICS[fam]
        return f"{label} ({unit})"
    if kind == "distribution":
        return f"{FAMILY_LABEL[fam]} distribution"
    return f"{stat} {FAMILY_LABEL[fam]} (ms)"


# ---------------------------------------------------------------------- reasons for no verdict
def validity_reasons(name: str, run: Run) -> list[str]:
    """An INVALID run's reasons (structured notices or older plain strings)."""
    validity = (run.result.get("infermeter") or {}).get("validity")
    if not isinstance(validity, dict) or validity.get("label") != "INVALID":
        return []
    notices = [Notice.from_dict(r) for r in validity.get("reasons") or [] if isinstance(r, (dict, str))]
    why = "; ".join(n.message for n in notices if n.message) or "no reason recorded"
    return [f"{name} is INVALID ({run.cell.cell_id or run.cell.target}): {why}"]


def work_reasons(a: Group, b: Group) -> list[str]:
    out = []
    for name, g in (("A", a), ("B", b)):
        for r in g.runs:
            work = (r.result.get("infermeter") or {}).get("work") or {}
            if isinstance(work, dict) and work.get("exact") is False:
                made, asked = work.get("produced_output_tokens"), work.get("requested_output_tokens")
                counts = f", {made} tokens produced, {asked} asked" if made is not None and asked is not None else ""
                out.append(f"{name} did unequal work ({r.cell.cell_id or r.cell.target}: outputs not all of the asked "
                           f"length{counts})")
    ta = _mean([c.metrics.get("output_tokens_per_request") for c in a.cells])
    tb = _mean([c.metrics.get("output_tokens_per_request") for c in b.cells])
    if ta is not None and tb is not None and max(ta, tb) > 0 and abs(ta - tb) / max(ta, tb) > TIE:
        out.append(f"unequal work: {ta:.1f} vs {tb:.1f} output tokens per request (rerun with --ignore-eos)")
    return out


def warnings_for(a: Cell, b: Cell) -> list[str]:
    """Soft findings about two runs: client-bound, failed requests, stopped early, unequal work."""
    out = []
    ta, tb = a.metrics.get("output_tokens_per_request"), b.metrics.get("output_tokens_per_request")
    if (ta is not None and tb is not None and max(ta, tb) > 0 and abs(ta - tb) / max(ta, tb) > TIE) \
            or a.unequal_work or b.unequal_work:
        detail = f" ({ta:.1f} vs {tb:.1f} output tokens per request)" if ta is not None and tb is not None else ""
        which = [n for n, c in (("A", a), ("B", b)) if c.unequal_work]
        if which:
            detail += f"; {' and '.join(which)} did not produce the asked output lengths"
        out.append(f"the runs did unequal work{detail}: throughput and latency are not comparable, "
                   "no verdict is given (rerun with --ignore-eos)")
    for n, c in (("A", a), ("B", b)):
        if "client-bound" in c.flags:
            out.append(f"run {n} was client-bound: the client may have limited its numbers")
        if "errors" in c.flags:
            out.append(f"run {n} had {c.metrics.get('failed', 0):.0f} failed requests")
        if c.stopped_early:
            out.append(f"run {n} stopped early: {c.stopped_early}")
    return out


def short_reason(reasons: list[str]) -> str:
    """The group's no-verdict reasons in a few words (the full ones are listed once, with the table)."""
    out = []
    for r in reasons:
        head = r.split(" (", 1)[0].split(":", 1)[0]
        if head not in out:
            out.append(head)
    return "; ".join(out)


def _headline(g: Group, key: str) -> float | None:
    """A result key's value (the mean over the group's runs), None where absent."""
    vals = [r.result.get(key) for r in g.runs]
    return _mean([float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)])


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


# ---------------------------------------------------------------------- verdicts
@dataclass
class Verdict:
    key: str
    label: str
    verdict: str  # "better", "worse", "no significant difference", "no verdict"
    text: str  # the verdict with its interval or reason, one line
    method: str
    confidence: float
    a: float | None = None
    b: float | None = None
    diff: float | None = None
    rel: float | None = None
    low: float | None = None
    high: float | None = None
    rel_low: float | None = None
    rel_high: float | None = None
    p_value: float | None = None
    significant: bool = False
    n_a: int = 0
    n_b: int = 0
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:+.1f}%"


def _from_difference(key: str, d: Difference, higher_better: bool, unit: str) -> Verdict:
    conf = f"{d.confidence * 100:g}%"
    base = dict(key=key, label=key_label(key), method=d.method, confidence=d.confidence, a=d.a, b=d.b, diff=d.diff,
                rel=d.rel, low=d.low, high=d.high, rel_low=d.rel_low, rel_high=d.rel_high, significant=d.significant,
                n_a=d.n_a, n_b=d.n_b)
    if d.low is None or d.high is None:
        why = "too few samples for an interval" if min(d.n_a, d.n_b) < 2 else "no interval"
        return Verdict(verdict="no verdict", text=f"no verdict: {why} ({d.n_a} vs {d.n_b})", reason=why, **base)
    if d.rel_low is not None and d.rel_high is not None:
        ci = f"{conf} CI {_pct(d.rel_low)} … {_pct(d.rel_high)}"
    else:
        ci = f"{conf} CI {d.low:+.4g} … {d.high:+.4g} {unit}".rstrip()
    if not d.significant:
        return Verdict(verdict="no significant difference", text=f"no significant difference ({ci})", **base)
    good = (d.diff > 0) == higher_better
    word = "better" if good else "worse"
    return Verdict(verdict=word, text=f"{word} ({ci})", **base)


def _no_verdict(key: str, reason: str, confidence: float, a: float | None = None, b: float | None = None) -> Verdict:
    diff = b - a if a is not None and b is not None else None
    return Verdict(key, key_label(key), "no verdict", f"no verdict: {reason}", "", confidence, a=a, b=b, diff=diff,
                   rel=diff / a if diff is not None and a else None, reason=reason)


@dataclass
class GroupComparison:
    name_a: str
    name_b: str
    runs_a: int
    runs_b: int
    reasons: list[str]  # why no metric has a verdict (empty: verdicts given)
    verdicts: list[Verdict]
    info: list[tuple[str, float | None, float | None]]  # (key, A, B) without a verdict
    notes: list[str] = field(default_factory=list)

    def verdict(self, key: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.name_a, "b": self.name_b, "runs_a": self.runs_a, "runs_b": self.runs_b,
                "no_verdict_reasons": self.reasons, "notes": self.notes,
                "info": {k: {"a": a, "b": b} for k, a, b in self.info},
                "verdicts": [v.to_dict() for v in self.verdicts]}


def compare_groups(a: Group, b: Group, keys: list[str] | None = None, *, confidence: float = 0.95,
                   n_boot: int = 1000, seed: int = 0, blocks: int = BLOCKS) -> GroupComparison:
    """Every metric of ``keys``.  ``blocks``: blocks of consecutive requests per run that the
    bootstrap resamples (0: single requests, as if they were independent)."""
    if not keys:  # energy and cost where either side measured them (docs/cost.md)
        keys = default_keys() + [k for k in EFFICIENCY_KEYS
                                 if any(c.metrics.get(k) is not None for c in [*a.cells, *b.cells])]
    keys = list(keys)
    parsed = {k: parse_key(k) for k in keys}
    reasons = [x for r in a.runs for x in validity_reasons("A", r)]
    reasons += [x for r in b.runs for x in validity_reasons("B", r)] + work_reasons(a, b)
    sa, sb = group_samples(a, max(blocks, 1)), group_samples(b, max(blocks, 1))
    unit = "request" if blocks <= 0 else f"block ({blocks} blocks of consecutive requests per run)"
    notes = []
    if len(a.runs) >= 2 and len(b.runs) >= 2:
        notes.append(f"latency statistics: Welch over the {len(a.runs)} vs {len(b.runs)} runs' own values (so "
                     "run-to-run noise counts); the rank tests pool the runs' requests")
    elif len(a.runs) > 1 or len(b.runs) > 1:
        notes.append(f"latency: the requests of {len(a.runs)} vs {len(b.runs)} runs pooled per side (repeats on "
                     "both sides would let run-to-run noise count)")
    for name, s in (("A", sa), ("B", sb)):
        if s.source != "records":
            notes.append(f"{name}: per-request samples from the result's ttfts/itls arrays (no records file): "
                         "TPOT and E2E latency have no per-request values")
    info = [(k, _mean([c.metrics.get(k) for c in a.cells]), _mean([c.metrics.get(k) for c in b.cells]))
            for k in INFO_KEYS]
    verdicts: dict[str, Verdict] = {}
    reason = short_reason(reasons)
    # latency statistics: one bootstrap per family for all its statistics
    for fam in FAMILIES:
        stats = sorted({s for k, (kind, f, s) in parsed.items() if kind == "latency" and f == fam},
                       key=lambda s: list(parsed.values()).index(("latency", fam, s)))
        va, vb = sa.values.get(fam), sb.values.get(fam)
        fam_keys = {s: f"{s}_{fam}_ms" for s in stats}
        if va is None or vb is None or va.size == 0 or vb.size == 0:
            missing = "A" if va is None or va.size == 0 else "B"
            for s, k in fam_keys.items():  # the results' own numbers, for reading (no test without samples)
                verdicts[k] = _no_verdict(k, f"no per-request {FAMILY_LABEL[fam]} samples in {missing}", confidence,
                                          _headline(a, k), _headline(b, k))
            continue
        if reason:
            for s, k in fam_keys.items():
                verdicts[k] = _no_verdict(k, reason, confidence, point_estimate(va, s), point_estimate(vb, s))
            continue
        if len(sa.runs) >= 2 and len(sb.runs) >= 2:  # repeats: run-to-run noise is in the spread of runs
            for s, k in fam_keys.items():
                xa = [point_estimate(p.values[fam], s) for p in sa.runs if p.values.get(fam) is not None]
                xb = [point_estimate(p.values[fam], s) for p in sb.runs if p.values.get(fam) is not None]
                d = welch_compare([x for x in xa if x is not None], [x for x in xb if x is not None], confidence,
                                  statistic=f"{s} per run")
                verdicts[k] = _from_difference(k, d, False, "ms")
            continue
        own = (sa.owners, sb.owners) if blocks <= 0 else (sa.blocks, sb.blocks)
        diffs = bootstrap_compare(va, vb, stats, a_owner=own[0][fam], b_owner=own[1][fam],
                                  confidence=confidence, n_boot=n_boot, seed=seed, unit=unit)
        for s, k in fam_keys.items():
            verdicts[k] = _from_difference(k, diffs[s], False, "ms")
    # distributions: the rank test on one value per request
    for k, (kind, fam, _) in parsed.items():
        if kind != "distribution":
            continue
        ra, rb = sa.per_request(fam), sb.per_request(fam)
        if reason:
            verdicts[k] = _no_verdict(k, reason, confidence)
            continue
        test = (mann_whitney(ra, rb) if blocks <= 0 else
                mann_whitney(ra, rb, sa.request_blocks(fam), sb.request_blocks(fam)))
        if test is None:
            verdicts[k] = _no_verdict(k, f"no {FAMILY_LABEL[fam]} samples in {'A' if ra.size == 0 else 'B'}",
                                      confidence)
            continue
        alpha = 1.0 - confidence
        what = "per-request mean ITL" if fam == "itl" else "per request"
        method = f"{test.method}, {what}"
        base = dict(key=k, label=key_label(k), method=method, confidence=confidence, p_value=test.p_value,
                    significant=test.p_value < alpha, n_a=test.n_a, n_b=test.n_b,
                    a=float(np.median(ra)), b=float(np.median(rb)))
        detail = f"P(B<A) {test.prob_b_lower:.2f}, p={test.p_value:.2g}"
        if test.p_value >= alpha:
            verdicts[k] = Verdict(verdict="no significant difference",
                                  text=f"no significant difference ({detail}, α={alpha:g})", **base)
        else:
            word = "better" if test.prob_b_lower > 0.5 else "worse"
            verdicts[k] = Verdict(verdict=word, text=f"{word} ({detail})", **base)
    # throughput: over repeats
    for k, (kind, key, _) in parsed.items():
        if kind != "throughput":
            continue
        xa = [c.metrics.get(key) for c in a.cells if c.metrics.get(key) is not None]
        xb = [c.metrics.get(key) for c in b.cells if c.metrics.get(key) is not None]
        if reason:
            verdicts[k] = _no_verdict(k, reason, confidence, _mean(xa), _mean(xb))
        elif key in EFFICIENCY_KEYS and (not xa or not xb):
            side, g = ("A", a) if not xa else ("B", b)
            verdicts[k] = _no_verdict(k, f"n/a in {side}: {_efficiency_reason(g, key)}", confidence,
                                      _mean(xa), _mean(xb))
        elif len(xa) < 2 or len(xb) < 2:
            verdicts[k] = _no_verdict(k, f"{len(xa)} vs {len(xb)} runs (throughput needs 2+ repeats per side)",
                                      confidence, _mean(xa), _mean(xb))
        else:
            verdicts[k] = _from_difference(k, welch_compare(xa, xb, confidence), METRICS[key][2], METRICS[key][1])
    return GroupComparison(a.name, b.name, len(a.runs), len(b.runs), reasons, [verdicts[k] for k in keys],
                           info, notes)


def _efficiency_reason(g: Group, key: str) -> str:
    """Why a group's runs have no value for an efficiency figure (their own recorded reason)."""
    group = ("per_gpu" if key.endswith("per_gpu") else "cost" if key.startswith("usd") else "energy")
    for r in g.runs:
        block = (r.result.get("infermeter") or {}).get("efficiency")
        if isinstance(block, dict) and (block.get("reasons") or {}).get(group):
            return str(block["reasons"][group])
    return "not measured"
