"""Step 4 of a run (runner/session.py): from the driven run's records to the result dict:
metrics, the client's own error, warnings, validity, telemetry, cost, workload figures."""

from __future__ import annotations

from typing import Any

from infermeter.load.monitor import judge_client
from infermeter.load.schedule import LoadMode
from infermeter.metrics.compute import compute
from infermeter.metrics.findings import as_dicts, run_warnings
from infermeter.metrics.tokens import crosscheck_counts, received_counts
from infermeter.runner.drive import Driven
from infermeter.runner.efficiency import efficiency_for  # energy, cost, per GPU (docs/cost.md)
from infermeter.runner.plan import RunPlan
from infermeter.runner.workload_run import workload_metrics
from infermeter.secrets import redact_argv
from infermeter.storage.result import build_result


def analyse(plan: RunPlan, run: Driven, argv: list[str] | None) -> dict[str, Any]:
    spec, outcome = plan.spec, run.outcome
    o = spec.output
    count_check = crosscheck_counts(outcome.records, run.tokenizer)  # usage vs what was received
    metrics = compute(outcome.records, outcome.duration, plan.percentiles, plan.goodput, received_counts(count_check))
    metrics["work"]["token_count_crosscheck"] = count_check
    judge_client(outcome.client, metrics["mean_ttft_ms"], metrics["mean_itl_ms"], o.client_error_tolerance / 100)
    result = build_result(
        outcome=outcome, metrics=metrics, plan=run.load, backend=run.backend.name,
        model_id=spec.target.model or run.model, label=o.label, save_detailed=o.save_generated_text,
        tokenizer_id=run.tokenizer_id, target=run.target,
        workload={"dataset_name": spec.workload.dataset_name, "spec": plan.workload.model_dump(mode="json"),
                  "seed": spec.load.seed, "chat": plan.chat},
        percentiles=plan.percentiles, percentile_metrics=plan.metric_names,
        warnings=_warnings(plan, run, metrics), records_file=run.records_path.name, metadata=o.metadata,
        command=redact_argv(argv or []),
    )
    if plan.shard is not None:
        result["infermeter"]["shard"] = plan.shard.to_dict(plan.load)
    result["infermeter"]["cell_id"] = o.cell_id
    from infermeter.metrics.validity import ValidityOptions, assess  # VALID/INVALID label (docs/validity.md)

    result["infermeter"]["validity"] = assess(
        result, outcome.records, ValidityOptions(client_error_tolerance_pct=o.client_error_tolerance))
    result["infermeter"]["telemetry"] = run.telemetry
    if run.startup is not None:  # where the time before the first request went (runner/startup.py)
        result["infermeter"]["startup"] = run.startup.to_dict()
    if run.histograms is not None:  # approximate (rel_error) but exactly mergeable across workers and shards
        result["infermeter"]["histograms"] = run.histograms.to_dict()
    result["infermeter"]["efficiency"] = efficiency_for(result, spec)
    result["infermeter"]["workload_metrics"] = workload_metrics(  # docs/workloads.md
        plan, run.load, outcome.records, run.telemetry, getattr(outcome, "turns_not_sent", None))
    return result


def _warnings(plan: RunPlan, run: Driven, metrics) -> list[dict]:
    outcome, backend, kind = run.outcome, run.backend, plan.protocol
    first = next((r for r in outcome.records if not r.ok and r.error), None)
    return as_dicts(run_warnings(
        metrics, outcome.client, rate_mode=run.load.mode is LoadMode.RATE, stopped_early=outcome.stopped_early,
        ignore_eos=plan.spec.client.ignore_eos,
        ignore_eos_method=backend.fixed_length_method(kind) if (kind == "tgi" or not backend.ignore_eos) else None,
        length_checked=bool(metrics["work"]["requests_checked"]),
        first_error=(first.error, first.error_detail or "") if first else None))
