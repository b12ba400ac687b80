"""The run result: vLLM's keys first, so tools that read vLLM results read ours,
then infermeter's own section (load, work, client, provenance, warnings).

vLLM's keys follow ``vllm bench serve`` (vllm/benchmarks/serve.py, see docs/cli.md
for the version): ``endpoint_type``, ``label``, ``request_goodput`` (null without
``--goodput``), the per-request lists (``latencies``, ``start_times``;
``generated_texts`` with ``--save-detailed``), ``max_output_tokens_per_s``,
``max_concurrent_requests``, and mean/median/std/percentile keys only for the
metrics ``--percentile-metrics`` selects.  Where vLLM's client defines a metric
differently, ``infermeter.vllm_definitions`` holds its value beside ours."""

from __future__ import annotations

import math
import platform
from collections import Counter
import socket
import sys
from datetime import datetime
from typing import Any, Sequence

import numpy as np

from infermeter import __version__
from infermeter.core.outcome import RunOutcome
from infermeter.load.schedule import LoadMode, LoadPlan, offered_rate

SCHEMA_VERSION = 1


def build_result(
    *,
    outcome: RunOutcome,
    metrics: dict,
    plan: LoadPlan,
    backend: str,
    model_id: str,
    tokenizer_id: str,
    target: dict,
    workload: dict,
    percentiles: Sequence[float],
    percentile_metrics: Sequence[str],
    warnings: list,  # notice dicts (core.notices)
    records_file: str | None,
    metadata: dict[str, str],
    command: list[str],
    label: str | None = None,
    save_detailed: bool = False,
    goodput: bool | None = None,
) -> dict[str, Any]:
    if goodput is None:  # a goodput SLO was given: compute() reports its outcome
        goodput = "request_goodput" in metrics
    recs = outcome.records
    start = datetime.fromtimestamp(outcome.start_epoch)
    result: dict[str, Any] = {
        "date": start.strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": backend,  # vLLM keeps this key for backward compatibility
        "backend": backend,
        "label": label,
        "model_id": model_id,
        "tokenizer_id": tokenizer_id,
        "num_prompts": plan.num_requests,
    }
    result.update(metadata)
    result["request_rate"] = "inf" if math.isinf(plan.request_rate) else plan.request_rate
    # vLLM's json.dump writes inf as Infinity (not JSON); like request_rate it is written "inf" here
    result["burstiness"] = "inf" if math.isinf(plan.burstiness) else plan.burstiness
    result["max_concurrency"] = plan.max_concurrency
    if plan.ramp_up:
        result["ramp_up_strategy"], result["ramp_up_start_rps"], result["ramp_up_end_rps"] = plan.ramp_up
    for key in ("duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
                "request_throughput"):
        result[key] = metrics.get(key)
    result["request_goodput"] = metrics.get("request_goodput") if goodput else None
    result["output_throughput"] = metrics.get("output_throughput")
    result["total_token_throughput"] = metrics.get("total_token_throughput")
    selected = set(percentile_metrics)
    for key, value in metrics.items():
        if key.endswith("_ms") and key.count("_") >= 2 and key.split("_")[1] in selected:
            result[key] = value
    # vLLM's per-request lists, in one pass: a RecordStore rebuilds each record
    # on access, so the records are walked once and none is kept.
    lists: dict[str, list] = {k: [] for k in ("input_lens", "output_lens", "ttfts", "itls", "latencies",
                                               "start_times", "errors", "generated_texts")}
    ours, theirs = _Defs(), _Defs()
    for r in recs:
        lists["input_lens"].append(r.input_len)
        lists["start_times"].append(r.sent)
        # an ok request's text is None only where it was not held in memory (see below)
        lists["generated_texts"].append(r.generated_text if r.ok else (r.generated_text or ""))
        if r.ok:
            lists["output_lens"].append(r.output_tokens)
            lists["ttfts"].append(r.ttft or 0.0)
            lists["itls"].append(r.itls)
            lists["latencies"].append(r.e2el or 0.0)
            lists["errors"].append("")
            ours.add(r.ttft, r.e2el, max(len(r.token_times) - 1, 0), r.sent, r.token_times)
            if r.first_choice is not None and r.sent is not None:
                theirs.add(r.first_choice - r.sent, (r.last_choice or r.first_choice) - r.sent,
                           max(r.choice_events - 1, 0), r.sent, None)
        else:
            lists["output_lens"].append(0)
            lists["ttfts"].append(0.0)
            lists["itls"].append([])
            lists["latencies"].append(0.0)
            lists["errors"].append(f"{r.error}: {r.error_detail or ''}".strip())
    if not save_detailed:
        del lists["generated_texts"]
    elif any(t is None for t in lists["generated_texts"]):
        warnings = [*warnings, "generated_texts: only the first requests' texts are held in memory; the others "
                               "are null here, and the records file holds every text"]
    result.update(lists)
    peak_tokens, peak_concurrency = _peaks(recs)
    result["max_output_tokens_per_s"] = peak_tokens
    result["max_concurrent_requests"] = peak_concurrency
    vllm_defs = _compare_definitions(ours, theirs, percentiles)
    result["infermeter"] = {
        "schema_version": SCHEMA_VERSION,
        "load": {**plan.to_dict(), "scheduled_offered_rate": _scheduled_rate(plan, recs)},
        "workload": workload,
        "target": target,
        "percentiles": list(percentiles),
        "percentile_metrics": list(percentile_metrics),
        "sample_counts": metrics["sample_counts"],
        "unsupported_percentiles": metrics["unsupported_percentiles"],
        "untimed_requests": metrics.get("untimed_requests", 0),  # answers in one event: no TPOT/ITL
        "errors_by_class": metrics["errors_by_class"],
        "output_len_stats": metrics["output_len_stats"],
        "work": metrics["work"],
        "rates": {"sent_rate": metrics.get("sent_rate"), "completion_rate": metrics.get("completion_rate")},
        "goodput": metrics.get("goodput"),
        "vllm_definitions": vllm_defs,
        "metrics_ms": {k: v for k, v in metrics.items() if k.endswith("_ms") and k not in result},
        "client": outcome.client.to_dict(),
        "stopped_early": outcome.stopped_early,
        "warmup_requests": len(outcome.warmup_records),
        "start_epoch": outcome.start_epoch,
        "records_file": records_file,
        "warnings": warnings,
        "provenance": provenance(command),
    }
    return result


def provenance(command: list[str]) -> dict[str, Any]:
    return {
        "infermeter_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "command": command,
    }


def pct_label(p: float) -> str:
    """A percentile as vLLM writes it in key names: 99 -> "99", 99.9 -> "99.9"."""
    return str(int(p)) if int(p) == p else str(p)


class _Defs:
    """One definition's per-request TTFT and E2EL (seconds) and its count of ITL gaps."""

    def __init__(self) -> None:
        self.ttft: list[float] = []
        self.e2el: list[float] = []
        self.itl_count = 0

    def add(self, ttft, e2el, gaps, sent, times) -> None:
        if ttft is not None:
            self.ttft.append(ttft)
        if e2el is not None:
            self.e2el.append(e2el)
        self.itl_count += gaps


def _stats_ms(values: list[float], percentiles: Sequence[float]) -> dict[str, float | None]:
    if not values:  # no samples: null, never 0
        return {"n": 0, "mean": None, "median": None, **{f"p{pct_label(p)}": None for p in percentiles}}
    a = np.asarray(values) * 1000.0
    out: dict[str, Any] = {"n": len(values), "mean": float(a.mean()), "median": float(np.median(a))}
    out.update({f"p{pct_label(p)}": float(np.percentile(a, p)) for p in percentiles})
    return out


def _compare_definitions(ours: _Defs, theirs: _Defs, percentiles: Sequence[float]) -> dict[str, Any]:
    """vLLM's client definitions beside ours (docs/cli.md, "Metric definitions").

    vLLM: TTFT at the first event with non-empty ``choices`` (even role-only or
    empty text), an ITL gap between every two such events, E2EL ending at the
    last such event.  Ours: TTFT at the first content, gaps between content
    events, E2EL at the last byte.  Only for OpenAI streams (TGI's protocol has
    no ``choices``: the vLLM columns are then null)."""
    return {
        "ttft_ms": {"ours": _stats_ms(ours.ttft, percentiles), "vllm": _stats_ms(theirs.ttft, percentiles)},
        "e2el_ms": {"ours": _stats_ms(ours.e2el, percentiles), "vllm": _stats_ms(theirs.e2el, percentiles)},
        "itl_count": {"ours": ours.itl_count, "vllm": theirs.itl_count if theirs.ttft else None},
    }


def _peaks(recs) -> tuple[float, int]:
    """vLLM's ``max_output_tokens_per_s`` (token events bucketed into whole seconds from the
    first send) and ``max_concurrent_requests`` (peak of successful requests in flight,
    over half-open [sent, end) intervals)."""
    starts: list[float] = []
    ends: list[float] = []
    buckets: Counter[int] = Counter()
    for r in recs:
        if r.ok and r.sent is not None and r.end is not None:
            starts.append(r.sent)
            ends.append(r.end)
    if not starts:
        return 0.0, 0
    origin = min(starts)
    for r in recs:
        if r.ok and r.sent is not None and r.end is not None:
            for t in r.token_times:
                buckets[int(t - origin)] += 1
    events = sorted([(t, 1) for t in starts] + [(t, -1) for t in ends])
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return float(max(buckets.values(), default=0)), peak


def _scheduled_rate(plan: LoadPlan, recs) -> float | None:
    """The offered rate the schedule actually held: requests / (run start to last scheduled send)."""
    if plan.mode is not LoadMode.RATE:
        return None
    if hasattr(recs, "column"):
        times = [t for t in recs.column("scheduled") if t is not None]
    else:
        times = [r.scheduled for r in recs if r.scheduled is not None]
    return offered_rate(np.sort(np.asarray(times, dtype=float))) if times else None
