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
  the request go again on a fresh connection; after ``retry.LIMIT`` such
  failures every request gets its own connection (noted in the result): the
  rule of :mod:`infermeter.clients.retry`, shared with the aiohttp transport.
* Timeouts cost nothing per read: one sweeper wakes a few times a second and
  fails requests whose stream has been silent for ``stall_timeout`` (STALL)
  or that have run for ``request_timeout`` (TIMEOUT).
* Responses: ``Content-Length``, chunked (with trailers), or close-delimited
  bodies; ``1xx`` interim responses are skipped.  No compression is asked
  for (``Accept-Encoding: identity``).

``--transport aiohttp`` selects the aiohttp transport instead
(:func:`infermeter.clients.transports.make_transport`); a ``request_id_header``
tags each request with its index (``infermeter selfcheck`` uses it to join the
test server's ground truth request by request).
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from typing import Mapping
from urllib.parse import urlsplit

from infermeter.clients.fastconn import _DONE, DEFAULT_HEADERS, _Conn
from infermeter.clients.retry import StaleRule
from infermeter.core.exchange import ErrorClass, RawExchange


class FastTransport:
    """Keep-alive HTTP/1.1 connections driven by ``asyncio.Protocol`` callbacks."""

    @property
    def stale_failures(self) -> int:
        return self._stale.failures

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
        self.notes: list[str] = []
        self._stale = StaleRule(self.notes)

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
        if await self._exchange(payload, raw, self._stale.fresh_only):
            self._stale.retry(raw)  # a stale kept-alive connection: once more on a new one
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
