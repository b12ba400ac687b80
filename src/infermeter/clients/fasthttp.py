"""A protocol-level HTTP/1.1 client: the request hot path with nothing between the socket and the clock.

``FastTransport`` is a drop-in for :class:`~infermeter.clients.http.HttpTransport`
(same ``post``/``get_json``/``notes``/``stale_failures``), built on
``asyncio.Protocol``: ``data_received`` stamps ``perf_counter()`` the moment
the loop hands it the bytes, before anything else runs, and no task wake-up,
stream reader or future lies between the read and the stamp.  Per read it
only strips the HTTP chunked framing (a slice or two) and appends
``(time, body bytes)`` to the :class:`RawExchange`; the SSE and JSON inside
are parsed after the response is complete, as with the aiohttp transport.

* Keep-alive connections, reused most-recently-idle first; the runner bounds
  how many are busy (its concurrency), the pool keeps at most
  ``max_connections`` idle.
* A kept-alive connection the server closed before answering (llama-server
  closes after every streamed response without ``Connection: close``) makes
  the request go again on a fresh connection; after ``STALE_LIMIT`` such
  failures every request gets its own connection (noted in the result), as
  the aiohttp transport does.
* Timeouts cost nothing per read: one sweeper wakes a few times a second and
  fails requests whose stream has been silent for ``stall_timeout`` (STALL)
  or that have run for ``request_timeout`` (TIMEOUT).
* Responses: ``Content-Length``, chunked (with trailers), or close-delimited
  bodies; ``1xx`` interim responses are skipped.  No compression is asked
  for (``Accept-Encoding: identity``).

``INFERMETER_TRANSPORT=aiohttp`` selects the aiohttp transport instead
(:func:`make_transport`); ``INFERMETER_REQUEST_ID_HEADER=X-Request-Id`` tags
each request with ``im-<index>`` (``infermeter selfcheck`` uses it to join
the test server's ground truth request by request).
"""

from __future__ import annotations

import asyncio
import os
import ssl as ssl_module
import time
from typing import Mapping
from urllib.parse import urlsplit

from infermeter.core.exchange import ErrorClass, RawExchange, http_error_class

STALE_LIMIT = 3  # stale keep-alive failures before every request gets its own connection
MAX_HEAD_BYTES = 1 << 16  # a response head larger than this is malformed
DEFAULT_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json",
                   "Accept-Encoding": "identity"}

# Connection states.
_IDLE, _HEAD, _BODY, _TRAILER, _DONE = range(5)
# Body framings.
_LENGTH, _CHUNKED, _CLOSE = range(3)


class _Malformed(Exception):
    pass


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection; one exchange at a time."""

    __slots__ = ("transport", "raw", "waiter", "state", "buf", "mode", "remaining", "crlf", "keep_alive",
                 "closed", "last_io", "uses", "stale", "failure", "eof_time", "clock")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.raw: RawExchange | None = None
        self.waiter: asyncio.Future | None = None
        self.state = _IDLE
        self.buf = b""
        self.mode = _CLOSE
        self.remaining = 0
        self.crlf = 0
        self.keep_alive = True
        self.closed = False
        self.last_io = 0.0
        self.uses = 0
        self.stale = False
        self.failure: tuple[ErrorClass, str] | None = None
        self.clock = time.perf_counter

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        t = self.clock()  # first thing: the moment the loop handed us the bytes
        raw = self.raw
        if raw is None or self.state == _DONE:  # bytes nobody asked for: the connection is not reusable
            self.keep_alive = False
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            return
        self.last_io = t
        try:
            if self.state == _HEAD:
                self._head(data, t, raw)
            elif self.mode == _CHUNKED:
                self._chunked(data, t, raw)
            elif self.mode == _LENGTH:
                self._length(data, t, raw)
            else:
                raw.times.append(t)
                raw.chunks.append(data)
        except (_Malformed, ValueError) as exc:
            self._fail(ErrorClass.RESET, f"malformed HTTP response: {exc}", t)
            self.keep_alive = False
            self.transport.close()

    def eof_received(self) -> bool:
        self._lost(None)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)

    # -- response parsing -----------------------------------------------------------
    def _head(self, data: bytes, t: float, raw: RawExchange) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise _Malformed(f"response head over {MAX_HEAD_BYTES} bytes")
                self.buf = buf
                return
            lines = buf[:end].split(b"\r\n")
            rest = buf[end + 4:]
            status_line = lines[0].split(None, 2)
            if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
                raise _Malformed(f"bad status line {lines[0][:80]!r}")
            status = int(status_line[1])
            if 100 <= status < 200 and status != 101:  # interim response: the real one follows
                buf = rest
                continue
            break
        self.buf = b""
        length = None
        chunked = False
        keep_alive = status_line[0] == b"HTTP/1.1"
        retry_after = None
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                v = value.strip().lower()
                if v == b"close":
                    keep_alive = False
                elif v == b"keep-alive":
                    keep_alive = True
            elif name == b"retry-after":
                retry_after = value.strip().decode("latin-1")
        raw.headers = t
        raw.status = status
        if status >= 400:
            raw.error = http_error_class(status)
            raw.retry_after = retry_after
        self.keep_alive = keep_alive
        self.state = _BODY
        if chunked:
            self.mode = _CHUNKED
            self.remaining = 0
            self.crlf = 0
        elif length is not None:
            self.mode = _LENGTH
            self.remaining = length
            if length == 0:
                self._complete(t)
                if rest:
                    self.keep_alive = False
                return
        else:
            self.mode = _CLOSE
            self.keep_alive = False
        if rest:
            if self.mode == _CHUNKED:
                self._chunked(rest, t, raw)
            elif self.mode == _LENGTH:
                self._length(rest, t, raw)
            else:
                raw.times.append(t)
                raw.chunks.append(rest)

    def _length(self, data: bytes, t: float, raw: RawExchange) -> None:
        left = self.remaining
        if len(data) > left:
            data = data[:left]
            self.keep_alive = False  # bytes past the body: do not trust the connection
        self.remaining = left - len(data)
        raw.times.append(t)
        raw.chunks.append(data)
        if self.remaining == 0:
            self._complete(t)

    def _chunked(self, data: bytes, t: float, raw: RawExchange) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if self.state == _TRAILER:
            self._trailer(data, t)
            return
        pos = 0
        n = len(data)
        rem = self.remaining
        crlf = self.crlf
        first = None  # the common case: one piece per read, no join
        pieces = None
        while pos < n:
            if rem:
                take = rem if rem <= n - pos else n - pos
                piece = data[pos:pos + take] if (pos or take != n) else data
                if first is None:
                    first = piece
                elif pieces is None:
                    pieces = [first, piece]
                else:
                    pieces.append(piece)
                pos += take
                rem -= take
                if not rem:
                    crlf = 2
                continue
            if crlf:
                skip = crlf if crlf <= n - pos else n - pos
                pos += skip
                crlf -= skip
                continue
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                if n - pos > 1024:
                    raise _Malformed("chunk-size line too long")
                self.buf = data[pos:]
                break
            size_field = data[pos:eol]
            semi = size_field.find(b";")
            size = int(size_field if semi < 0 else size_field[:semi], 16)
            if size < 0:
                raise _Malformed("negative chunk size")
            pos = eol + 2
            if size == 0:
                self.remaining = 0
                self.crlf = 0
                if first is not None:
                    raw.times.append(t)
                    raw.chunks.append(b"".join(pieces) if pieces else first)
                self.state = _TRAILER
                self._trailer(data[pos:], t)
                return
            rem = size
        self.remaining = rem
        self.crlf = crlf
        if first is not None:
            raw.times.append(t)
            raw.chunks.append(b"".join(pieces) if pieces else first)

    def _trailer(self, data: bytes, t: float) -> None:
        # After the last chunk: optional trailer fields, then an empty line.
        if data.startswith(b"\r\n"):
            rest = data[2:]
        else:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > MAX_HEAD_BYTES:
                    raise _Malformed("trailer too long")
                self.buf = data
                return
            rest = data[end + 4:]
        if rest:
            self.keep_alive = False
        self._complete(t)

    def _complete(self, t: float) -> None:
        self.state = _DONE
        raw = self.raw
        if raw is not None and raw.end is None:
            raw.end = t
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, cls: ErrorClass, detail: str, t: float | None = None, stale: bool = False) -> None:
        raw = self.raw
        if raw is None or self.state == _DONE:
            return
        self.state = _DONE
        self.keep_alive = False
        self.stale = stale
        if raw.end is None:
            raw.end = self.clock() if t is None else t
        if raw.error is None or raw.error in (ErrorClass.HTTP_4XX, ErrorClass.HTTP_5XX, ErrorClass.HTTP_429):
            raw.error = cls
            raw.error_detail = detail
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _lost(self, exc: Exception | None) -> None:
        t = self.clock()
        self.closed = True
        self.keep_alive = False
        if self.raw is None or self.state == _DONE:
            return
        if self.state == _BODY and self.mode == _CLOSE:  # a close-delimited body ends here
            self._complete(t)
            return
        raw = self.raw
        nothing_back = self.state == _HEAD and not self.buf
        if exc is None:
            detail = ("ServerDisconnectedError: the server closed the connection"
                      + (" before responding" if nothing_back else " mid-response"))
        else:
            detail = f"{type(exc).__name__}: {exc}"
        # No response byte on a reused connection: the server dropped it while idle.
        self._fail(ErrorClass.RESET, detail, t, stale=nothing_back and self.uses > 1 and raw.headers is None)

    # -- one exchange ----------------------------------------------------------------
    def start(self, raw: RawExchange, payload: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        self.raw = raw
        self.state = _HEAD
        self.buf = b""
        self.stale = False
        self.uses += 1
        self.waiter = waiter = loop.create_future()
        t = self.clock()
        raw.sent = t
        self.last_io = t
        self.transport.write(payload)
        return waiter

    def finish(self) -> bool:
        """Detach the finished exchange; True when the connection can carry another."""
        self.raw = None
        self.waiter = None
        ok = self.state == _DONE and self.keep_alive and not self.closed and not self.buf
        self.state = _IDLE
        return ok

    def abort(self) -> None:
        self.closed = True
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()


class FastTransport:
    """Keep-alive HTTP/1.1 connections driven by ``asyncio.Protocol`` callbacks."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        request_timeout: float | None = 3600.0,
        stall_timeout: float | None = 300.0,
        connect_timeout: float = 10.0,
        request_id_header: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # When set, ``post(..., request_id=i)`` sends the request's index in this
        # header (the test server records it, so its ground truth can be joined
        # request by request).  Off by default: vLLM takes X-Request-Id as its
        # own request id, which must be unique among requests in flight.
        self.request_id_header = request_id_header
        self._rid_prefix = f"{request_id_header}: im-".encode("latin-1") if request_id_header else b""
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl_module.create_default_context() if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/")
        host_header = parts.netloc.rpartition("@")[2]
        merged = {**DEFAULT_HEADERS, **(headers or {})}
        merged = {k: v for k, v in merged.items() if k.lower() not in ("host", "content-length", "connection",
                                                                        "transfer-encoding")}
        self._header_bytes = ("".join(f"{k}: {v}\r\n" for k, v in merged.items())
                              + f"Host: {host_header}\r\n").encode("latin-1")
        self._max_idle = max(1, max_connections)
        self._request_timeout = request_timeout
        self._stall_timeout = stall_timeout
        self._connect_timeout = connect_timeout
        self._idle: list[_Conn] = []
        self._busy: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._prefixes: dict[tuple[str, str], bytes] = {}
        self.stale_failures = 0
        self.notes: list[str] = []

    async def __aenter__(self) -> "FastTransport":
        self._loop = asyncio.get_running_loop()
        self._schedule_sweep()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in [*self._idle, *self._busy]:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
        self._busy.clear()

    # -- timeouts ---------------------------------------------------------------------
    def _schedule_sweep(self) -> None:
        limits = [x for x in (self._stall_timeout, self._request_timeout) if x]
        if not limits or self._loop is None:
            return
        period = min(1.0, max(0.05, min(limits) / 4))
        self._sweeper = self._loop.call_later(period, self._sweep)

    def _sweep(self) -> None:
        now = time.perf_counter()
        stall, total = self._stall_timeout, self._request_timeout
        for conn in list(self._busy):
            raw = conn.raw
            if raw is None or conn.state == _DONE:
                continue
            if total and raw.sent is not None and now - raw.sent > total:
                conn._fail(ErrorClass.TIMEOUT, "request timeout exceeded", now)
                conn.abort()
            elif stall and now - conn.last_io > stall:
                conn._fail(ErrorClass.STALL, f"no bytes for {stall:g} s", now)
                conn.abort()
        self._schedule_sweep()

    # -- connections -----------------------------------------------------------------
    async def _connect(self) -> _Conn:
        assert self._loop is not None, "use 'async with FastTransport(...)'"
        _, conn = await asyncio.wait_for(
            self._loop.create_connection(_Conn, self._host, self._port, ssl=self._ssl,
                                         server_hostname=self._host if self._ssl else None),
            timeout=self._connect_timeout)
        return conn

    def _take_idle(self) -> _Conn | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def _payload(self, method: str, path: str, body: bytes | None, request_id: int | None = None) -> bytes:
        key = (method, path)
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._header_bytes
            self._prefixes[key] = prefix
        if request_id is not None and self._rid_prefix:
            prefix = b"".join((prefix, self._rid_prefix, str(request_id).encode(), b"\r\n"))
        if body is None:
            return prefix + b"\r\n"
        return b"".join((prefix, b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body))

    async def post(self, path: str, body: bytes, raw: RawExchange, request_id: int | None = None) -> RawExchange:
        """POST ``body`` and record the response into ``raw`` (which the caller owns)."""
        payload = self._payload("POST", path, body, request_id)
        fresh = self.stale_failures >= STALE_LIMIT
        stale = await self._exchange(payload, raw, fresh)
        if stale:
            # The server had closed the pooled keep-alive connection before this
            # request reached it; no response byte came back: send it again on
            # a new connection.
            self.stale_failures += 1
            if self.stale_failures == STALE_LIMIT:
                self.notes.append("the server closes kept-alive connections after a response; "
                                  "infermeter opened one connection per request from then on")
            raw.retries += 1
            raw.error = raw.error_detail = None
            raw.sent = raw.headers = raw.end = raw.status = None
            await self._exchange(payload, raw, True)
        return raw

    async def _exchange(self, payload: bytes, raw: RawExchange, fresh: bool) -> bool:
        """One try; True when it failed on a reused connection before any response byte."""
        conn = None if fresh else self._take_idle()
        if conn is None:
            try:
                conn = await self._connect()
            except asyncio.CancelledError:
                raw.end = time.perf_counter()
                raw.error = ErrorClass.CANCELLED
                raise
            except (OSError, asyncio.TimeoutError, ssl_module.SSLError) as exc:
                raw.end = time.perf_counter()
                raw.error = ErrorClass.CONNECT
                detail = str(exc) or type(exc).__name__
                raw.error_detail = (f"cannot connect to {self._host}:{self._port}: {detail}"
                                    if not isinstance(exc, asyncio.TimeoutError) else
                                    f"connect timeout ({self._connect_timeout:g} s) to {self._host}:{self._port}")
                return False
        self._busy.add(conn)
        try:
            await conn.start(raw, payload, self._loop)
        except asyncio.CancelledError:
            if raw.end is None:
                raw.end = time.perf_counter()
            raw.error = ErrorClass.CANCELLED
            self._busy.discard(conn)
            conn.abort()
            raise
        self._busy.discard(conn)
        stale = conn.stale
        if conn.finish() and not fresh and len(self._idle) < self._max_idle:
            self._idle.append(conn)
        elif conn.transport is not None and not conn.closed:
            conn.transport.close()
        return stale

    async def get_json(self, path: str, timeout: float = 10.0) -> tuple[int, object | None]:
        """A small GET for preflight checks; returns (status, parsed JSON or None)."""
        raw = RawExchange()
        await asyncio.wait_for(self._exchange(self._payload("GET", path, None), raw, True), timeout)
        if raw.error is not None and raw.status is None:
            raise ConnectionError(raw.error_detail or raw.error.value)
        import orjson

        try:
            return raw.status or 0, orjson.loads(raw.body)
        except ValueError:
            return raw.status or 0, None


def make_transport(base_url: str, **kwargs):
    """The fast transport, or aiohttp's when ``INFERMETER_TRANSPORT=aiohttp``."""
    kind = os.environ.get("INFERMETER_TRANSPORT", "fast").lower()
    if kind == "aiohttp":
        from infermeter.clients.http import HttpTransport

        return HttpTransport(base_url, **kwargs)
    header = os.environ.get("INFERMETER_REQUEST_ID_HEADER") or None  # selfcheck: join with server truth
    return FastTransport(base_url, request_id_header=header, **kwargs)
