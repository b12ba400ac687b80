"""The aiohttp HTTP transport (the fallback): sends one request and timestamps every read.

The default transport is ``clients/fasthttp.py`` (``asyncio.Protocol``, the
read stamped in ``data_received``); ``--transport aiohttp`` selects this one.  Here a read is stamped when the task reading the response
resumes, one loop iteration after the bytes arrived.

This is the request hot path.  It takes a timestamp, hands the bytes to the
connection, and appends ``(perf_counter(), bytes)`` for each read; it parses
nothing.  Parsing happens after the response is complete.
"""

from __future__ import annotations

import asyncio
import time
from typing import Mapping

import aiohttp

from infermeter.clients.retry import StaleRule
from infermeter.core.exchange import ErrorClass, RawExchange, http_error_class

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"}


class HttpTransport:
    """One keep-alive connection pool sized to the load's concurrency."""

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
        self.request_id_header = request_id_header
        self._headers = {**JSON_HEADERS, **(headers or {})}
        self._max_connections = max(1, max_connections)
        self._timeout = aiohttp.ClientTimeout(
            total=request_timeout, sock_read=stall_timeout, sock_connect=connect_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None  # one new connection per request
        self.notes: list[str] = []
        self._stale = StaleRule(self.notes)

    @property
    def stale_failures(self) -> int:
        return self._stale.failures

    async def __aenter__(self) -> "HttpTransport":
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=self._max_connections,
            ttl_dns_cache=3600, keepalive_timeout=300,
        )
        self._session = self._new_session(connector)
        self._fresh = self._new_session(aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=self._max_connections, force_close=True))
        return self

    def _new_session(self, connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, headers=self._headers,
            auto_decompress=False, read_bufsize=1 << 16, trust_env=False,
        )

    async def __aexit__(self, *exc: object) -> None:
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()
        self._session = self._fresh = None

    async def post(self, path: str, body: bytes, raw: RawExchange, request_id: int | None = None) -> RawExchange:
        """POST ``body`` and record the response into ``raw`` (which the caller owns)."""
        assert self._session is not None, "use 'async with HttpTransport(...)'"
        session = self._fresh if self._stale.fresh_only else self._session
        extra = ({self.request_id_header: f"im-{request_id}"}
                 if self.request_id_header is not None and request_id is not None else None)
        if await self._attempt(session, path, body, raw, extra) and session is self._session:
            self._stale.retry(raw)  # a stale kept-alive connection (clients/retry.py): once more on a new one
            await self._attempt(self._fresh, path, body, raw, extra)
        return raw

    async def _attempt(self, session, path: str, body: bytes, raw: RawExchange,
                       extra: dict[str, str] | None = None) -> bool:
        """One try; True when it failed on a stale connection before any response byte."""
        assert session is not None
        clock = time.perf_counter
        times = raw.times
        chunks = raw.chunks
        raw.sent = clock()
        try:
            async with session.post(self.base_url + path, data=body, headers=extra) as resp:
                raw.headers = clock()
                raw.status = resp.status
                if resp.status >= 400:
                    raw.error = http_error_class(resp.status)
                    raw.retry_after = resp.headers.get("Retry-After")
                async for data in resp.content.iter_any():
                    times.append(clock())
                    chunks.append(data)
            raw.end = clock()
        except asyncio.CancelledError:
            raw.end = clock()
            raw.error = ErrorClass.CANCELLED
            raise
        except aiohttp.ServerTimeoutError as exc:  # sock_read: no bytes for stall_timeout
            raw.end = clock()
            raw.error = ErrorClass.CONNECT if isinstance(exc, aiohttp.ConnectionTimeoutError) else ErrorClass.STALL
            raw.error_detail = str(exc) or type(exc).__name__
        except asyncio.TimeoutError:
            raw.end = clock()
            raw.error = ErrorClass.TIMEOUT
            raw.error_detail = "request timeout exceeded"
        except aiohttp.ClientConnectorError as exc:
            raw.end = clock()
            raw.error = ErrorClass.CONNECT
            raw.error_detail = str(exc)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
            raw.end = clock()
            raw.error = ErrorClass.RESET
            raw.error_detail = f"{type(exc).__name__}: {exc}"
            return raw.headers is None and not chunks and not isinstance(exc, aiohttp.ClientPayloadError)
        except aiohttp.ClientError as exc:
            raw.end = clock()
            raw.error = ErrorClass.RESET if raw.headers is not None else ErrorClass.CONNECT
            raw.error_detail = f"{type(exc).__name__}: {exc}"
        return False

    async def get_json(self, path: str, timeout: float = 10.0) -> tuple[int, object | None]:
        """A small GET for preflight checks; returns (status, parsed JSON or None)."""
        assert self._session is not None
        async with self._session.get(self.base_url + path, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = await resp.read()
            try:
                import orjson

                return resp.status, orjson.loads(text)
            except ValueError:
                return resp.status, None
