"""VALID / INVALID: can a run's numbers be trusted, and if not, why (docs/validity.md).

``assess(result, records, options)`` reads a finished result dict (and, when
given, the measured request records for confidence intervals and the warm-up
check) and returns ``{"label", "reasons", "notes", "client_error_bound_pct",
"confidence", "warmup_check", "rules"}``.  ``reasons`` (defects of the
measurement) invalidate; ``notes`` are findings that do not.  Both are notice
dicts (``core.notices.Notice``): programs match their ``code``.

INVALID is for defects of the measurement only: unequal work, server counts
that disagree with what was received, a client whose possible error is past
its tolerance, errors, no success, an early stop, a run shorter than asked,
a cold start.  Too few samples for a percentile is not a defect: that
percentile is null (``unsupported_percentiles``) and a ``too-few-samples``
note says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from infermeter.core.notices import Notice, as_notice
from infermeter.core.records import RequestRecord
from infermeter.core.samplecolumn import SampleColumn
from infermeter.load.monitor import CLIENT_ERROR_TOLERANCE_PCT
from infermeter.metrics.confidence import mean_ci, percentile_ci
from infermeter.metrics.stats import min_samples_for, pct_label

VALID = "VALID"
INVALID = "INVALID"


@dataclass(frozen=True)
class ValidityOptions:
    max_error_rate: float = 0.01  # failed / (completed + failed) above this invalidates
    min_duration_s: float = 0.0  # runs shorter than this invalidate (0 = off)
    confidence: float = 0.95  # level of the reported intervals
    warmup_min_requests: int = 20  # the warm-up check looks at runs of at least this many requests
    warmup_head_fraction: float = 0.05  # "first requests" = this fraction (at least 3)
    warmup_outlier_factor: float = 2.0  # head median TTFT above this x the rest's median = outlier
    client_error_tolerance_pct: float = CLIENT_ERROR_TOLERANCE_PCT  # client's possible TTFT/ITL error past this invalidates


#: Codes whose defect makes every latency of the run untrustworthy (capacity: fails every SLO).
ALL_METRICS = ("ttft", "tpot", "itl", "e2el")
_BEARS_ON_ALL = {"unequal-work", "server-count-mismatch", "no-success", "error-rate", "stopped-early",
                 "run-too-short"}


def bears_on(notice: Notice | dict | str) -> set[str]:
    """The metrics a validity reason makes untrustworthy (by its code and figures).

    Unequal work, wrong token counts, errors, no success, an early stop and a
    short run bear on every metric; client-bound on the metrics whose possible
    error is past the tolerance (TTFT error: ttft and e2el; ITL error: itl and
    tpot); a cold start on ttft and e2el.  An unknown code (an older result's
    plain text) bears on every metric: when unsure, do not trust."""
    n = as_notice(notice)
    if n.code in _BEARS_ON_ALL or n.code == "note":
        return set(ALL_METRICS)
    if n.code == "client-bound":
        over = set(n.figures.get("over") or ["ttft", "itl"])
        return ({"ttft", "e2el"} if "ttft" in over else set()) | ({"itl", "tpot"} if "itl" in over else set())
    if n.code == "cold-start":
        return {"ttft", "e2el"}
    return set(ALL_METRICS)


def has_success(result: dict) -> bool:
    """Did any measured request of this result succeed?  (A result without one is a failed run:
    no latency of it exists, and a sweep marks its cell failed.)"""
    return int(result.get("completed") or 0) > 0


def _samples(records: Iterable[RequestRecord]) -> dict[str, SampleColumn]:
    """The measured, successful requests' samples in milliseconds, one pass (columns spill to disk)."""
    out = {name: SampleColumn() for name in ALL_METRICS}
    for r in records:
        if not r.ok or r.warmup:
            continue
        if (ttft := r.ttft) is not None:
            out["ttft"].append(ttft * 1e3)
        if (tpot := r.tpot) is not None:
            out["tpot"].append(tpot * 1e3)
        if len(r.token_times) > 1:
            out["itl"].extend([g * 1e3 for g in r.itls])
        if (e2el := r.e2el) is not None:
            out["e2el"].append(e2el * 1e3)
    return out


def confidence_section(records: Iterable[RequestRecord], metrics: Sequence[str], percentiles: Sequence[float],
                       confidence: float = 0.95) -> dict[str, Any]:
    """Per metric: the mean's t-interval and each percentile's order-statistic interval (ms)."""
    samples = _samples(records)
    out: dict[str, Any] = {}
    try:
        for name in metrics:
            values = samples.get(name) or SampleColumn()
            entry: dict[str, Any] = {"n": len(values), "mean": mean_ci(values, confidence)}
            for p in percentiles:
                entry[f"p{pct_label(p)}"] = percentile_ci(values, p, confidence)
            out[name] = entry
    finally:
        for column in samples.values():
            column.close()
    return out


def warmup_outlier(records: Iterable[RequestRecord], opts: ValidityOptions) -> dict | None:
    """Median TTFT of the first requests (by send time) vs the rest; None when not checkable.

    Three passes, none keeping a record: the send time that ends the head (an order
    statistic), then the two medians."""
    def timed() -> Iterable[RequestRecord]:
        return (r for r in records if r.ok and not r.warmup and r.ttft is not None and r.sent is not None)

    with SampleColumn() as sent:
        sent.extend(r.sent for r in timed())
        n = len(sent)
        if n < opts.warmup_min_requests:
            return None
        head_n = max(3, int(round(n * opts.warmup_head_fraction)))
        cut = sent.order_stat(head_n - 1)  # the head: the head_n first sends (ties at the cut: by order)
        below = 0
        for chunk in sent.chunks():
            below += int(np.count_nonzero(chunk < cut))
    take_at_cut = head_n - below  # how many of the sends at exactly `cut` belong to the head
    with SampleColumn() as head_col, SampleColumn() as rest_col:
        for r in timed():
            if r.sent < cut or (r.sent == cut and take_at_cut > 0):
                if r.sent == cut:
                    take_at_cut -= 1
                head_col.append(r.ttft)
            else:
                rest_col.append(r.ttft)
        head, rest = head_col.median() * 1e3, rest_col.median() * 1e3
    return {"head_requests": head_n, "head_median_ttft_ms": head, "rest_median_ttft_ms": rest,
            "outlier": rest > 0 and head > opts.warmup_outlier_factor * rest}


def _client_verdict(result: dict, opts: ValidityOptions) -> tuple[dict[str, float | None], Notice | None, Notice | None]:
    """The client's possible error of TTFT and ITL (% of their means), and the reasons it gives."""
    im = result.get("infermeter", {})
    client = im.get("client") or {}
    bounds = client.get("client_error_bound_pct")
    if bounds is None and "loop_lag_mean_ms" in client:  # a result written before the bound was stored
        lag = float(client["loop_lag_mean_ms"])
        spread = client.get("loop_lag_spread_ms")
        spread = lag if spread is None else float(spread)
        ttft, itl = result.get("mean_ttft_ms"), result.get("mean_itl_ms")
        bounds = {"ttft": 100.0 * lag / ttft if ttft else None, "itl": 100.0 * spread / itl if itl else None}
    cpu = None
    busy = client.get("cpu_busy")
    if busy or (busy is None and float(client.get("cpu_utilization") or 0.0) > 0.9):
        cpu = Notice("client-cpu-busy", f"the client process used {100 * float(client.get('cpu_utilization') or 0):.0f}% "
                     "of a core: it is near its limit (the error bounds say what that cost)",
                     {"cpu_utilization": client.get("cpu_utilization")})
    if bounds is None:  # no figures at all: only the verdict the result carries
        if client.get("client_bound"):
            why = "; ".join(client.get("reasons") or []) or "the client could not keep up"
            return {"ttft": None, "itl": None}, Notice("client-bound", f"client-bound: {why}", {"over": list(ALL_METRICS)}), cpu
        return {"ttft": None, "itl": None}, None, cpu
    tol = opts.client_error_tolerance_pct
    over = [k for k in ("ttft", "itl") if bounds.get(k) is not None and bounds[k] > tol]
    if not over:
        return bounds, None, cpu
    parts = [f"{k.upper()} may be off by up to {bounds[k]:.1f}%" for k in over]
    lag = client.get("loop_lag_mean_ms")
    lag_text = f" (event-loop lag mean {lag:.3f} ms)" if isinstance(lag, (int, float)) else ""
    return bounds, Notice("client-bound", f"client-bound: {', '.join(parts)}, past the tolerance of {tol:g}%{lag_text}",
                          {"over": over, "error_bound_pct": bounds, "tolerance_pct": tol}), cpu


def assess(result: dict, records: Sequence[RequestRecord] | None = None,
           options: ValidityOptions | None = None) -> dict[str, Any]:
    opts = options or ValidityOptions()
    im = result.get("infermeter", {})
    reasons: list[Notice] = []
    notes: list[Notice] = []

    work = im.get("work") or {}
    if work.get("requests_checked") and work.get("exact") is False:
        fig = {k: work.get(k) for k in ("shorter_than_asked", "longer_than_asked", "produced_output_tokens",
                                        "requested_output_tokens")}
        reasons.append(Notice("unequal-work", f"unequal work: {work.get('shorter_than_asked', 0)} shorter and "
                              f"{work.get('longer_than_asked', 0)} longer than the output length asked "
                              f"({work.get('produced_output_tokens')} tokens produced, "
                              f"{work.get('requested_output_tokens')} asked)", fig))
    check = work.get("token_count_crosscheck") or {}
    if check.get("mismatched"):
        ex = (check.get("examples") or [{}])[0]
        first = (f"; e.g. request {ex['index']}: server {ex['server']}, received {ex['received']}"
                 if "index" in ex else "")
        reasons.append(Notice(
            "server-count-mismatch",
            f"server token counts disagree with what was received: {check['mismatched']} of {check['checked']} "
            f"requests beyond the tolerance{first}; the counts received were used",
            {k: check.get(k) for k in ("checked", "mismatched", "server_output_tokens", "used_output_tokens",
                                       "count_used", "tolerance", "examples")}))

    counts = im.get("sample_counts") or {}
    reported = im.get("percentile_metrics") or list(counts)
    for name, ps in (im.get("unsupported_percentiles") or {}).items():
        if ps and name in reported:
            n = counts.get(name, 0)
            need = {p: min_samples_for(float(p)) for p in ps}
            notes.append(Notice("too-few-samples", f"{name}: p{', p'.join(ps)} n/a (n = {n}): "
                                + ", ".join(f"p{p} needs {k}" for p, k in need.items()),
                                {"metric": name, "percentiles": list(ps), "n": n, "needed": need}))

    bounds, client_reason, cpu_note = _client_verdict(result, opts)
    if client_reason is not None:
        reasons.append(client_reason)
    if cpu_note is not None:
        notes.append(cpu_note)

    completed, failed = int(result.get("completed") or 0), int(result.get("failed") or 0)
    total = completed + failed
    if completed == 0:
        reasons.append(Notice("no-success", f"no request succeeded ({failed} failed): the run has no latency",
                              {"completed": 0, "failed": failed, "errors_by_class": im.get("errors_by_class") or {}}))
    elif failed / total > opts.max_error_rate:
        by_class = im.get("errors_by_class") or {}
        classes = ", ".join(f"{k} {v}" for k, v in sorted(by_class.items()))
        reasons.append(Notice("error-rate", f"error rate {100 * failed / total:.1f}% above {100 * opts.max_error_rate:g}% "
                              f"({failed} of {total} failed{': ' + classes if classes else ''})",
                              {"failed": failed, "total": total, "limit": opts.max_error_rate, "errors_by_class": by_class}))

    if im.get("stopped_early"):
        reasons.append(Notice("stopped-early", f"stopped early: {im['stopped_early']}", {"why": im["stopped_early"]}))

    duration = float(result.get("duration") or 0.0)
    if opts.min_duration_s > 0 and duration < opts.min_duration_s:
        reasons.append(Notice("run-too-short", f"run lasted {duration:.2f} s, shorter than its minimum of "
                              f"{opts.min_duration_s:g} s", {"duration_s": duration, "min_duration_s": opts.min_duration_s}))

    load = im.get("load") or {}
    warm = None
    if load.get("mode") in ("rate", "concurrency") and not im.get("warmup_requests"):
        warm = warmup_outlier(records, opts) if records is not None else None
        if warm is not None and warm["outlier"]:
            reasons.append(Notice("cold-start", f"no warm-up, and the first {warm['head_requests']} requests' median TTFT "
                                  f"({warm['head_median_ttft_ms']:.1f} ms) is over {opts.warmup_outlier_factor:g}x the "
                                  f"rest's ({warm['rest_median_ttft_ms']:.1f} ms): cold-start effects are in the numbers",
                                  dict(warm)))
        elif completed >= opts.warmup_min_requests:
            notes.append(Notice("no-warmup", "no warm-up requests (--warmup-requests 0); the first requests' TTFT "
                                "is not an outlier"))

    untimed = int(im.get("untimed_requests") or 0)
    if untimed:
        notes.append(Notice("not-streamed", f"{untimed} answers came whole (one event, as without streaming): "
                            "TPOT and ITL cannot be measured for them and are absent, never 0; their TTFT is the "
                            "whole answer's time", {"requests": untimed}))
    unjudged = {k: v for k, v in ((im.get("goodput") or {}).get("unjudged") or {}).items() if v}
    if unjudged:
        notes.append(Notice("goodput-unjudged", "goodput: " + ", ".join(
            f"the {k} SLO could not be judged for {v} requests (not timed) and was left out" for k, v in unjudged.items()),
            {"unjudged": unjudged}))

    conf: dict[str, Any] = {}
    if records is not None:
        conf = confidence_section(records, reported, im.get("percentiles") or [], opts.confidence)
        for name, entry in conf.items():
            weak = [k for k, v in entry.items() if k.startswith("p") and isinstance(v, dict) and not v["supported"]]
            if weak and entry["n"]:
                notes.append(Notice("percentile-unbounded", f"{name}: {', '.join(weak)} have no "
                                    f"{100 * opts.confidence:g}% upper confidence bound within the {entry['n']} samples",
                                    {"metric": name, "percentiles": weak, "n": entry["n"], "confidence": opts.confidence}))

    return {"label": INVALID if reasons else VALID, "reasons": [r.to_dict() for r in reasons],
            "notes": [n.to_dict() for n in notes], "client_error_bound_pct": bounds,
            "client_error_tolerance_pct": opts.client_error_tolerance_pct,
            "confidence": conf, "warmup_check": warm, "rules": asdict(opts)}
