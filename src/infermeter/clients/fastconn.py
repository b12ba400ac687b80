"""One HTTP/1.1 connection of the fast transport, as an ``asyncio.Protocol``.

``data_received`` stamps ``perf_counter()`` the moment the loop hands it the bytes, strips the
chunked framing and appends ``(time, body bytes)`` to the :class:`RawExchange`; nothing else runs
on a read.  The pool, timeouts and retries live in :mod:`infermeter.clients.fasthttp`.
"""

from __future__ import annotations

import asyncio
import time

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
