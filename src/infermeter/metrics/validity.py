"""VALID / INVALID: can a run's numbers be trusted, and if not, why (docs/validity.md).

``assess(result, records, options)`` reads a finished result dict (and, when
given, the measured request records for confidence intervals and the warm-up
check) and returns ``{"label", "reasons", "notes", "confidence", "rules"}``.
``reasons`` invalidate; ``notes`` are soft findings that do not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from infermeter.metrics.confidence import mean_ci, percentile_ci
from infermeter.metrics.stats import pct_label
from infermeter.core.records import RequestRecord

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


def _samples(records: Sequence[RequestRecord]) -> dict[str, list[float]]:
    ok = [r for r in records if r.ok and not r.warmup]
    return {
        "ttft": [r.ttft * 1e3 for r in ok if r.ttft is not None],
        "tpot": [r.tpot * 1e3 for r in ok if r.tpot is not None],
        "itl": [g * 1e3 for r in ok for g in r.itls],
        "e2el": [r.e2el * 1e3 for r in ok if r.e2el is not None],
    }


def confidence_section(records: Sequence[RequestRecord], metrics: Sequence[str], percentiles: Sequence[float],
                       confidence: float = 0.95) -> dict[str, Any]:
    """Per metric: the mean's t-interval and each percentile's order-statistic interval (ms)."""
    samples = _samples(records)
    out: dict[str, Any] = {}
    for name in metrics:
        values = samples.get(name, [])
        entry: dict[str, Any] = {"n": len(values), "mean": mean_ci(values, confidence)}
        for p in percentiles:
            entry[f"p{pct_label(p)}"] = percentile_ci(values, p, confidence)
        out[name] = entry
    return out


def warmup_outlier(records: Sequence[RequestRecord], opts: ValidityOptions) -> dict | None:
    """Median TTFT of the first requests (by send time) vs the rest; None when not checkable."""
    ok = sorted((r for r in records if r.ok and not r.warmup and r.ttft is not None and r.sent is not None),
                key=lambda r: r.sent)
    if len(ok) < opts.warmup_min_requests:
        return None
    head_n = max(3, int(round(len(ok) * opts.warmup_head_fraction)))
    head = float(np.median([r.ttft for r in ok[:head_n]])) * 1e3
    rest = float(np.median([r.ttft for r in ok[head_n:]])) * 1e3
    return {"head_requests": head_n, "head_median_ttft_ms": head, "rest_median_ttft_ms": rest,
            "outlier": rest > 0 and head > opts.warmup_outlier_factor * rest}


def assess(result: dict, records: Sequence[RequestRecord] | None = None,
           options: ValidityOptions | None = None) -> dict[str, Any]:
    opts = options or ValidityOptions()
    im = result.get("infermeter", {})
    reasons: list[str] = []
    notes: list[str] = []

    work = im.get("work") or {}
    if work.get("requests_checked") and work.get("exact") is False:
        reasons.append(f"unequal work: {work.get('shorter_than_asked', 0)} shorter and "
                       f"{work.get('longer_than_asked', 0)} longer than the output length asked "
                       f"({work.get('produced_output_tokens')} tokens produced, "
                       f"{work.get('requested_output_tokens')} asked)")

    counts = im.get("sample_counts") or {}
    reported = im.get("percentile_metrics") or list(counts)
    for name, ps in (im.get("unsupported_percentiles") or {}).items():
        if ps and name in reported:
            reasons.append(f"too few samples: {name} p{', p'.join(ps)} from {counts.get(name, 0)} samples")

    client = im.get("client") or {}
    if client.get("client_bound"):
        reasons.append("client-bound: " + ("; ".join(client.get("reasons") or []) or "the client could not keep up"))

    completed, failed = int(result.get("completed") or 0), int(result.get("failed") or 0)
    total = completed + failed
    if total == 0:
        reasons.append("no request completed")
    elif failed / total > opts.max_error_rate:
        classes = ", ".join(f"{k} {v}" for k, v in sorted((im.get("errors_by_class") or {}).items()))
        reasons.append(f"error rate {100 * failed / total:.1f}% above {100 * opts.max_error_rate:g}% "
                       f"({failed} of {total} failed{': ' + classes if classes else ''})")

    if im.get("stopped_early"):
        reasons.append(f"stopped early: {im['stopped_early']}")

    duration = float(result.get("duration") or 0.0)
    if opts.min_duration_s > 0 and duration < opts.min_duration_s:
        reasons.append(f"run lasted {duration:.2f} s, shorter than its minimum of {opts.min_duration_s:g} s")

    load = im.get("load") or {}
    warm = None
    if load.get("mode") in ("rate", "concurrency") and not im.get("warmup_requests"):
        warm = warmup_outlier(records, opts) if records is not None else None
        if warm is not None and warm["outlier"]:
            reasons.append(f"no warm-up, and the first {warm['head_requests']} requests' median TTFT "
                           f"({warm['head_median_ttft_ms']:.1f} ms) is over {opts.warmup_outlier_factor:g}x the "
                           f"rest's ({warm['rest_median_ttft_ms']:.1f} ms): cold-start effects are in the numbers")
        elif completed >= opts.warmup_min_requests:
            notes.append("no warm-up requests (--warmup-requests 0); the first requests' TTFT is not an outlier")

    conf: dict[str, Any] = {}
    if records is not None:
        conf = confidence_section(records, reported, im.get("percentiles") or [], opts.confidence)
        for name, entry in conf.items():
            weak = [k for k, v in entry.items() if k.startswith("p") and isinstance(v, dict) and not v["supported"]]
            if weak and entry["n"]:
                notes.append(f"{name}: {', '.join(weak)} have no {100 * opts.confidence:g}% upper confidence "
                             f"bound within the {entry['n']} samples")

    return {"label": INVALID if reasons else VALID, "reasons": reasons, "notes": notes,
            "confidence": conf, "warmup_check": warm, "rules": asdict(opts)}
