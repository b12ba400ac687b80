"""One benchmark run, start to finish: target, tokenizer, prompts, load, results.

The CLI and experiment sweeps call ``runner.execute.execute_run``, which runs this
(``run_single``) in-process or once per worker; it owns the order of
things (validate everything, then start servers, then load) and the promise
that a failure mid-run loses no completed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from infermeter.backends import get_backend, protocol_for
from infermeter.clients.transports import make_transport
from infermeter.clients.protocols import make_protocol
from infermeter.core.protocol import RequestOptions
from infermeter.errors import UserError
from infermeter.load.schedule import LoadMode
from infermeter.metrics.compute import GoodputSLO, compute, parse_metric_names, parse_percentiles
from infermeter.metrics.findings import as_dicts, run_warnings
from infermeter.metrics.tokens import crosscheck_counts, received_counts
from infermeter.core.outcome import Counters, StopPolicy
from infermeter.load.generator import LoadRunner
from infermeter.runner.limits import ensure_open_files
from infermeter.load.monitor import judge_client
from infermeter.load.shard import Shard, check_start_at
from infermeter.runner.efficiency import efficiency_for  # energy, cost, per GPU (docs/cost.md)
from infermeter.runner.spec import RunSpec
from infermeter.runner.probe import probe_target
from infermeter.runner.target import ExistingServer, open_target
from infermeter.secrets import api_key_from, redact_argv, redact_headers, redact_url, url_credentials
from infermeter.storage.files import RecordWriter, write_json_atomic
from infermeter.storage.names import check_result_place, claim, sibling, slug, storage_error
from infermeter.storage.result import build_result
from infermeter.telemetry import TelemetrySession
from infermeter.telemetry.summary import client_latencies, output_tokens_of, window_of
from infermeter.load.schedule import offered_rates
from infermeter.load.sessions import SessionRunner
from infermeter.runner.workload_run import every_prompt, shape_load, workload_metrics
from infermeter.workloads import make_prompts
from infermeter.workloads._common import ChatFormat, chat_counts
from infermeter.workloads.tokenizer import Tokenizer, load_tokenizer

WARMUP_SEED_OFFSET = 1_000_003  # warm-up prompts never equal measured ones


@dataclass
class RunReport:
    result: dict[str, Any]
    result_path: Path
    records_path: Path
    server_log: Path | None = None
    # a file that could not be written (disk full): the result above is still whole in memory
    write_error: UserError | None = None
    result_saved: bool = True


ProgressFactory = Callable[[Counters], contextlib.AbstractAsyncContextManager]


def run_single(spec: RunSpec, *, argv: list[str] | None = None,
               progress: ProgressFactory | None = None,
               engine_progress: Callable[[str, int | None, int | None], None] | None = None,
               log: Callable[[str], None] = lambda msg: None,
               start_gate: Callable[[], Any] | None = None) -> RunReport:
    """One run in this process (``--workers 1``, or one worker's shard)."""
    backend = get_backend(spec.backend)
    endpoint = spec.endpoint or backend.default_endpoint
    kind = protocol_for(endpoint)
    if backend.name == "openai-chat" and kind == "openai":
        kind = "openai-chat"
    plan = spec.load_plan()
    percentiles = parse_percentiles(spec.metric_percentiles)
    metric_names = parse_metric_names(spec.percentile_metrics)
    goodput = GoodputSLO.parse(spec.goodput) if spec.goodput else None
    spec.check()  # again: model_copy(update=...) skips validation
    shard = Shard.parse(spec.shard) if spec.shard else None
    global_plan = plan
    if shard is not None:
        plan = shard.local_plan(global_plan)
    check_start_at(spec.start_at)
    check_result_place(Path(spec.result_dir), spec.result_filename, spec.if_exists)
    width = min(plan.max_concurrency or plan.num_requests, plan.num_requests)
    note = ensure_open_files(width, strict=plan.mode is not LoadMode.RATE or plan.max_concurrency is not None,
                             what=(f"--max-concurrency {width}" if plan.max_concurrency
                                   else f"{width} requests in flight at once"))
    if note:
        log(note)
    # A wrong --tokenizer path fails here, before any server is started or contacted.
    tokenizer = load_tokenizer(spec.tokenizer, trust_remote_code=spec.trust_remote_code) if spec.tokenizer else None

    with (TelemetrySession.for_run(spec, log=log) as telemetry,  # GPU + /metrics sampling, off the hot path
          _target(spec, log, engine_progress) as (base_url, engine)):
        if engine is not None:
            backend = get_backend("llama.cpp")
        telemetry.attach_server(base_url, backend.name, engine=engine)
        telemetry.mark_phase("ready")  # loaded, before any traffic
        headers = dict(spec.headers)
        key = api_key_from(spec.api_key_env, spec.api_key_file)
        if key:
            headers.setdefault("Authorization", f"Bearer {key}")
        base_url, headers = url_credentials(base_url, headers)  # user:password@ -> a Basic header
        requested_model = spec.served_model_name or spec.model or (engine.model_id if engine else None)
        info = asyncio.run(probe_target(base_url, backend, kind, requested_model, headers))
        model = requested_model or (info.served_models[0] if info.served_models else None)
        if model is None:
            raise UserError(f"{redact_url(base_url)} lists no model and --model was not given",
                            "pass --model NAME")
        tokenizer_id = spec.tokenizer or (str(engine.tokenizer_dir) if engine else (spec.model or model))
        log(f"tokenizer: {tokenizer_id}")
        if tokenizer is None:
            tokenizer = load_tokenizer(tokenizer_id, trust_remote_code=spec.trust_remote_code)
        chat = kind == "openai-chat"
        wspec = spec_from_run(spec)
        # a step or time-bounded rate plan sets the count (a closed loop for --duration cycles its prompts)
        prompts = make_prompts(wspec, tokenizer, global_plan.num_requests, spec.seed, chat)
        warm = (make_prompts(wspec, tokenizer, spec.warmup_requests, spec.seed + WARMUP_SEED_OFFSET, chat)
                if spec.warmup_requests else [])
        _check_context(every_prompt(prompts), info.max_model_len)
        plan, prompts, load_args = shape_load(spec, plan, prompts, shard is not None)  # traces, conversations
        shard_args: dict[str, Any] = {"start_at": start_gate or spec.start_at, **load_args}
        if shard is not None:  # the same global prompts and schedule; this shard's slice of them
            shard_args.update(indices=shard.indices(len(prompts)), offsets=shard.offsets(global_plan, spec.seed))
            rates = offered_rates(global_plan)
            if rates is not None:
                shard_args["rates"] = rates[shard.indices(len(prompts))]
            prompts = [prompts[i] for i in shard.indices(len(prompts))]
            warm = [warm[i] for i in shard.indices(len(warm))]

        options = RequestOptions(model=model, stream=spec.stream,
                                 ignore_eos=spec.ignore_eos and backend.ignore_eos and kind != "tgi",
                                 temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k,
                                 extra_body=dict(spec.extra_body))
        protocol = make_protocol(kind, endpoint)
        columns = record_columns(spec.target_name or spec.label or backend.name, spec.cell_id)
        result_path, writer = claim(
            Path(spec.result_dir), spec.result_filename or f"{_result_stem(spec, backend.name, model)}.json",
            spec.if_exists if spec.result_filename else "next",
            lambda path, replace: RecordWriter(path, keep_text=spec.save_generated_text, replace=replace,
                                               columns=columns))
        records_path = writer.path
        counters = Counters()
        shard_args["after_warmup"] = telemetry.after_warmup  # samples again between warm-up and window
        telemetry.mark_phase("load")
        try:
            outcome = asyncio.run(_drive(
                spec, base_url, headers, protocol, options, plan, prompts, warm, writer, counters,
                progress, tokenizer, shard_args))
        finally:
            writer.close()
        # What stop(outcome) would derive from the records, derived here by
        # walking them (stop would list them all: a long run's records are
        # kept compactly and rebuilt on access, so never all at once).
        telemetry_path = sibling(result_path, ".telemetry.jsonl")
        if telemetry.enabled:
            telemetry_summary = telemetry.stop(
                path=telemetry_path, origin=outcome.start_epoch,
                window=window_of(outcome.records, outcome.start_epoch),
                output_tokens=output_tokens_of(outcome.records), client=client_latencies(outcome.records),
                warmup=bool(outcome.warmup_records))
        else:  # stop() then uses none of them
            telemetry_summary = telemetry.stop(path=telemetry_path)
        server_log = engine.log_path if engine else None
        target = {
            "base_url": redact_url(base_url),
            "endpoint": endpoint,
            "protocol": kind,
            "backend": backend.name,
            "embedded_engine": engine.describe() if engine else None,
            "served_models": info.served_models,
            "max_model_len": info.max_model_len,
            "server_version": info.server_version,
            "server_info": info.server_info,
            "headers": redact_headers(spec.headers),
            "fixed_output_length": backend.fixed_length_method(kind) if spec.ignore_eos else "not requested",
            "connection_notes": outcome.transport_notes,
            "name": columns["target"],
        }

    count_check = crosscheck_counts(outcome.records, tokenizer)  # usage vs what was received
    metrics = compute(outcome.records, outcome.duration, percentiles, goodput, received_counts(count_check))
    metrics["work"]["token_count_crosscheck"] = count_check
    judge_client(outcome.client, metrics["mean_ttft_ms"], metrics["mean_itl_ms"], spec.client_error_tolerance / 100)
    warnings = _warnings(spec, plan, metrics, outcome, backend, kind)
    result = build_result(
        outcome=outcome, metrics=metrics, plan=plan, backend=backend.name, model_id=spec.model or model,
        label=spec.label, save_detailed=spec.save_generated_text,
        tokenizer_id=tokenizer_id, target=target,
        workload={"dataset_name": spec.dataset_name, "spec": wspec.model_dump(mode="json"),
                  "seed": spec.seed, "chat": chat},
        percentiles=percentiles, percentile_metrics=metric_names, warnings=warnings,
        records_file=records_path.name, metadata=spec.metadata, command=redact_argv(argv or []),
    )
    if shard is not None:
        result["infermeter"]["shard"] = shard.to_dict(global_plan)
    result["infermeter"]["cell_id"] = spec.cell_id
    from infermeter.metrics.validity import ValidityOptions, assess  # VALID/INVALID label (docs/validity.md)

    result["infermeter"]["validity"] = assess(
        result, outcome.records, ValidityOptions(client_error_tolerance_pct=spec.client_error_tolerance))
    result["infermeter"]["telemetry"] = telemetry_summary
    result["infermeter"]["efficiency"] = efficiency_for(result, spec)
    result["infermeter"]["workload_metrics"] = workload_metrics(  # docs/workloads.md
        spec, plan, outcome.records, telemetry_summary, getattr(outcome, "turns_not_sent", None))
    report = RunReport(result=result, result_path=result_path, records_path=records_path, server_log=server_log)
    if writer.error is not None:  # the records stopped at the last whole line; the result says so
        result["infermeter"]["records_incomplete"] = {"written": writer.count,
                                                      "error": writer.error.strerror or str(writer.error)}
        report.write_error = storage_error(writer.error, records_path)
    try:
        write_json_atomic(result_path, result)
    except OSError as exc:  # disk full at the end: the caller prints the summary and says so
        report.result_saved = False
        report.write_error = report.write_error or storage_error(exc, result_path)
    return report


async def _drive(spec, base_url, headers, protocol, options, plan, prompts, warm, writer, counters,
                 progress, tokenizer: Tokenizer, shard_args: dict | None = None):
    try:
        import uvloop  # noqa: F401  (installed on Linux; the loop policy is set by the caller)
    except ImportError:
        pass
    width = plan.max_concurrency or plan.num_requests
    transport = make_transport(base_url, spec.transport, request_id_header=spec.request_id_header,
                               headers=headers, max_connections=min(max(width, 1), 65536),
                               request_timeout=_seconds(spec.request_timeout),
                               stall_timeout=_seconds(spec.stall_timeout))
    async with transport:
        args = dict(shard_args or {})
        cls: Any = LoadRunner
        if args.pop("sessions", False):  # multi-turn: one conversation per planned session
            cls = SessionRunner
            fmt = ChatFormat(tokenizer)
            args["count_input"] = lambda messages: chat_counts(tokenizer, fmt, [messages], [])[0]
        runner = cls(transport, protocol, options, plan, prompts, warm, seed=spec.seed,
                     sink=writer, counters=counters,
                     stop_policy=StopPolicy(spec.max_errors, spec.max_error_rate),
                     count_tokens=lambda text: len(tokenizer.encode(text)), **args)
        loop = asyncio.get_running_loop()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, runner.request_stop, "interrupted (Ctrl-C)")
            loop.add_signal_handler(signal.SIGTERM, runner.request_stop, "terminated (SIGTERM)")
        try:
            if progress is not None:
                async with progress(counters):
                    outcome = await runner.run()
            else:
                outcome = await runner.run()
            outcome.transport_notes = list(transport.notes)
            outcome.turns_not_sent = getattr(runner, "turns_not_sent", None)  # type: ignore[attr-defined]
            return outcome
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
                loop.remove_signal_handler(signal.SIGTERM)
            with contextlib.suppress(ValueError, TypeError):  # asyncio leaves SIG_DFL: restore the caller's
                for sig, handler in previous.items():
                    signal.signal(sig, handler)


@contextlib.contextmanager
def _target(spec: RunSpec, log, engine_progress) -> Iterator[tuple[str, Any]]:
    """The run's server under test (the URL, or the embedded engine), live through ``open_target``."""
    server: Any
    if spec.uses_embedded_engine():
        from infermeter.embedded.target import EmbeddedEngine

        server = EmbeddedEngine(spec.engine_model, parallel=spec.engine_parallel, ctx_size=spec.engine_ctx_size,
                                progress=engine_progress, log=log, cpus=spec.engine_cpus)
    else:
        server = ExistingServer(spec.server_url())
    with open_target(server) as live:
        yield live.base_url, (None if isinstance(server, ExistingServer) else server)


def record_columns(target: str, cell_id: str | None) -> dict[str, str]:
    """The columns every line of a run's .records.jsonl carries ("" for no cell: a text column)."""
    return {"target": target, "cell_id": cell_id or ""}


def spec_from_run(spec: RunSpec):
    """The workload spec named by the run's dataset flags."""
    return spec.workload_spec()


def _seconds(value: float | None) -> float | None:
    """A timeout for the transport: inf means none."""
    return None if value is None or math.isinf(value) else value


def _check_context(prompts, max_model_len: int | None) -> None:
    if not max_model_len:
        return
    for p in prompts:
        need = p.input_len + (p.output_len or 0)
        if need > max_model_len:
            raise UserError(
                f"a prompt of {p.input_len} tokens plus {p.output_len or 0} output tokens exceeds the "
                f"server's context of {max_model_len} tokens",
                "use shorter prompts/outputs, or start the server with a longer context")


def _result_stem(spec: RunSpec, backend: str, model: str) -> str:
    rate = "inf" if math.isinf(spec.request_rate) else f"{spec.request_rate:g}"
    conc = f"-concurrency{spec.max_concurrency}" if spec.max_concurrency else ""
    safe_model = slug(model)  # the server's name: no path or control characters, bounded length
    shard = f"-shard{spec.shard.replace('/', 'of')}" if spec.shard else ""
    return f"{backend}-{rate}qps{conc}-{safe_model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}{shard}"


def _warnings(spec, plan, metrics, outcome, backend, kind) -> list[dict]:
    first = next((r for r in outcome.records if not r.ok and r.error), None)
    return as_dicts(run_warnings(
        metrics, outcome.client, rate_mode=plan.mode is LoadMode.RATE, stopped_early=outcome.stopped_early,
        ignore_eos=spec.ignore_eos,
        ignore_eos_method=backend.fixed_length_method(kind) if (kind == "tgi" or not backend.ignore_eos) else None,
        length_checked=bool(metrics["work"]["requests_checked"]),
        first_error=(first.error, first.error_detail or "") if first else None))
