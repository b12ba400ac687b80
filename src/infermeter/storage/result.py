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

import heapq
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
from infermeter.core.samplecolumn import SampleColumn, describe_column
from infermeter.load.schedule import LoadMode, LoadPlan

SCHEMA_VERSION = 1
PER_REQUEST_LIMIT = 100_000  # vLLM's per-request arrays hold at most this many requests (the records file all)


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
    # vLLM's per-request lists, in one pass that keeps no record; past PER_REQUEST_LIMIT
    # requests they hold the first ones (by request number) and the records file the rest.
    lists = _PerRequest(PER_REQUEST_LIMIT, keep_text=save_detailed)
    ours, theirs = _Defs(), _Defs()
    for r in recs:
        lists.add(r)
        if r.ok:
            ours.add(r.ttft, r.e2el, max(len(r.token_times) - 1, 0))
            if r.first_choice is not None and r.sent is not None:
                theirs.add(r.first_choice - r.sent, (r.last_choice or r.first_choice) - r.sent,
                           max(r.choice_events - 1, 0))
    arrays = lists.result()
    if save_detailed and any(t is None for t in arrays["generated_texts"]):
        warnings = [*warnings, "generated_texts: only the first requests' texts are held in memory; the others "
                               "are null here, and the records file holds every text"]
    if lists.seen > lists.limit:
        warnings = [*warnings, f"per-request arrays (input_lens, ttfts, itls, ...) hold the first {lists.limit:,} of "
                               f"{lists.seen:,} requests; {records_file or 'the records file'} holds every request"]
    result.update(arrays)
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
        "per_request_arrays": {"requests": min(lists.seen, lists.limit), "of": lists.seen,
                               "complete": lists.seen <= lists.limit},
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
        self.ttft = SampleColumn()
        self.e2el = SampleColumn()
        self.itl_count = 0

    def add(self, ttft, e2el, gaps) -> None:
        if ttft is not None:
            self.ttft.append(ttft)
        if e2el is not None:
            self.e2el.append(e2el)
        self.itl_count += gaps


def _stats_ms(values: SampleColumn, percentiles: Sequence[float]) -> dict[str, float | None]:
    with values:
        if not len(values):  # no samples: null, never 0
            return {"n": 0, "mean": None, "median": None, **{f"p{pct_label(p)}": None for p in percentiles}}
        d = describe_column(values, percentiles)
    out: dict[str, Any] = {"n": d["count"], "mean": d["mean"], "median": d["median"]}
    out.update({f"p{pct_label(p)}": d[f"p{pct_label(p)}"] for p in percentiles})
    return out


class _PerRequest:
    """vLLM's per-request arrays, for the ``limit`` lowest request numbers (a bounded heap)."""

    def __init__(self, limit: int, keep_text: bool) -> None:
        self.limit, self.keep_text, self.seen = limit, keep_text, 0
        self._heap: list[tuple[int, int, tuple]] = []  # (-index, arrival, row): the largest index on top

    def add(self, r) -> None:
        self.seen += 1
        # an ok request's text is None only where it was not held in memory
        text = (r.generated_text if r.ok else (r.generated_text or "")) if self.keep_text else None
        if r.ok:
            row = (r.input_len, r.sent, text, r.output_tokens, r.ttft or 0.0, r.itls, r.e2el or 0.0, "")
        else:
            row = (r.input_len, r.sent, text, 0, 0.0, [], 0.0, f"{r.error}: {r.error_detail or ''}".strip())
        item = (-r.index, -self.seen, row)
        if len(self._heap) < self.limit:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:  # a lower request number than the highest kept
            heapq.heapreplace(self._heap, item)

    def result(self) -> dict[str, list]:
        rows = [row for _, _, row in sorted(self._heap, reverse=True)]
        names = ("input_lens", "start_times", "generated_texts", "output_lens", "ttfts", "itls", "latencies",
                 "errors")
        out = {name: [row[k] for row in rows] for k, name in enumerate(names)}
        if not self.keep_text:
            del out["generated_texts"]
        return {name: out[name] for name in ("input_lens", "output_lens", "ttfts", "itls", "latencies",
                                              "start_times", "errors", "generated_texts") if name in out}


def _compare_definitions(ours: _Defs, theirs: _Defs, percentiles: Sequence[float]) -> dict[str, Any]:
    """vLLM's client definitions beside ours (docs/cli.md, "Metric definitions").

    vLLM: TTFT at the first event with non-empty ``choices`` (even role-only or
    empty text), an ITL gap between every two such events, E2EL ending at the
    last such event.  Ours: TTFT at the first content, gaps between content
    events, E2EL at the last byte.  Only for OpenAI streams (TGI's protocol has
    no ``choices``: the vLLM columns are then null)."""
    vllm_streams = len(theirs.ttft) > 0
    return {
        "ttft_ms": {"ours": _stats_ms(ours.ttft, percentiles), "vllm": _stats_ms(theirs.ttft, percentiles)},
        "e2el_ms": {"ours": _stats_ms(ours.e2el, percentiles), "vllm": _stats_ms(theirs.e2el, percentiles)},
        "itl_count": {"ours": ours.itl_count, "vllm": theirs.itl_count if vllm_streams else None},
    }


def _peaks(recs) -> tuple[float, int]:
    """vLLM's ``max_output_tokens_per_s`` (token events bucketed into whole seconds from the
    first send) and ``max_concurrent_requests`` (peak of successful requests in flight,
    over half-open [sent, end) intervals).  Two passes keeping no record: the sends and
    ends go to columns (spilled past their bound), and the sweep walks them sorted."""
    buckets: Counter[int] = Counter()
    with SampleColumn() as starts, SampleColumn() as ends:
        for r in recs:
            if r.ok and r.sent is not None and r.end is not None:
                starts.append(r.sent)
                ends.append(r.end)
        if not len(starts):
            return 0.0, 0
        origin = starts.min()
        for r in recs:
            if r.ok and r.sent is not None and r.end is not None:
                for t in r.token_times:
                    buckets[int(t - origin)] += 1
        # the level just after each send, ends at the same instant leaving first
        peak = ended = 0
        later_ends = ends.sorted_values()
        next_end = next(later_ends, math.inf)
        for k, sent in enumerate(starts.sorted_values(), 1):
            while next_end <= sent:
                ended += 1
                next_end = next(later_ends, math.inf)
            peak = max(peak, k - ended)
    return float(max(buckets.values(), default=0)), peak


def _scheduled_rate(plan: LoadPlan, recs) -> float | None:
    """The offered rate the schedule actually held: requests / (run start to last scheduled send)."""
    if plan.mode is not LoadMode.RATE:
        return None
    count, last = 0, -math.inf
    if hasattr(recs, "column_chunks"):
        for chunk in recs.column_chunks("scheduled"):
            chunk = chunk[~np.isnan(chunk)]
            if chunk.size:
                count, last = count + int(chunk.size), max(last, float(chunk.max()))
    else:
        for r in recs:
            if r.scheduled is not None:
                count, last = count + 1, max(last, r.scheduled)
    return count / last if count and last > 0 else None
