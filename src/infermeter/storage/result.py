"""The run result: vLLM's keys first, so tools that read vLLM results read ours,
then infermeter's own section (load, work, client, provenance, warnings)."""

from __future__ import annotations

import math
import platform
import socket
import sys
from datetime import datetime
from typing import Any, Sequence

from infermeter import __version__
from infermeter.load.schedule import LoadPlan
from infermeter.core.outcome import RunOutcome

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
    warnings: list[str],
    records_file: str | None,
    metadata: dict[str, str],
    command: list[str],
) -> dict[str, Any]:
    recs = outcome.records
    start = datetime.fromtimestamp(outcome.start_epoch)
    result: dict[str, Any] = {
        "date": start.strftime("%Y%m%d-%H%M%S"),
        "backend": backend,
        "model_id": model_id,
        "tokenizer_id": tokenizer_id,
        "num_prompts": plan.num_requests,
        "request_rate": "inf" if math.isinf(plan.request_rate) else plan.request_rate,
        "burstiness": plan.burstiness,
        "max_concurrency": plan.max_concurrency,
    }
    result.update(metadata)
    keep = {"completed", "failed", "duration", "total_input_tokens", "total_output_tokens",
            "request_throughput", "request_goodput", "output_throughput", "total_token_throughput"}
    for key, value in metrics.items():
        if key in keep or key.endswith("_ms"):
            result[key] = value
    # vLLM's per-request arrays, in one pass: a RecordStore rebuilds each record
    # on access, so the records are walked once and none is kept.
    input_lens: list = []
    output_lens: list = []
    ttfts: list = []
    itls: list = []
    errors: list = []
    for r in recs:
        input_lens.append(r.input_len)
        if r.ok:
            output_lens.append(r.output_tokens)
            ttfts.append(r.ttft or 0.0)
            itls.append(r.itls)
            errors.append("")
        else:
            output_lens.append(0)
            ttfts.append(0.0)
            itls.append([])
            errors.append(f"{r.error}: {r.error_detail or ''}".strip())
    result["input_lens"] = input_lens
    result["output_lens"] = output_lens
    result["ttfts"] = ttfts
    result["itls"] = itls
    result["errors"] = errors
    result["infermeter"] = {
        "schema_version": SCHEMA_VERSION,
        "load": plan.to_dict(),
        "workload": workload,
        "target": target,
        "percentiles": list(percentiles),
        "percentile_metrics": list(percentile_metrics),
        "sample_counts": metrics["sample_counts"],
        "unsupported_percentiles": metrics["unsupported_percentiles"],
        "errors_by_class": metrics["errors_by_class"],
        "output_len_stats": metrics["output_len_stats"],
        "work": metrics["work"],
        "rates": {"sent_rate": metrics.get("sent_rate"), "completion_rate": metrics.get("completion_rate")},
        "goodput": metrics.get("goodput"),
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
