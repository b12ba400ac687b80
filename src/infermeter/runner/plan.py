"""Resolve a RunSpec once into a RunPlan: every value judged, everything derived.

``resolve`` is the one place a run's settings are validated; what it returns is
frozen and is all the later steps (runner/target.py, runner/drive.py,
runner/analyse.py) read besides the spec itself.  Its errors are ``FieldError``s
naming the field (``load.num_prompts``); the CLI and the spec loader word them.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlsplit

from infermeter.backends import BackendSpec, get_backend, protocol_for
from infermeter.errors import FieldError, UserError
from infermeter.load.schedule import LoadPlan, make_plan, trace_plan
from infermeter.load.shard import Shard
from infermeter.metrics.compute import GoodputSLO, parse_metric_names, parse_percentiles
from infermeter.runner.spec import FIELD_SECTION, RunSpec, field_path
from infermeter.runner.sections import WorkloadSection

MAX_COUNT = 100_000_000  # requests, warm-ups: more is a typo, not a benchmark
MAX_TOKENS = 10_000_000  # prompt/output lengths in tokens
MAX_CONCURRENCY = 1_000_000
_LIMITS = {"num_prompts": MAX_COUNT, "warmup_requests": MAX_COUNT, "max_concurrency": MAX_CONCURRENCY,
           "engine_parallel": 4096, "engine_ctx_size": MAX_TOKENS, "max_errors": MAX_COUNT,
           "sonnet_input_len": MAX_TOKENS, "sonnet_output_len": MAX_TOKENS, "sonnet_prefix_len": MAX_TOKENS,
           "random_input_len": MAX_TOKENS, "random_output_len": MAX_TOKENS, "random_prefix_len": MAX_TOKENS,
           "sharegpt_output_len": MAX_TOKENS, "custom_output_len": MAX_TOKENS, "seed": 2**63 - 1,
           "top_k": 2**31 - 1, "prefix_groups": MAX_COUNT, "prefix_len": MAX_TOKENS, "question_len": MAX_TOKENS,
           "prefix_output_len": MAX_TOKENS, "multi_turn_output_len": MAX_TOKENS, "multi_turn_max_turns": MAX_COUNT,
           "trace_block_size": MAX_TOKENS, "trace_output_len": MAX_TOKENS}


@dataclass(frozen=True)
class RunPlan:
    """A run's settings, judged and derived once (``resolve``)."""

    spec: RunSpec
    backend: BackendSpec  # as asked; an embedded engine is llama.cpp (runner/target.py)
    protocol: str  # the wire protocol of the endpoint (openai, openai-chat, tgi, ...)
    endpoint: str
    load: LoadPlan  # the whole schedule
    local_load: LoadPlan  # this process's part of it (the shard's, or the whole)
    shard: Shard | None
    percentiles: list[float]
    metric_names: list[str]
    goodput: GoodputSLO | None
    workload: Any  # the workload spec (workloads/specs.py)
    embedded: bool  # no URL: the embedded engine

    @property
    def chat(self) -> bool:
        return self.protocol == "openai-chat"


@contextlib.contextmanager
def _field(name: str, value: Any) -> Iterator[None]:
    """A workload's own UserError that is not a FieldError, tied to the workload section."""
    try:
        yield
    except FieldError:
        raise
    except UserError as exc:
        path = field_path(name) if name in FIELD_SECTION else name  # a field, or a whole section
        raise FieldError(path, value, _literal(exc.problem), _literal(exc.fix) if exc.fix else None) from None


def _literal(text: str) -> str:
    """Text as a FieldError template that names no field (kept as the helper worded it)."""
    return text.replace("{", "{{").replace("}", "}}")


def resolve(spec: RunSpec) -> RunPlan:
    """Judge every value that can be judged without a server, and derive the run's plan."""
    from infermeter.secrets import check_headers
    from infermeter.storage.names import check_plain_name

    t, o = spec.target, spec.output
    _check_ranges(spec)
    backend = get_backend(t.backend)
    _check_target(spec)
    load = load_plan(spec)
    _check_client(spec)
    percentiles = parse_percentiles(o.metric_percentiles)
    metric_names = parse_metric_names(o.percentile_metrics)
    goodput = GoodputSLO.parse(o.goodput) if o.goodput else None
    check_headers(t.headers)
    if o.result_filename is not None:
        check_plain_name(o.result_filename)
    _check_cost(spec)
    _check_workers(spec)
    workload = workload_spec(spec.workload)
    shard = Shard.parse(spec.load.shard) if spec.load.shard else None
    endpoint = t.endpoint or backend.default_endpoint
    kind = protocol_for(endpoint)
    if backend.name == "openai-chat" and kind == "openai":
        kind = "openai-chat"
    return RunPlan(spec=spec, backend=backend, protocol=kind, endpoint=endpoint, load=load,
                   local_load=shard.local_plan(load) if shard is not None else load, shard=shard,
                   percentiles=percentiles, metric_names=metric_names, goodput=goodput, workload=workload,
                   embedded=spec.uses_embedded_engine())


def load_plan(spec: RunSpec) -> LoadPlan:
    """The load plan the load section means (load/schedule.py); a trace keeps its own schedule."""
    ld, w = spec.load, spec.workload
    ramp = (ld.ramp_up_strategy, ld.ramp_up_start_rps, ld.ramp_up_end_rps)
    ramp_up = ramp if any(v is not None for v in ramp) else None
    steps = tuple(ld.rate_steps) if ld.rate_steps else None
    if w.dataset_name == "trace":  # its count is the trace's (runner/workload_run.py)
        base = make_plan(ld.num_prompts, ld.request_rate, ld.max_concurrency, ld.burstiness, ld.arrival,
                         ld.warmup_requests, ld.rate_schedule, ramp_up, steps=steps, step_hold_s=ld.step_hold_s)
        return trace_plan(base, ld.num_prompts, w.trace_speed, ld.duration, ld.duration_grace)
    return make_plan(ld.num_prompts, ld.request_rate, ld.max_concurrency, ld.burstiness, ld.arrival,
                     ld.warmup_requests, ld.rate_schedule, ramp_up, steps=steps, step_hold_s=ld.step_hold_s,
                     duration=ld.duration, duration_grace=ld.duration_grace, seed=ld.seed)


def _check_ranges(spec: RunSpec) -> None:
    flat = spec.flat()
    for name, limit in _LIMITS.items():
        value = flat[name]
        if value is not None and abs(value) > limit:
            shown = value if abs(value) < 10**30 else ("-" if value < 0 else "") + "1e30+"
            raise FieldError(field_path(name), value, "{" + field_path(name) + "} {shown} is out of range",
                             "pass a value between 0 and {limit}", shown=shown, limit=limit)


def _check_target(spec: RunSpec) -> None:
    t, e = spec.target, spec.engine
    if t.base_url is not None:
        parts = urlsplit(t.base_url)
        if parts.scheme not in ("http", "https"):
            raise FieldError("target.base_url", t.base_url, "{target.base_url} {value!r} has no http:// or "
                             "https:// scheme", "write it as http://HOST:PORT")
        if not parts.hostname:
            raise FieldError("target.base_url", t.base_url, "{target.base_url} {value!r} has no host",
                             "write it as http://HOST:PORT")
    if t.port is not None and not 1 <= t.port <= 65535:
        raise FieldError("target.port", t.port, "{target.port} {value} is not a TCP port",
                         "pass a port between 1 and 65535")
    if e.engine_parallel < 1:
        raise FieldError("engine.engine_parallel", e.engine_parallel,
                         "{engine.engine_parallel} {value} must be at least 1",
                         "pass {engine.engine_parallel} N with N >= 1")
    if e.engine_ctx_size is not None and e.engine_ctx_size < 1:
        raise FieldError("engine.engine_ctx_size", e.engine_ctx_size,
                         "{engine.engine_ctx_size} {value} must be at least 1",
                         "pass a context size in tokens, or leave it out for the model's own")


def _check_client(spec: RunSpec) -> None:
    c, seed = spec.client, spec.load.seed
    if seed < 0:
        raise FieldError("load.seed", seed, "{load.seed} {value} must be a whole number >= 0",
                         "pass {load.seed} 0 or more")
    if c.temperature is not None and not 0 <= c.temperature < math.inf:
        raise FieldError("client.temperature", c.temperature, "{client.temperature} {value:g} must be 0 or more",
                         "pass e.g. {client.temperature} 0")
    if c.top_p is not None and not 0 < c.top_p <= 1:
        raise FieldError("client.top_p", c.top_p, "{client.top_p} {value:g} must be in (0, 1]",
                         "pass e.g. {client.top_p} 0.9")
    if c.top_k is not None and c.top_k < -1:
        raise FieldError("client.top_k", c.top_k, "{client.top_k} {value} must be -1 (off) or more",
                         "pass e.g. {client.top_k} 50")
    for name in ("request_timeout", "stall_timeout"):
        value = getattr(c, name)
        if value is not None and not value > 0:
            raise FieldError(f"client.{name}", value, "{client." + name + "} {value:g} must be positive",
                             "give seconds > 0")
    if c.max_errors is not None and c.max_errors < 0:
        raise FieldError("client.max_errors", c.max_errors, "{client.max_errors} {value} is negative",
                         "give 0 or more")
    if c.max_error_rate is not None and not 0 <= c.max_error_rate <= 1:
        raise FieldError("client.max_error_rate", c.max_error_rate,
                         "{client.max_error_rate} {value:g} must be between 0 and 1", "give a fraction, e.g. 0.05")
    from infermeter.clients.transports import KINDS

    if c.transport not in KINDS:
        raise FieldError("client.transport", c.transport, "{client.transport} {value!r} is not known",
                         "use one of {kinds}", kinds=", ".join(KINDS))


def _check_cost(spec: RunSpec) -> None:
    c = spec.cost
    if c.gpu_price is not None:
        if not 0 < c.gpu_price < math.inf:
            raise FieldError("cost.gpu_price", c.gpu_price,
                             "{cost.gpu_price} {value:g} must be a positive number of dollars per hour",
                             "pass e.g. {cost.gpu_price} 2.49 {cost.gpu_price_per} gpu")
        if c.gpu_price_per is None:
            raise FieldError("cost.gpu_price_per", None,
                             "{cost.gpu_price} {price:g} does not say what it is the price of",
                             "add {cost.gpu_price_per} gpu (per GPU-hour) or {cost.gpu_price_per} node "
                             "(the whole machine)", price=c.gpu_price)
        if c.dstack_run:
            raise FieldError("cost.dstack_run", c.dstack_run, "{cost.gpu_price} and {cost.dstack_run} both give "
                             "the price", "keep one: a stated price, or the dstack run's offer")
    elif c.gpu_price_per is not None:
        raise FieldError("cost.gpu_price_per", c.gpu_price_per, "{cost.gpu_price_per} {value} without "
                         "{cost.gpu_price}", "add {cost.gpu_price} PER_HOUR")
    for name in ("gpu_count", "launch_gpu_count"):
        value = getattr(c, name)
        if value is not None and not 1 <= value <= 100_000:
            raise FieldError(f"cost.{name}", value, "{cost." + name + "} {value} is not a number of GPUs",
                             "pass 1 or more")


def workload_spec(w: WorkloadSection):
    """The workload spec the workload section names (workloads/specs.py)."""
    from infermeter import workloads as ws

    name = w.dataset_name
    with _field("workload", name):
        if name == "sonnet":
            return ws.SonnetSpec(input_len=w.sonnet_input_len, output_len=w.sonnet_output_len,
                                 prefix_len=w.sonnet_prefix_len, path=w.dataset_path)
        if name == "random":
            return ws.RandomSpec(input_len=w.random_input_len, output_len=w.random_output_len,
                                 range_ratio=w.random_range_ratio, prefix_len=w.random_prefix_len)
    if name in ("sharegpt", "jsonl", "custom", "multi-turn", "trace") and not w.dataset_path:
        fix = {"multi-turn": "give a conversation file",
               "trace": "give a trace file, or infermeter:mooncake-small (docs/workloads.md)"}
        raise FieldError("workload.dataset_path", None, "{workload.dataset_name} {name} needs "
                         "{workload.dataset_path}", fix.get(name, "give the path of the dataset file"), name=name)
    with _field("workload", name):
        if name == "sharegpt":
            return ws.ShareGPTSpec(path=w.dataset_path, output_len=w.sharegpt_output_len)
        if name in ("jsonl", "custom"):
            return ws.JsonlSpec(path=w.dataset_path,
                                output_len=w.custom_output_len if name == "custom" else w.sharegpt_output_len)
        if name == "shared-prefix":
            return ws.SharedPrefixSpec(groups=w.prefix_groups, prefix_len=w.prefix_len,
                                       question_len=w.question_len, output_len=w.prefix_output_len)
        if name == "multi-turn":
            return ws.MultiTurnSpec(path=w.dataset_path, output_len=w.multi_turn_output_len,
                                    max_turns=w.multi_turn_max_turns, history=w.multi_turn_history,
                                    think_time=w.multi_turn_think_time)
        if name == "trace":
            return ws.TraceSpec(path=w.dataset_path, format=w.trace_format, speed=w.trace_speed,
                                block_size=w.trace_block_size, output_len=w.trace_output_len)
    raise FieldError("workload.dataset_name", name, "{workload.dataset_name} {value!r} is not known",
                     "use sonnet, random, sharegpt, jsonl, shared-prefix, multi-turn or trace")


def _check_workers(spec: RunSpec) -> None:
    """--workers N: N client processes, one shard each (runner/workers.py)."""
    ld = spec.load
    if ld.workers < 1:
        raise FieldError("load.workers", ld.workers, "{load.workers} {value} must be at least 1",
                         "pass {load.workers} N with N >= 1")
    if ld.workers == 1:
        return
    if ld.shard:
        raise FieldError("load.workers", ld.workers, "{load.workers} and {load.shard} do not combine",
                         "shard across hosts with {load.shard}, or across cores of one host with {load.workers}")
    if spec.uses_embedded_engine():
        raise FieldError("load.workers", ld.workers, "{load.workers} needs a server to point at",
                         "pass {target.base_url} (the embedded engine runs one client)")
    if ld.workers > ld.num_prompts:
        raise FieldError("load.workers", ld.workers, "{load.workers} {value} exceeds {load.num_prompts} {n}",
                         "use fewer workers than requests", n=ld.num_prompts)
    if ld.max_concurrency is not None and ld.workers > ld.max_concurrency:
        raise FieldError("load.workers", ld.workers, "{load.workers} {value} exceeds {load.max_concurrency} {n}",
                         "use at most one worker per concurrent request", n=ld.max_concurrency)
