"""SLO capacity search: the largest request rate (or concurrency) whose runs meet
every SLO with the chosen confidence (docs/validity.md, "Capacity search").

Each probe is one ``execute_run``.  Each SLO "METRIC_pP <= X ms" of a probe is
``met`` when MLPerf LoadGen's early-stopping rule supports the claim from its
samples (failed requests count as samples over every bound), ``missed`` when
more than (100 - P) % of the samples are over X (the observed percentile is
over the limit), and ``unproven`` otherwise (within the limit, but too few
samples to claim it at the confidence).  A probe **passes** when every SLO is
met and no validity reason bears on an SLO's metric (``validity.bears_on``:
unequal work, wrong token counts, errors, an early stop bear on all; a client
whose possible ITL error is past its tolerance bears on itl and tpot, not on
ttft); it **fails** when an SLO is missed or such a reason holds; else it is
**unproven**.  Reasons that bear on no SLO are shown beside the answer.

The search brackets the answer between a passing low and a failing (or
unproven) high load and bisects until the bracket is narrower than ``rel_tol``
of the passing load, or ``max_runs`` runs.  It says "below the lowest load"
only when the lowest load failed; an unproven lowest load is said as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from infermeter.errors import UserError
from infermeter.core.notices import as_notice
from infermeter.metrics.confidence import early_stopping_supports, min_samples_for_claim
from infermeter.metrics.validity import ValidityOptions, assess, bears_on
from infermeter.core.records import RequestRecord
from infermeter.runner.spec import RunSpec

SLO_METRICS = ("ttft", "tpot", "itl", "e2el")
PER_REQUEST = ("ttft", "tpot", "e2el")  # one sample per request (itl: one per gap)

PRESETS: dict[str, str] = {
    "mlperf-llama3.1-405b": "ttft_p99<=6000,tpot_p99<=175",
    "mlperf-llama3.1-405b-interactive": "ttft_p99<=4500,tpot_p99<=80",
}


@dataclass(frozen=True)
class SLOTarget:
    metric: str
    percentile: float
    limit_ms: float

    @property
    def label(self) -> str:
        return f"{self.metric}_p{self.percentile:g}<={self.limit_ms:g}"


def parse_slos(text: str) -> list[SLOTarget]:
    """``"ttft_p99<=6000,tpot_p99<=175"`` (milliseconds) or a preset name."""
    text = PRESETS.get(text.strip(), text)
    out: list[SLOTarget] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        name, sep, limit = part.partition("<=")
        metric, _, pct = name.partition("_p")
        hint = f"write e.g. --slo 'ttft_p99<=6000,tpot_p99<=175' (ms) or a preset: {', '.join(PRESETS)}"
        if not sep or metric not in SLO_METRICS or not pct:
            raise UserError(f"--slo {part!r} is not METRIC_pNN<=MS", hint)
        try:
            p, lim = float(pct), float(limit)
        except ValueError:
            raise UserError(f"--slo {part!r}: percentile and limit must be numbers", hint) from None
        if not 0 < p < 100 or not lim > 0:
            raise UserError(f"--slo {part!r}: percentile must be in (0, 100) and the limit positive", hint)
        out.append(SLOTarget(metric, p, lim))
    if not out:
        raise UserError("--slo names no SLO", "write e.g. --slo 'ttft_p99<=6000'")
    return out


def _metric_samples(records: Sequence[RequestRecord], metric: str) -> list[float]:
    ok = [r for r in records if r.ok and not r.warmup]
    if metric == "itl":
        return [g * 1e3 for r in ok for g in r.itls]
    values = (getattr(r, metric) for r in ok)
    return [v * 1e3 for v in values if v is not None]


def evaluate_slos(records: Sequence[RequestRecord], slos: Sequence[SLOTarget], confidence: float) -> list[dict]:
    failed = sum(1 for r in records if not r.ok and not r.warmup)
    out = []
    for slo in slos:
        x = np.asarray(_metric_samples(records, slo.metric))
        n = int(x.size) + failed
        k = int((x > slo.limit_ms).sum()) + failed
        supported, allowed = early_stopping_supports(n, k, slo.percentile, confidence)
        over_share = k / n if n else 1.0
        status = "met" if supported else ("missed" if over_share > 1 - slo.percentile / 100 else "unproven")
        out.append({"slo": slo.label, "metric": slo.metric, "percentile": slo.percentile,
                    "limit_ms": slo.limit_ms, "value_ms": float(np.percentile(x, slo.percentile)) if x.size else None,
                    "n": n, "over_limit": k, "max_over_allowed": allowed, "met": supported, "status": status,
                    "min_samples": min_samples_for_claim(slo.percentile, confidence)})
    return out


def check_sample_size(slos: Sequence[SLOTarget], num_prompts: int, confidence: float) -> None:
    """Refuse a search whose probes are too small to ever support an SLO claim."""
    for slo in slos:
        need = min_samples_for_claim(slo.percentile, confidence)
        if slo.metric in PER_REQUEST and num_prompts < need:
            raise UserError(
                f"--num-prompts {num_prompts} cannot support {slo.label} at {100 * confidence:g}% confidence: "
                f"even with no request over the limit, {need} requests per probe are needed",
                f"pass --num-prompts {need} or more, or a lower --confidence")


def steady_state(records: Sequence[RequestRecord], windows: int = 20) -> dict[str, Any]:
    """Warm-up, steady and cool-down windows of a rate run, from its in-flight count.

    Rule: average the number of requests in flight over each of ``windows``
    equal windows of the send phase (first to last send).  The reference level is the
    median over the second half of the send phase; steady state starts at the
    first window that reaches 80 % of it (warm-up before), and ends at the last
    send (cool-down after, while the in-flight requests drain).  The load is
    ``stable`` unless the in-flight count grows, over the second half of the
    send phase (least-squares line through the samples), by more than one
    request and 25 % of the reference level (a queue that keeps growing: the
    server is past its capacity).
    """
    recs = [r for r in records if not r.warmup and r.sent is not None and r.end is not None]
    if len(recs) < 4:
        return {"checked": False}
    sent = np.array([r.sent for r in recs])
    end = np.array([r.end for r in recs])
    t0, t_send, t_end = float(sent.min()), float(sent.max()), float(end.max())
    span = t_send - t0
    if span <= 0:
        return {"checked": False}
    times = t0 + span * (np.arange(windows) + 0.5) / windows
    edges = t0 + span * np.arange(windows + 1) / windows
    # time-averaged in-flight count over each window (no aliasing with the arrival spacing)
    in_flight = np.array([float(np.clip(np.minimum(end, b) - np.maximum(sent, a), 0, None).sum()) / (b - a)
                          for a, b in zip(edges[:-1], edges[1:])])
    ref = float(np.median(in_flight[windows // 2:]))
    reach = np.nonzero(in_flight >= 0.8 * ref)[0]
    start = float(times[reach[0]]) if reach.size else t0
    if reach.size and reach[0] == 0:
        start = t0
    half = times[windows // 2:]
    growth = float(np.polyfit(half - half[0], in_flight[windows // 2:], 1)[0]) * (span / 2)
    done = int(((end >= start) & (end <= t_send)).sum())
    steady_len = t_send - start
    return {
        "checked": True,
        "warmup_s": start - t0,
        "steady_s": steady_len,
        "cooldown_s": t_end - t_send,
        "steady_in_flight": ref,
        "steady_throughput": done / steady_len if steady_len > 0 else None,
        "in_flight_growth": growth,
        "stable": growth <= max(1.0, 0.25 * ref),
        "in_flight_windows": [round(float(v), 3) for v in in_flight],
    }


@dataclass
class Probe:
    load: float
    slos: list[dict]
    outcome: str  # pass | fail | unproven
    label: str
    reasons: list[dict]  # every validity reason (notice dicts)
    request_throughput: float | None
    steady: dict[str, Any] = field(default_factory=dict)
    result_path: str | None = None
    blocking: list[dict] = field(default_factory=list)  # the reasons that bear on an SLO's metric

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"load": self.load, "passed": self.passed, "outcome": self.outcome, "validity": self.label,
                "reasons": self.reasons, "blocking": self.blocking,
                "request_throughput": self.request_throughput, "slos": self.slos, "steady_state": self.steady,
                "result_path": self.result_path}


def _records(report) -> list[RequestRecord]:
    from infermeter.storage.files import read_records

    return [r for r in read_records(report.records_path) if not r.warmup]


def probe(base: RunSpec, vary: str, load: float, slos: Sequence[SLOTarget], confidence: float,
          validity: ValidityOptions, run: Callable[[RunSpec], Any]) -> Probe:
    if vary == "rate":
        update: dict[str, Any] = {"request_rate": float(load)}
        tag = f"rate{load:g}"
    else:
        update = {"max_concurrency": int(load), "request_rate": math.inf, "arrival": None}
        tag = f"concurrency{int(load)}"
    update.update(result_filename=f"capacity-{tag}.json", if_exists="next")  # never over an earlier search
    report = run(base.replace(**update))
    records = _records(report)
    checks = evaluate_slos(records, slos, confidence)
    verdict = assess(report.result, records, validity)
    metrics = {s.metric for s in slos}
    blocking = [r for r in verdict["reasons"] if bears_on(r) & metrics]
    if blocking or any(c["status"] == "missed" for c in checks):
        outcome = "fail"
    elif all(c["status"] == "met" for c in checks):
        outcome = "pass"
    else:
        outcome = "unproven"
    steady = steady_state(records) if vary == "rate" else {}
    tput = report.result.get("request_throughput")
    return Probe(load, checks, outcome, verdict["label"], [as_notice(r).to_dict() for r in verdict["reasons"]],
                 None if tput is None else float(tput), steady, str(report.result_path),
                 [as_notice(r).to_dict() for r in blocking])


def search_capacity(base: RunSpec, slos: Sequence[SLOTarget], *, vary: str = "rate", low: float = 1.0,
                    high: float = 64.0, confidence: float = 0.99, max_runs: int = 10, rel_tol: float = 0.02,
                    validity: ValidityOptions | None = None, run: Callable[[RunSpec], Any] | None = None,
                    log: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Bisect between ``low`` and ``high`` for the largest load that passes."""
    if vary not in ("rate", "concurrency"):
        raise UserError(f"--vary {vary!r} is not known", "use rate or concurrency")
    if not 0 < low < high:
        raise UserError(f"--low {low:g} and --high {high:g} must satisfy 0 < low < high", "pass e.g. --low 1 --high 64")
    if max_runs < 2:
        raise UserError(f"--max-runs {max_runs} must be at least 2", "pass e.g. --max-runs 10")
    if run is None:
        from infermeter.runner.execute import execute_run as run
    check_sample_size(slos, base.load.num_prompts, confidence)
    validity = validity or ValidityOptions()
    integer = vary == "concurrency"
    if integer:
        low, high = float(max(1, int(low))), float(max(int(low) + 1, int(high)))
    points: list[Probe] = []

    def measure(load: float) -> Probe:
        p = probe(base, vary, load, slos, confidence, validity, run)
        log(f"{vary} {load:g}: {p.outcome if p.outcome != 'fail' else 'FAIL'} ({p.label}); "
            + ", ".join(f"{c['slo']}: {c['value_ms']} ({c['status']})" for c in p.slos))
        points.append(p)
        return p

    status = "found"
    lo_p = measure(low)
    if not lo_p.passed:
        # "below the lowest load" only when it failed; an unproven lowest load met its SLOs on the
        # samples it had, which could not support the claim at this confidence
        status = "below-low" if lo_p.outcome == "fail" else "unproven-low"
        lo, hi = None, low
    else:
        hi_p = measure(high)
        if hi_p.passed:
            status = "at-least-high"
            lo, hi = high, None
        else:
            lo, hi = low, high
            while len(points) < max_runs:
                if integer:
                    if hi - lo <= 1:
                        break
                    mid = float((int(lo) + int(hi)) // 2)
                else:
                    if (hi - lo) <= rel_tol * lo:
                        break
                    mid = (lo + hi) / 2
                if measure(mid).passed:
                    lo = mid
                else:
                    hi = mid
    answer = lo
    best = next((p for p in points if p.load == answer), None)
    shown = best or lo_p  # the reasons beside the answer: the answer run's, else the lowest load's
    return {
        "vary": vary,
        "slos": [s.label for s in slos],
        "confidence": confidence,
        "status": status,
        "capacity": answer,
        "first_failing": hi,
        "bracket_relative_width": (hi - lo) / lo if lo and hi else None,
        "answer_validity": best.label if best else None,
        "answer_reasons": [r for r in shown.reasons if r not in shown.blocking],  # shown, but bear on no SLO
        "low_outcome": lo_p.outcome,
        "low_blocking": lo_p.blocking,
        "runs": len(points),
        "curve": [p.to_dict() for p in sorted(points, key=lambda p: p.load)],
    }
