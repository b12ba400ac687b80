"""The aiohttp application: OpenAI + TGI endpoints with injected timing and faults."""

from __future__ import annotations

import asyncio
import gc
import random
import signal
import socket
import time
from collections import deque
from collections.abc import Callable

import orjson
from aiohttp import web

from .. import __version__
from .config import FaultRule, TestServerConfig
from .requests import OPENAI, TGI, Gen, Reject, error_response, json_response, parse_request
from .stats import FAULT, OK, REJECTED, Metrics, RequestRecord, Stats
from .writer import POINT_MODES, ActiveFault, ResponseWriter, sleep_until

perf_counter = time.perf_counter


class TestServer(ResponseWriter):
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
        return json_response({"object": "list", "data": data})

    async def h_health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def h_version(self, request: web.Request) -> web.Response:
        return json_response({"version": __version__, "server": "infermeter-testserver"})

    async def h_info(self, request: web.Request) -> web.Response:
        cfg = self.config
        return json_response(
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
        return json_response(snap)

    async def h_stats_reset(self, request: web.Request) -> web.Response:
        self.stats.reset()
        return json_response({"reset": True, "since_epoch": self.stats.since_epoch})

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
                    raise Reject(400, "request body must be a JSON object")
                if self.config.keep_bodies:
                    self.bodies.append({"path": request.path, "headers": {str(k): v for k, v in request.headers.items()},
                                        "body": body})
                fault = self._pick_fault(request, rec.seq)
                gen = parse_request(self.config, self._models, body, api, chat, stream, compat)
            except Reject as e:
                rec.outcome = REJECTED
                rec.status = e.status
                return error_response(api, e.status, e.message, e.error_type)
            except orjson.JSONDecodeError as e:
                rec.outcome = REJECTED
                rec.status = 400
                return error_response(api, 400, f"invalid JSON body: {e}")
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
                    return error_response(
                        api, status, f"injected fault {fault.mode}", headers=headers
                    )
                if fault.mode == "die" and not self.config.allow_die:
                    rec.outcome = REJECTED
                    rec.status = 400
                    return error_response(
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
                raise Reject(400, f"invalid X-Test-Fault header: {e}") from None
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
        if mode in ("slow_headers", "hold_open", "late_usage"):
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
        self, rec: RequestRecord, gen: Gen, t0: float, fault: ActiveFault | None
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
        if fault is not None and fault.mode in POINT_MODES:
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
#: ``app[APP_KEY]`` is the app's :class:`TestServer` (its stats, config)
APP_KEY: web.AppKey[TestServer] = web.AppKey("testserver", TestServer)


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
