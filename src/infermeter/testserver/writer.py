"""Writing a response on the injected schedule: streamed tokens (SSE) or one JSON body, and the faults
that fire while writing."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from . import protocol as P
from .config import TestServerConfig
from .requests import TGI, Gen, error_response
from .stats import CLIENT_DISCONNECT, FAULT, RequestRecord

perf_counter = time.perf_counter


#: a token is written when it is due within this many seconds (timer granularity)
SLACK_S = 50e-6


#: faults that fire at a token position (``after``)
POINT_MODES = frozenset(
    {"reset", "stall", "bad_json", "bad_utf8", "no_data", "oversized", "tgi_overloaded", "die"}
)
#: point faults that end the response
TERMINAL_MODES = frozenset({"reset", "tgi_overloaded", "die"})

SSE_HEADERS_OPENAI = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
SSE_HEADERS_TGI = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


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


class ResponseWriter:
    """The writing half of :class:`~infermeter.testserver.server.TestServer` (its timing state lives there)."""

    config: TestServerConfig  # set by TestServer, as are _acquire, _release and _schedule

    def _format(self, gen: Gen, rid: str, fault: ActiveFault | None) -> P.StreamFormat:
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
        self, request: web.Request, rec: RequestRecord, gen: Gen, fault: ActiveFault | None
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
        gen: Gen,
        fault: ActiveFault | None,
        fmt: P.StreamFormat,
        t0: float,
    ) -> web.StreamResponse:
        n = gen.n
        sched, k = self._schedule(rec, gen, t0, fault)
        mode = fault.mode if fault is not None else None
        tgi = gen.api == TGI
        include_usage = gen.include_usage and mode != "no_usage"
        late_tail = mode == "late_usage" and not tgi  # the usage chunk and [DONE] come `seconds` late
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
                        abort_connection(request, fault.rst)  # type: ignore[union-attr]
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
                    if mode in ("bad_json", "bad_utf8"):
                        data = P.BAD_JSON_DATA if mode == "bad_json" else P.BAD_UTF8_DATA
                        pending += (b"data:" if tgi else b"data: ") + data + b"\n\n"
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
                if j == n and k != n and not late_tail:
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
                if late_tail:
                    if pending:
                        await write(pending)
                        pending = b""
                    await asyncio.sleep(fault.seconds)  # type: ignore[union-attr]
                chunk = pending + fmt.tail(n, include_usage, done)
                if chunk:
                    await write(chunk)
            if mode == "hold_open":  # the stream is over; the body is not
                await asyncio.sleep(fault.seconds)  # type: ignore[union-attr]
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
        self, request: web.Request, rec: RequestRecord, gen: Gen, fault: ActiveFault | None
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
            if mode in TERMINAL_MODES:
                await sleep_until(sched(min(k, n - 1)))
                rec.outcome = FAULT
                if mode == "reset":
                    abort_connection(request, fault.rst)  # type: ignore[union-attr]
                    return web.Response(status=200)
                if mode == "die":
                    os._exit(self.config.die_exit_code)
                rec.status = 429 if gen.api == TGI else 503
                return error_response(
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


def abort_connection(request: web.Request, rst: bool) -> None:
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
