"""The aiohttp application: OpenAI + TGI endpoints with injected timing and faults."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .. import __version__
from . import protocol as P
from .config import FaultRule, TestServerConfig
from .stats import CLIENT_DISCONNECT, FAULT, OK, REJECTED, Metrics, RequestRecord, Stats

perf_counter = time.perf_counter

#: a token is written when it is due within this many seconds (timer granularity)
SLACK_S = 50e-6

#: faults that fire at a token position (``after``)
_POINT_MODES = frozenset(
    {"reset", "stall", "bad_json", "no_data", "oversized", "tgi_overloaded", "die"}
)
#: point faults that end the response
_TERMINAL_MODES = frozenset({"reset", "tgi_overloaded", "die"})

_OPENAI_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    408: "RequestTimeoutError",
    413: "BadRequestError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}
_TGI_ERROR_TYPES = {
    400: "validation",
    422: "validation",
    424: "generation",
    429: "overloaded",
    500: "generation",
    503: "overloaded",
}

SSE_HEADERS_OPENAI = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
SSE_HEADERS_TGI = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

OPENAI = "openai"
TGI = "tgi"


async def sleep_until(t: float) -> None:
    """Sleep until ``perf_counter() >= t - SLACK_S`` (never returns early)."""
    d = t - perf_counter()
    while d > SLACK_S:
        await asyncio.sleep(d)
        d = t - perf_counter()


@dataclass(slots=True)
class ActiveFault:
    mode: str
    after: int
    seconds: float
    size: int
    rst: bool
    kind: str

    @property
    def http_status(self) -> int | None:
        if self.mode.startswith("http_"):
            return int(self.mode[5:])
        return None


class _Reject(Exception):
    """Validation failure: answer ``status`` with an API-shaped error."""

    def __init__(self, status: int, message: str, error_type: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


@dataclass(slots=True)
class _Gen:
    api: str  # OPENAI | TGI
    chat: bool
    stream: bool
    model: str
    prompt_tokens: int
    max_tokens: int
    n: int
    finish: str
    include_usage: bool
    details: bool
    compat_list: bool  # TGI "POST /" non-streaming answers a list


def count_words(text: str) -> int:
    return len(text.split())


class TestServer:
    """State and handlers of one test server (one per process normally)."""

    __test__ = False  # not a pytest test class

    def __init__(self, config: TestServerConfig) -> None:
        self.config = config
        self.stats = Stats(config.stats_keep_requests)
        self.bodies: deque[dict] = deque(maxlen=config.keep_bodies or 1)
        self.metrics = Metrics(config.model)
        self._seq = 0
        self._in_flight = 0
        self._running = 0
        self._waiting = 0
        self._sem = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
        self._rng = random.Random(config.seed)
        self._models = set(config.served_models)
        self._model_json = orjson.dumps(config.model)
        self._created = int(time.time())
        self._rules: list[FaultRule] = [
            r
            if (r.rate is not None or r.every is not None)
            else r.model_copy(update={"rate": config.fault_rate, "every": config.fault_every})
            for r in config.faults
        ]

    # ------------------------------------------------------------------ app
    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app[APP_KEY] = self
        r = app.router
        r.add_post("/v1/completions", self.h_completions)
        r.add_post("/v1/chat/completions", self.h_chat)
        r.add_post("/generate_stream", self.h_generate_stream)
        r.add_post("/generate", self.h_generate)
        r.add_post("/", self.h_tgi_compat)
        r.add_get("/v1/models", self.h_models)
        r.add_get("/health", self.h_health)
        r.add_get("/version", self.h_version)
        r.add_get("/info", self.h_info)
        r.add_get("/metrics", self.h_metrics)
        r.add_get("/stats", self.h_stats)
        r.add_post("/stats/reset", self.h_stats_reset)
        return app

    # ------------------------------------------------------------ small GETs
    async def h_models(self, request: web.Request) -> web.Response:
        cfg = self.config
        data = [
            {
                "id": name,
                "object": "model",
                "created": self._created,
                "owned_by": "infermeter-testserver",
                "root": cfg.model,
                "parent": None,
                "max_model_len": cfg.max_model_len,
            }
            for name in cfg.served_models
        ]
        return _json({"object": "list", "data": data})

    async def h_health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def h_version(self, request: web.Request) -> web.Response:
        return _json({"version": __version__, "server": "infermeter-testserver"})

    async def h_info(self, request: web.Request) -> web.Response:
        cfg = self.config
        return _json(
            {
                "model_id": cfg.model,
                "model_sha": None,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": cfg.max_concurrency or 128,
                "max_input_tokens": max(cfg.max_model_len - 1, 1),
                "max_total_tokens": cfg.max_model_len,
                "version": __version__,
                "router": "infermeter-testserver",
            }
        )

    async def h_metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def h_stats(self, request: web.Request) -> web.Response:
        want = request.query.get("requests", "0").lower() in ("1", "true", "yes")
        snap = self.stats.snapshot(
            in_flight=self._in_flight,
            running=self._running,
            waiting=self._waiting,
            records=want,
        )
        snap["config"] = self.config.model_dump()
        if self.config.keep_bodies and request.query.get("bodies", "0").lower() in ("1", "true", "yes"):
            snap["bodies"] = list(self.bodies)
        return _json(snap)

    async def h_stats_reset(self, request: web.Request) -> web.Response:
        self.stats.reset()
        return _json({"reset": True, "since_epoch": self.stats.since_epoch})

    # ------------------------------------------------------- generation APIs
    async def h_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completions", OPENAI, chat=False)

    async def h_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat", OPENAI, chat=True)

    async def h_generate_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "generate_stream", TGI, stream=True)

    async def h_generate(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "generate", TGI, stream=False)

    async def h_tgi_compat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "tgi_compat", TGI, stream=None, compat=True)

    async def _generate(
        self,
        request: web.Request,
        endpoint: str,
        api: str,
        *,
        chat: bool = False,
        stream: bool | None = None,
        compat: bool = False,
    ) -> web.StreamResponse:
        arrival_perf = perf_counter()
        arrival_epoch = time.time()
        self._seq += 1
        rec = RequestRecord(self._seq, endpoint, arrival_perf, arrival_epoch)
        rec.client_request_id = request.headers.get("X-Request-Id")
        self._in_flight += 1
        try:
            try:
                raw = await request.read()
                body = orjson.loads(raw) if raw else {}
                if not isinstance(body, dict):
                    raise _Reject(400, "request body must be a JSON object")
                if self.config.keep_bodies:
                    self.bodies.append({"path": request.path, "headers": {str(k): v for k, v in request.headers.items()},
                                        "body": body})
                fault = self._pick_fault(request, rec.seq)
                gen = self._parse(body, api, chat, stream, compat)
            except _Reject as e:
                rec.outcome = REJECTED
                rec.status = e.status
                return self._error(api, e.status, e.message, e.error_type)
            except orjson.JSONDecodeError as e:
                rec.outcome = REJECTED
                rec.status = 400
                return self._error(api, 400, f"invalid JSON body: {e}")
            rec.stream = gen.stream
            rec.prompt_tokens = gen.prompt_tokens
            rec.max_tokens = gen.max_tokens
            rec.tokens_planned = gen.n
            if fault is not None:
                rec.fault = fault.mode
                self.metrics.faults.labels(fault.mode).inc()
                status = fault.http_status
                if status is not None:
                    rec.outcome = FAULT
                    rec.status = status
                    if fault.seconds:
                        await sleep_until(arrival_perf + fault.seconds)
                    headers = {"Retry-After": "1"} if status in (429, 503) else None
                    return self._error(
                        api, status, f"injected fault {fault.mode}", headers=headers
                    )
                if fault.mode == "die" and not self.config.allow_die:
                    rec.outcome = REJECTED
                    rec.status = 400
                    return self._error(
                        api, 400, "fault 'die' is disabled; start the server with --allow-die"
                    )
            if gen.stream:
                return await self._stream(request, rec, gen, fault)
            return await self._unary(request, rec, gen, fault)
        finally:
            self._in_flight -= 1
            rec.end_perf = perf_counter()
            self._record(rec)

    def _record(self, rec: RequestRecord) -> None:
        self.stats.add(rec)
        m = self.metrics
        if rec.prompt_tokens and rec.outcome != REJECTED:
            m.prompt_tokens.inc(rec.prompt_tokens)
        if rec.tokens_sent:
            m.generation_tokens.inc(rec.tokens_sent)
        if rec.first_write_perf is not None:
            m.ttft.observe(rec.first_write_perf - rec.arrival_perf)
        if rec.last_write_perf is not None:
            m.e2e.observe(rec.last_write_perf - rec.arrival_perf)
        if rec.outcome == OK:
            m.success("length" if rec.tokens_sent >= rec.max_tokens else "stop")
        m.requests.labels(rec.endpoint, rec.outcome).inc()

    # ------------------------------------------------------------- parsing
    def _pick_fault(self, request: web.Request, seq: int) -> ActiveFault | None:
        cfg = self.config
        rule: FaultRule | None = None
        hdr = request.headers.get("X-Test-Fault")
        if hdr is not None and hdr.strip():
            try:
                rule = FaultRule.parse(hdr)
            except ValueError as e:
                raise _Reject(400, f"invalid X-Test-Fault header: {e}") from None
        else:
            for r in self._rules:
                if r.every:
                    hit = seq % r.every == 0
                elif r.rate is not None:
                    hit = self._rng.random() < r.rate
                else:
                    hit = True
                if hit:
                    rule = r
                    break
        if rule is None or rule.mode == "none":
            return None
        mode = rule.mode
        if mode == "slow_headers":
            seconds = rule.seconds if rule.seconds is not None else cfg.delay_s
        elif mode == "stall":
            seconds = rule.seconds if rule.seconds is not None else cfg.stall_s
        else:
            seconds = rule.seconds or 0.0
        return ActiveFault(
            mode=mode,
            after=rule.after if rule.after is not None else cfg.fault_after,
            seconds=seconds,
            size=rule.size or cfg.oversized_bytes,
            rst=rule.rst,
            kind=rule.kind,
        )

    def _parse(
        self, body: dict, api: str, chat: bool, stream: bool | None, compat: bool
    ) -> _Gen:
        cfg = self.config
        if api == OPENAI:
            model = body.get("model")
            if model is None:
                model = cfg.model
            elif model not in self._models:
                raise _Reject(404, f"The model `{model}` does not exist.", "NotFoundError")
            if chat:
                words = _chat_words(body.get("messages"))
                max_tokens = body.get("max_completion_tokens")
                if max_tokens is None:
                    max_tokens = body.get("max_tokens")
            else:
                words = _prompt_words(body.get("prompt"))
                max_tokens = body.get("max_tokens")
            do_stream = bool(body.get("stream", False))
            so = body.get("stream_options") or {}
            include_usage = bool(isinstance(so, dict) and so.get("include_usage"))
            ignore_eos = bool(body.get("ignore_eos", False))
            details = False
        else:
            model = cfg.model
            inputs = body.get("inputs")
            if not isinstance(inputs, str):
                raise _Reject(422, "Input validation error: `inputs` must be a string")
            words = count_words(inputs)
            params = body.get("parameters") or {}
            if not isinstance(params, dict):
                raise _Reject(422, "Input validation error: `parameters` must be an object")
            max_tokens = params.get("max_new_tokens")
            do_stream = bool(body.get("stream", False)) if stream is None else stream
            include_usage = False
            ignore_eos = False
            details = bool(params.get("details", False))
        ptoks = words if cfg.prompt_tokens_per_word == 1.0 else round(
            words * cfg.prompt_tokens_per_word
        )  # fmt: skip
        explicit = max_tokens is not None
        if not explicit:
            max_tokens = cfg.default_max_tokens
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            if api == OPENAI:
                raise _Reject(400, f"max_tokens must be at least 1, got {max_tokens}.")
            raise _Reject(
                422, "Input validation error: `max_new_tokens` must be strictly positive"
            )
        limit = cfg.max_model_len
        if api == OPENAI:
            if ptoks > limit:
                raise _Reject(
                    400,
                    f"This model's maximum context length is {limit} tokens. However, your "
                    f"request has {ptoks} input tokens. Please reduce the length of the "
                    "input messages.",
                )
            if explicit and ptoks + max_tokens > limit:
                raise _Reject(
                    400,
                    f"This model's maximum context length is {limit} tokens. However, you "
                    f"requested {ptoks + max_tokens} tokens ({ptoks} in the messages, "
                    f"{max_tokens} in the completion). Please reduce the length of the "
                    "messages or completion.",
                )
        elif ptoks + max_tokens > limit:
            raise _Reject(
                422,
                f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= "
                f"{limit}. Given: {ptoks} `inputs` tokens and {max_tokens} `max_new_tokens`",
            )
        n = max_tokens
        if cfg.eos_after is not None and not ignore_eos and cfg.eos_after < max_tokens:
            n = cfg.eos_after
        if n == max_tokens:
            finish = "length"
        else:
            finish = "stop" if api == OPENAI else "eos_token"
        return _Gen(
            api=api,
            chat=chat,
            stream=do_stream,
            model=model,
            prompt_tokens=ptoks,
            max_tokens=max_tokens,
            n=n,
            finish=finish,
            include_usage=include_usage,
            details=details,
            compat_list=compat,
        )

    def _error(
        self,
        api: str,
        status: int,
        message: str,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        if api == OPENAI:
            body = P.openai_error(
                message, error_type or _OPENAI_ERROR_TYPES.get(status, "Error"), status
            )
        else:
            body = P.tgi_error(message, error_type or _TGI_ERROR_TYPES.get(status, "error"))
        return _json(body, status=status, headers=headers)

    # ------------------------------------------------------------- timing
    async def _acquire(self, rec: RequestRecord, t0: float) -> float:
        """Take a concurrency slot; return the (possibly later) schedule origin."""
        m = self.metrics
        sem = self._sem
        if sem is not None:
            if sem.locked():
                self._waiting += 1
                m.waiting.inc()
                m.tgi_queue.inc()
                before = perf_counter()
                try:
                    await sem.acquire()
                finally:
                    self._waiting -= 1
                    m.waiting.dec()
                    m.tgi_queue.dec()
                now = perf_counter()
                rec.queue_wait_s = now - before
                t0 = max(t0, now)
            else:
                await sem.acquire()
        self._running += 1
        m.running.inc()
        m.tgi_batch.inc()
        rec.start_perf = t0
        return t0

    def _release(self) -> None:
        self._running -= 1
        self.metrics.running.dec()
        self.metrics.tgi_batch.dec()
        if self._sem is not None:
            self._sem.release()

    def _schedule(
        self, rec: RequestRecord, gen: _Gen, t0: float, fault: ActiveFault | None
    ) -> tuple[Callable[[int], float], int]:
        """Return ``(sched, k)``: due time of token i (no stall), the fault's token position.

        A point fault fires before token ``k`` (after ``k`` tokens); ``k == n``
        means after the last token (before usage/[DONE]).
        """
        cfg = self.config
        n = gen.n
        ttft = cfg.ttft_ms * 1e-3 + gen.prompt_tokens * cfg.ttft_per_prompt_token_us * 1e-6
        itl = cfg.itl_ms * 1e-3
        t_first: float
        k = -1
        if fault is not None and fault.mode in _POINT_MODES:
            k = min(fault.after, n - 1 if fault.mode == "oversized" else n)
        if cfg.ttft_jitter_ms or cfg.itl_jitter_ms:
            rng = random.Random(cfg.seed * 1_000_003 + rec.seq)
            jt = cfg.ttft_jitter_ms * 1e-3
            ji = cfg.itl_jitter_ms * 1e-3
            ttft = max(0.0, ttft + rng.uniform(-jt, jt)) if jt else ttft
            offs = [0.0] * n
            acc = 0.0
            for i in range(1, n):
                acc += max(0.0, itl + rng.uniform(-ji, ji)) if ji else itl
                offs[i] = acc
            t_first = t0 + ttft

            def sched(i: int) -> float:
                return t_first + offs[i]

        else:
            t_first = t0 + ttft

            def sched(i: int) -> float:
                return t_first + i * itl

        rec.sched_first_perf = t_first
        return sched, k

    # ------------------------------------------------------------ streaming
    def _format(self, gen: _Gen, rid: str, fault: ActiveFault | None) -> P.StreamFormat:
        created = int(time.time())
        if gen.api == TGI:
            replace = None
            if fault is not None and fault.mode == "oversized":
                replace = (min(fault.after, gen.n - 1), P.oversized_text(fault.size))
            return P.TgiFormat(gen.prompt_tokens, gen.finish, gen.details, replace)
        if gen.chat:
            return P.ChatFormat(
                rid, created, gen.model, gen.prompt_tokens, gen.finish, self.config.chat_role_chunk
            )
        return P.CompletionsFormat(rid, created, gen.model, gen.prompt_tokens, gen.finish)

    async def _stream(
        self, request: web.Request, rec: RequestRecord, gen: _Gen, fault: ActiveFault | None
    ) -> web.StreamResponse:
        rid = ("chatcmpl-" if gen.chat else "cmpl-") + os.urandom(16).hex()
        rec.id = rid
        fmt = self._format(gen, rid, fault)
        headers = dict(SSE_HEADERS_TGI if gen.api == TGI else SSE_HEADERS_OPENAI)
        headers["X-Testserver-Seq"] = str(rec.seq)
        resp = web.StreamResponse(status=200, headers=headers)
        t0 = rec.arrival_perf
        mode = fault.mode if fault is not None else None
        if mode == "slow_headers":
            t0 += fault.seconds  # type: ignore[union-attr]
            await sleep_until(t0)
        try:
            await resp.prepare(request)
        except ConnectionError:
            rec.outcome = CLIENT_DISCONNECT
            return resp
        t0 = await self._acquire(rec, t0)
        try:
            return await self._stream_tokens(request, resp, rec, gen, fault, fmt, t0)
        finally:
            self._release()

    async def _stream_tokens(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        rec: RequestRecord,
        gen: _Gen,
        fault: ActiveFault | None,
        fmt: P.StreamFormat,
        t0: float,
    ) -> web.StreamResponse:
        n = gen.n
        sched, k = self._schedule(rec, gen, t0, fault)
        mode = fault.mode if fault is not None else None
        tgi = gen.api == TGI
        include_usage = gen.include_usage and mode != "no_usage"
        done = mode != "no_done"
        tgi_no_end = tgi and mode == "no_done"
        oversized_at = k if mode == "oversized" else -1
        oversized = P.oversized_text(fault.size) if mode == "oversized" else ""  # type: ignore[union-attr]
        write = resp.write
        token = fmt.token
        pending = fmt.head
        tail_sent = False
        i = 0
        max_late = 0.0
        try:
            while True:
                if i == k:
                    if mode == "stall":
                        # nothing is sent for at least `seconds` after the last write;
                        # the rest of the schedule shifts by the stall
                        base = sched
                        gap = fault.seconds  # type: ignore[union-attr]
                        prev = rec.last_write_perf
                        if k < n:
                            shift = gap if prev is None else max(gap, prev + gap - base(k))
                            point = base(k) + shift
                        else:
                            shift = 0.0
                            point = max(base(n - 1), prev or 0.0) + gap

                        def sched(x: int, base=base, shift=shift, k=k) -> float:
                            return base(x) + shift if x >= k else base(x)

                    else:
                        point = sched(k) if k < n else sched(n - 1)
                    k = -1  # handled
                    await sleep_until(point)
                    if mode == "reset":
                        rec.outcome = FAULT
                        _abort(request, fault.rst)  # type: ignore[union-attr]
                        return resp
                    if mode == "die":
                        os._exit(self.config.die_exit_code)
                    if mode == "tgi_overloaded":
                        rec.outcome = FAULT
                        ev = fmt.error_event("Model is overloaded", "overloaded", 503)
                        if not tgi:
                            ev += P.DONE
                        await write(pending + ev)
                        return resp
                    if mode == "bad_json":
                        pending += (b"data:" if tgi else b"data: ") + P.BAD_JSON_DATA + b"\n\n"
                    elif mode == "no_data":
                        kind = fault.kind  # type: ignore[union-attr]
                        if kind in ("comment", "both"):
                            pending += P.SSE_COMMENT
                        if kind in ("event", "both"):
                            pending += P.SSE_PING
                if i >= n:
                    break
                t = sched(i)
                await sleep_until(t)
                now = perf_counter()
                j = i + 1
                while j < n and j != k and sched(j) <= now + SLACK_S:
                    j += 1
                if j - i == 1 and oversized_at != i:
                    chunk = token(i, i == n - 1 and not tgi_no_end)
                else:
                    parts = []
                    for x in range(i, j):
                        last = x == n - 1 and not tgi_no_end
                        if x == oversized_at:
                            parts.append(fmt.token_with_text(x, oversized, last))
                        else:
                            parts.append(token(x, last))
                    chunk = b"".join(parts)
                if pending:
                    chunk = pending + chunk
                    pending = b""
                if j == n and k != n:
                    chunk += fmt.tail(n, include_usage, done)
                    tail_sent = True
                late = now - t
                if late > max_late:
                    max_late = late
                if i == 0:
                    rec.first_write_perf = now
                    rec.first_write_epoch = time.time()
                    rec.ttft_lateness_s = late
                rec.last_write_perf = now
                rec.last_write_epoch = time.time()
                await write(chunk)
                rec.tokens_sent = j
                i = j
            if not tail_sent:
                chunk = pending + fmt.tail(n, include_usage, done)
                if chunk:
                    await write(chunk)
            if mode is not None:
                rec.outcome = FAULT
            return resp
        except ConnectionError:
            rec.outcome = CLIENT_DISCONNECT
            return resp
        except asyncio.CancelledError:
            rec.outcome = CLIENT_DISCONNECT
            raise
        finally:
            rec.max_lateness_s = max_late if rec.first_write_perf is not None else None

    # -------------------------------------------------------- non-streaming
    async def _unary(
        self, request: web.Request, rec: RequestRecord, gen: _Gen, fault: ActiveFault | None
    ) -> web.StreamResponse:
        rid = ("chatcmpl-" if gen.chat else "cmpl-") + os.urandom(16).hex()
        rec.id = rid
        mode = fault.mode if fault is not None else None
        t0 = rec.arrival_perf
        if mode == "slow_headers":
            t0 += fault.seconds  # type: ignore[union-attr]
        t0 = await self._acquire(rec, t0)
        try:
            n = gen.n
            sched, k = self._schedule(rec, gen, t0, fault)
            if mode in _TERMINAL_MODES:
                await sleep_until(sched(min(k, n - 1)))
                rec.outcome = FAULT
                if mode == "reset":
                    _abort(request, fault.rst)  # type: ignore[union-attr]
                    return web.Response(status=200)
                if mode == "die":
                    os._exit(self.config.die_exit_code)
                rec.status = 429 if gen.api == TGI else 503
                return self._error(
                    gen.api, rec.status, "Model is overloaded", headers={"Retry-After": "1"}
                )
            end = sched(n - 1)
            if mode == "stall":
                end += fault.seconds  # type: ignore[union-attr]
            await sleep_until(end)
            replace = None
            if mode == "oversized":
                replace = (k, P.oversized_text(fault.size))  # type: ignore[union-attr]
            usage = None if mode == "no_usage" else P.usage_dict(gen.prompt_tokens, n)
            if mode == "bad_json":
                raw = P.BAD_JSON_DATA
            elif gen.api == TGI:
                obj: Any = P.tgi_generate_response(n, gen.finish, gen.details, replace)
                if gen.compat_list:
                    obj = [obj]
                raw = orjson.dumps(obj)
            else:
                text = P.output_text(n, replace)
                build = P.chat_response if gen.chat else P.completions_response
                raw = orjson.dumps(build(rid, int(time.time()), gen.model, text, gen.finish, usage))
            now = perf_counter()
            rec.first_write_perf = rec.last_write_perf = now
            rec.first_write_epoch = rec.last_write_epoch = time.time()
            rec.max_lateness_s = now - end
            rec.tokens_sent = n
            if mode is not None:
                rec.outcome = FAULT
            return web.Response(
                body=raw,
                headers={"Content-Type": "application/json", "X-Testserver-Seq": str(rec.seq)},
            )
        finally:
            self._release()


#: ``app[APP_KEY]`` is the app's :class:`TestServer` (its stats, config)
APP_KEY: web.AppKey[TestServer] = web.AppKey("testserver", TestServer)


def _abort(request: web.Request, rst: bool) -> None:
    transport = request.transport
    if transport is None:
        return
    if rst:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
    transport.abort()


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    h = {"Content-Type": "application/json"}
    if headers:
        h.update(headers)
    return web.Response(body=orjson.dumps(obj), status=status, headers=h)


def _prompt_words(prompt: Any) -> int:
    if isinstance(prompt, str):
        return count_words(prompt)
    if isinstance(prompt, list):
        if prompt and all(isinstance(x, int) and not isinstance(x, bool) for x in prompt):
            return len(prompt)  # token ids
        if len(prompt) == 1:
            return _prompt_words(prompt[0])
        raise _Reject(400, "the test server supports one prompt per request")
    raise _Reject(400, "`prompt` must be a string, a list of token ids or a list of one string")


def _chat_words(messages: Any) -> int:
    if not isinstance(messages, list) or not messages:
        raise _Reject(400, "`messages` must be a non-empty list")
    words = 0
    for m in messages:
        if not isinstance(m, dict):
            raise _Reject(400, "each message must be an object")
        content = m.get("content")
        if isinstance(content, str):
            words += count_words(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    words += count_words(part["text"])
    return words


def _listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def create_app(config: TestServerConfig | None = None) -> web.Application:
    """The aiohttp application (for in-process use; prefer the subprocess helper)."""
    return TestServer(config or TestServerConfig()).make_app()


async def serve(
    config: TestServerConfig,
    *,
    on_ready: Callable[[str, int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set or SIGINT/SIGTERM; call ``on_ready(host, port)``."""
    app = create_app(config)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=config.shutdown_timeout_s,
    )
    await runner.setup()
    host = config.host
    sock = _listen(host, config.port)
    await web.SockSite(runner, sock, backlog=config.backlog).start()
    port = sock.getsockname()[1]
    if config.shared_port is not None:
        shared = _listen(host, config.shared_port, reuse_port=True)
        await web.SockSite(runner, shared, backlog=config.backlog).start()
    # Move everything allocated so far (modules, app) out of the collector's
    # reach: full collections stay short, so they do not delay token writes.
    gc.collect()
    gc.freeze()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-main thread
            pass
    try:
        if on_ready is not None:
            on_ready(host, port)
        await stop.wait()
    finally:
        await runner.cleanup()
