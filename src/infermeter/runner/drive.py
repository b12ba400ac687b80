"""Step 3 of a run (runner/session.py): with the target live, probe it, build the prompts,
drive the load, and collect what the analysis needs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from infermeter.backends import BackendSpec, get_backend
from infermeter.clients.protocols import make_protocol
from infermeter.clients.transports import make_transport
from infermeter.core.outcome import Counters, StopPolicy
from infermeter.core.protocol import RequestOptions
from infermeter.errors import FieldError, UserError
from infermeter.load.feed import Feed, open_feed
from infermeter.load.generator import LoadRunner
from infermeter.load.schedule import LoadMode, LoadPlan, offered_rates
from infermeter.load.sessions import SessionRunner
from infermeter.runner.plan import RunPlan
from infermeter.runner.probe import probe_target
from infermeter.runner.startup import Startup
from infermeter.runner.workload_run import every_prompt, shape_load
from infermeter.secrets import api_key_from, redact_headers, redact_url, url_credentials
from infermeter.storage.files import RecordWriter
from infermeter.storage.names import claim, sibling, slug
from infermeter.telemetry.summary import window_inputs
from infermeter.workloads import make_prompts, prompt_builder
from infermeter.workloads._common import ChatFormat, chat_counts
from infermeter.workloads.tokenizer import Tokenizer, load_tokenizer

WARMUP_SEED_OFFSET = 1_000_003  # warm-up prompts never equal measured ones

ProgressFactory = Callable[[Counters], contextlib.AbstractAsyncContextManager]


@dataclass
class Driven:
    """What a driven run hands to the analysis (runner/analyse.py)."""

    outcome: Any  # core/outcome.RunOutcome
    load: LoadPlan  # as driven (a trace or a time bound may have set the count)
    backend: BackendSpec  # the one served (llama.cpp for the embedded engine)
    model: str
    tokenizer: Tokenizer
    tokenizer_id: str
    target: dict[str, Any]  # the result's "target"
    telemetry: dict[str, Any]
    writer: RecordWriter
    result_path: Path
    records_path: Path
    histograms: Any = None  # core/livestats.LatencySnapshot: the live histograms at the run's end
    startup: Startup | None = None  # the phases before the first request (runner/startup.py)


def drive(plan: RunPlan, base_url: str, engine: Any, telemetry, tokenizer: Tokenizer | None, *,
          progress: ProgressFactory | None, log: Callable[[str], None],
          start_gate: Callable[[], Any] | None, startup: Startup | None = None) -> Driven:
    startup = startup or Startup.begin()
    spec, kind = plan.spec, plan.protocol
    t, ld, c = spec.target, spec.load, spec.client
    backend = get_backend("llama.cpp") if engine is not None else plan.backend
    telemetry.attach_server(base_url, backend.name, engine=engine)
    telemetry.mark_phase("ready")  # loaded, before any traffic
    headers = dict(t.headers)
    key = api_key_from(t.api_key_env, t.api_key_file)
    if key:
        headers.setdefault("Authorization", f"Bearer {key}")
    base_url, headers = url_credentials(base_url, headers)  # user:password@ -> a Basic header
    requested_model = t.served_model_name or t.model or (engine.model_id if engine else None)
    t_probe = time.perf_counter()
    info = asyncio.run(probe_target(base_url, backend, kind, requested_model, headers))
    startup.phase("probe", t_probe)
    model = requested_model or (info.served_models[0] if info.served_models else None)
    if model is None:
        raise FieldError("target.model", None, "{url} lists no model and {target.model} was not given",
                         "pass {target.model} NAME", url=redact_url(base_url))
    tokenizer_id = t.tokenizer or (str(engine.tokenizer_dir) if engine else (t.model or model))
    log(f"tokenizer: {tokenizer_id}")
    if tokenizer is None:
        t_tok = time.perf_counter()
        tokenizer = load_tokenizer(tokenizer_id, trust_remote_code=t.trust_remote_code)
        startup.phase("tokenizer", t_tok)
    t_prompts = time.perf_counter()
    options = RequestOptions(model=model, stream=c.stream,
                             ignore_eos=c.ignore_eos and backend.ignore_eos and kind != "tgi",
                             temperature=c.temperature, top_p=c.top_p, top_k=c.top_k,
                             extra_body=dict(c.extra_body))
    protocol = make_protocol(kind, plan.endpoint)
    # a step or time-bounded rate plan sets the count (a closed loop for --duration cycles its prompts)
    builder = prompt_builder(plan.workload, tokenizer, plan.load.num_requests, ld.seed, plan.chat)
    warm = (make_prompts(plan.workload, tokenizer, ld.warmup_requests, ld.seed + WARMUP_SEED_OFFSET, plan.chat)
            if ld.warmup_requests else [])
    if builder.lazy:  # built as the run goes, a little ahead of the sends (load/feed.py)
        _check_context(warm, info.max_model_len)
        load, load_args = plan.local_load, {}
        n = plan.load.num_requests
    else:
        prompts = builder.prompts
        _check_context(every_prompt(prompts), info.max_model_len)
        load, prompts, load_args = shape_load(plan, prompts)  # traces, conversations
        n = len(prompts)
    shard_args: dict[str, Any] = {"start_at": start_gate or ld.start_at, **load_args}
    order: Any = range(n)
    if plan.shard is not None:  # the same global prompts and schedule; this shard's slice of them
        order = plan.shard.indices(n)
        shard_args.update(indices=order, offsets=plan.shard.offsets(plan.load, ld.seed))
        rates = offered_rates(plan.load)
        if rates is not None:
            shard_args["rates"] = rates[order.start::order.step]
        warm = [warm[i] for i in plan.shard.indices(len(warm))]
    if builder.lazy:  # the first prompts now (a context too short for them stops here), the rest as sent
        timed_loop = load.mode is LoadMode.CONCURRENCY and bool(load.duration_s)
        rate = load.request_rate if load.mode is LoadMode.RATE and math.isfinite(load.request_rate or 0) else None
        prompts = open_feed(builder, order, protocol, options, cycle=timed_loop, rate=rate and rate / getattr(order, "step", 1),
                            check=functools.partial(_check_context, max_model_len=info.max_model_len))
    elif plan.shard is not None:
        prompts = [prompts[i] for i in order]
    startup.prompts_ready(t_prompts)
    o = spec.output
    columns = record_columns(o.target_name or o.label or backend.name, o.cell_id)
    try:
        result_path, writer = claim(
            Path(o.result_dir), o.result_filename or f"{result_stem(plan, backend.name, model)}.json",
            o.if_exists if o.result_filename else "next",
            lambda path, replace: RecordWriter(path, keep_text=o.save_generated_text, replace=replace,
                                               columns=columns))
    except BaseException:
        if isinstance(prompts, Feed):
            prompts.close()
        raise
    counters = Counters()
    shard_args["after_warmup"] = telemetry.after_warmup  # samples again between warm-up and window
    telemetry.mark_phase("load")
    try:
        outcome = asyncio.run(_run_load(plan, base_url, headers, protocol, options, load, prompts, warm, writer,
                                        counters, progress, tokenizer, shard_args))
    finally:
        writer.close()
        if isinstance(prompts, Feed):
            prompts.close()
    startup.started(outcome.start_epoch)
    # What stop(outcome) would derive from the records, derived here by
    # walking them (stop would list them all: a long run's records are
    # kept compactly and rebuilt on access, so never all at once).
    telemetry_path = sibling(result_path, ".telemetry.jsonl")
    if telemetry.enabled:
        window, output_tokens, client = window_inputs(outcome.records, outcome.start_epoch)
        try:
            telemetry_summary = telemetry.stop(path=telemetry_path, origin=outcome.start_epoch, window=window,
                                               output_tokens=output_tokens, client=client,
                                               warmup=bool(outcome.warmup_records))
        finally:
            for column in client.values():
                column.close()
    else:  # stop() then uses none of them
        telemetry_summary = telemetry.stop(path=telemetry_path)
    target = {
        "base_url": redact_url(base_url),
        "endpoint": plan.endpoint,
        "protocol": kind,
        "backend": backend.name,
        "embedded_engine": engine.describe() if engine else None,
        "served_models": info.served_models,
        "max_model_len": info.max_model_len,
        "server_version": info.server_version,
        "server_info": info.server_info,
        "headers": redact_headers(t.headers),
        "fixed_output_length": backend.fixed_length_method(kind) if c.ignore_eos else "not requested",
        "connection_notes": outcome.transport_notes,
        "name": columns["target"],
    }
    return Driven(outcome=outcome, load=load, backend=backend, model=model, tokenizer=tokenizer,
                  tokenizer_id=tokenizer_id, target=target, telemetry=telemetry_summary, writer=writer,
                  result_path=result_path, records_path=writer.path, histograms=counters.snapshot(),
                  startup=startup)


async def _run_load(plan: RunPlan, base_url, headers, protocol, options, load, prompts, warm, writer, counters,
                    progress, tokenizer: Tokenizer, shard_args: dict | None = None):
    try:
        import uvloop  # noqa: F401  (installed on Linux; the loop policy is set by the caller)
    except ImportError:
        pass
    c = plan.spec.client
    width = load.max_concurrency or load.num_requests
    transport = make_transport(base_url, c.transport, request_id_header=c.request_id_header,
                               headers=headers, max_connections=min(max(width, 1), 65536),
                               request_timeout=_seconds(c.request_timeout),
                               stall_timeout=_seconds(c.stall_timeout))
    async with transport:
        args = dict(shard_args or {})
        cls: Any = LoadRunner
        if args.pop("sessions", False):  # multi-turn: one conversation per planned session
            cls = SessionRunner
            fmt = ChatFormat(tokenizer)
            args["count_input"] = lambda messages: chat_counts(tokenizer, fmt, [messages], [])[0]
        runner = cls(transport, protocol, options, load, prompts, warm, seed=plan.spec.load.seed,
                     sink=writer, counters=counters,
                     stop_policy=StopPolicy(c.max_errors, c.max_error_rate),
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


def record_columns(target: str, cell_id: str | None) -> dict[str, str]:
    """The columns every line of a run's .records.jsonl carries ("" for no cell: a text column)."""
    return {"target": target, "cell_id": cell_id or ""}


def result_stem(plan: RunPlan, backend: str, model: str) -> str:
    """A generated result name: backend, load, model, time (and the shard)."""
    ld = plan.spec.load
    rate = "inf" if math.isinf(ld.request_rate) else f"{ld.request_rate:g}"
    conc = f"-concurrency{ld.max_concurrency}" if ld.max_concurrency else ""
    safe_model = slug(model)  # the server's name: no path or control characters, bounded length
    shard = f"-shard{ld.shard.replace('/', 'of')}" if ld.shard else ""
    return f"{backend}-{rate}qps{conc}-{safe_model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}{shard}"


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
