"""Server-side ground truth: per-request records, aggregates, Prometheus metrics."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Outcomes of a generation request.
OK = "ok"  # all planned tokens (and tail) written
FAULT = "fault"  # an injected fault decided how it ended
CLIENT_DISCONNECT = "client_disconnect"  # the client went away mid-response
REJECTED = "rejected"  # validation error (bad body, unknown model, too long)


class RequestRecord:
    """What the server did for one generation request.

    ``*_perf`` are ``time.perf_counter()`` values (CLOCK_MONOTONIC on Linux,
    comparable with a client's perf_counter on the same host); ``*_epoch``
    are ``time.time()`` values.  ``sched_first_perf`` is when the first
    token was due; ``ttft_lateness_s`` how late the server wrote it against
    that schedule; ``max_lateness_s`` the worst lateness of any token write.
    """

    __slots__ = (
        "seq",
        "id",
        "client_request_id",
        "endpoint",
        "stream",
        "fault",
        "status",
        "outcome",
        "prompt_tokens",
        "max_tokens",
        "tokens_planned",
        "tokens_sent",
        "arrival_epoch",
        "arrival_perf",
        "start_perf",
        "queue_wait_s",
        "sched_first_perf",
        "first_write_perf",
        "first_write_epoch",
        "last_write_perf",
        "last_write_epoch",
        "ttft_lateness_s",
        "max_lateness_s",
        "end_perf",
    )

    def __init__(self, seq: int, endpoint: str, arrival_perf: float, arrival_epoch: float):
        self.seq = seq
        self.id: str | None = None
        self.client_request_id: str | None = None
        self.endpoint = endpoint
        self.stream = False
        self.fault: str | None = None
        self.status = 200
        self.outcome = OK
        self.prompt_tokens = 0
        self.max_tokens = 0
        self.tokens_planned = 0
        self.tokens_sent = 0
        self.arrival_epoch = arrival_epoch
        self.arrival_perf = arrival_perf
        self.start_perf: float | None = None
        self.queue_wait_s = 0.0
        self.sched_first_perf: float | None = None
        self.first_write_perf: float | None = None
        self.first_write_epoch: float | None = None
        self.last_write_perf: float | None = None
        self.last_write_epoch: float | None = None
        self.ttft_lateness_s: float | None = None
        self.max_lateness_s: float | None = None
        self.end_perf: float | None = None

    def to_tuple(self) -> tuple:
        """Atomic values only: the garbage collector stops tracking such tuples."""
        return tuple([getattr(self, k) for k in self.__slots__])

    def to_dict(self) -> dict[str, Any]:
        return record_dict(self.to_tuple())


def record_dict(t: tuple) -> dict[str, Any]:
    d = dict(zip(RequestRecord.__slots__, t))
    fw, arr = d["first_write_perf"], d["arrival_perf"]
    d["server_ttft_s"] = fw - arr if fw is not None else None
    return d


class _Agg:
    __slots__ = ("n", "total", "max")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, v: float) -> None:
        self.n += 1
        self.total += v
        if v > self.max or self.n == 1:
            self.max = v

    def ms(self) -> dict[str, float | int | None]:
        if not self.n:
            return {"n": 0, "mean": None, "max": None}
        return {"n": self.n, "mean": self.total / self.n * 1e3, "max": self.max * 1e3}


class Stats:
    """Aggregates over finished generation requests, since start or reset."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self.reset()

    def reset(self) -> None:
        self.since_epoch = time.time()
        self.since_perf = time.perf_counter()
        self.count = 0
        self.outcomes: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.endpoints: dict[str, int] = {}
        self.tokens_sent = 0
        self.prompt_tokens = 0
        self.ttft_lateness = _Agg()
        self.max_lateness = _Agg()
        self.queue_wait = _Agg()
        self.server_ttft = _Agg()
        # finished records as tuples (see RequestRecord.to_tuple)
        self.records: deque[tuple] = deque(maxlen=self._keep)

    def add(self, r: RequestRecord) -> None:
        self.count += 1
        self.outcomes[r.outcome] = self.outcomes.get(r.outcome, 0) + 1
        st = str(r.status)
        self.statuses[st] = self.statuses.get(st, 0) + 1
        self.endpoints[r.endpoint] = self.endpoints.get(r.endpoint, 0) + 1
        if r.fault:
            self.faults[r.fault] = self.faults.get(r.fault, 0) + 1
        self.tokens_sent += r.tokens_sent
        self.prompt_tokens += r.prompt_tokens
        if r.ttft_lateness_s is not None:
            self.ttft_lateness.add(r.ttft_lateness_s)
        if r.max_lateness_s is not None:
            self.max_lateness.add(r.max_lateness_s)
        if r.start_perf is not None:
            self.queue_wait.add(r.queue_wait_s)
        if r.first_write_perf is not None:
            self.server_ttft.add(r.first_write_perf - r.arrival_perf)
        if self._keep:
            self.records.append(r.to_tuple())

    def snapshot(self, *, in_flight: int, running: int, waiting: int, records: bool) -> dict:
        out: dict[str, Any] = {
            "since_epoch": self.since_epoch,
            "since_perf": self.since_perf,
            "now_epoch": time.time(),
            "now_perf": time.perf_counter(),
            "count": self.count,
            "in_flight": in_flight,
            "running": running,
            "waiting": waiting,
            "outcomes": dict(self.outcomes),
            "statuses": dict(self.statuses),
            "endpoints": dict(self.endpoints),
            "faults": dict(self.faults),
            "tokens_sent": self.tokens_sent,
            "prompt_tokens": self.prompt_tokens,
            "ttft_lateness_ms": self.ttft_lateness.ms(),
            "max_token_lateness_ms": self.max_lateness.ms(),
            "queue_wait_ms": self.queue_wait.ms(),
            "server_ttft_ms": self.server_ttft.ms(),
        }
        if records:
            out["requests"] = [record_dict(t) for t in self.records]
        return out


class Metrics:
    """Prometheus metrics, named as vLLM (``vllm:*``) and TGI (``tgi_*``) name them."""

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        lbl = ["model_name"]
        self.running = Gauge(
            "vllm:num_requests_running", "Requests being generated.", lbl, registry=r
        ).labels(model)
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting in the queue.", lbl, registry=r
        ).labels(model)
        self.tgi_queue = Gauge("tgi_queue_size", "Requests waiting in the queue.", registry=r)
        self.tgi_batch = Gauge("tgi_batch_current_size", "Requests being generated.", registry=r)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Prompt tokens processed.", lbl, registry=r
        ).labels(model)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generation tokens sent.", lbl, registry=r
        ).labels(model)
        self._success = Counter(
            "vllm:request_success",
            "Finished requests.",
            ["model_name", "finished_reason"],
            registry=r,
        )
        self._success_children: dict[str, Any] = {}
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Server-side time to first token (arrival to first token write).",
            lbl,
            buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                     2.5, 5.0, 7.5, 10.0),  # fmt: skip
            registry=r,
        ).labels(model)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Server-side request latency (arrival to last write).",
            lbl,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        ).labels(model)
        self.faults = Counter(
            "testserver_faults", "Injected faults.", ["mode"], registry=r
        )
        self.requests = Counter(
            "testserver_requests", "Generation requests finished.", ["endpoint", "outcome"],
            registry=r,
        )  # fmt: skip
        self._model = model

    def success(self, reason: str) -> None:
        c = self._success_children.get(reason)
        if c is None:
            c = self._success_children[reason] = self._success.labels(self._model, reason)
        c.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
