"""The protocol-level HTTP/1.1 transport against scripted servers on loopback."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infermeter.core.exchange import ErrorClass, RawExchange
from infermeter.clients.fasthttp import FastTransport, _Conn
from infermeter.clients.retry import LIMIT as STALE_LIMIT
from infermeter.clients.transports import make_transport
from infermeter.clients.http import HttpTransport
from infermeter.clients.sse import parse_events


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENTS = [b'data: {"n": %d}\n\n' % i for i in range(5)] + [b"data: [DONE]\n\n"]


class Scripted:
    """A loopback server answering each request with the next script: a list of (delay_s, bytes|'close')."""

    def __init__(self, scripts, close_after_each=False):
        self.scripts = list(scripts)
        self.requests: list[bytes] = []
        self.connections = 0
        self.close_after_each = close_after_each

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _handle(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                script = self.scripts.pop(0) if self.scripts else [(0, HEAD + chunked(*EVENTS))]
                for delay, data in script:
                    if delay:
                        await asyncio.sleep(delay)
                    if data == "close":
                        writer.close()
                        return
                    if data == "reset":
                        writer.transport.abort()
                        return
                    writer.write(data)
                    await writer.drain()
                if self.close_after_each:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


def run(coro):
    return asyncio.run(coro)


async def post(url, n=1, **kw):
    out = []
    async with FastTransport(url, **kw) as t:
        for _ in range(n):
            raw = RawExchange()
            await t.post("/v1/completions", b'{"x": 1}', raw)
            out.append(raw)
        return out, t


def test_streamed_chunked_response_is_timestamped_per_read_and_dechunked():
    script = [(0, HEAD)] + [(0.01, chunked(e)[:-5]) for e in EVENTS] + [(0, b"0\r\n\r\n")]

    async def go():
        async with Scripted([script]) as srv:
            (raw,), _ = await post(srv.url)
            return raw, srv

    raw, srv = run(go())
    assert raw.error is None and raw.status == 200
    assert raw.body == b"".join(EVENTS)
    assert len(raw.times) == len(raw.chunks) >= len(EVENTS)
    assert raw.times == sorted(raw.times) and raw.sent < raw.headers <= raw.times[0] <= raw.end
    assert raw.times[-1] - raw.times[0] >= 0.04  # the 10 ms gaps between events are kept
    events = parse_events(raw.times, raw.chunks)
    assert [e.data for e in events] == ['{"n": %d}' % i for i in range(5)] + ["[DONE]"]
    req = srv.requests[0]
    assert req.startswith(b"POST /v1/completions HTTP/1.1\r\n") and req.endswith(b'\r\n\r\n{"x": 1}')
    assert b"Content-Length: 8\r\n" in req and b"Host: 127.0.0.1:" in req


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=12),
       sizes=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6),
       trailer=st.booleans())
def test_any_split_of_a_chunked_body_decodes_to_the_same_bytes(cuts, sizes, trailer):
    payload = b"".join(EVENTS)
    pieces, pos = [], 0
    for size in sizes * 20:
        if pos >= len(payload):
            break
        pieces.append(payload[pos:pos + size])
        pos += size
    if pos < len(payload):
        pieces.append(payload[pos:])
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) if i % 3 == 1 else b"%X\r\n%s\r\n" % (len(p), p)
                    for i, p in enumerate(pieces))
    body += b"0\r\nX-Trailer: 1\r\n\r\n" if trailer else b"0\r\n\r\n"
    wire = HEAD + body
    points = sorted({c % len(wire) for c in cuts} - {0})
    reads = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)])]
    conn = _Conn()

    class FakeTransport:
        def write(self, data):
            pass

        def close(self):
            raise AssertionError("closed a healthy connection")

    conn.connection_made(FakeTransport())
    raw = RawExchange()
    loop = asyncio.new_event_loop()
    try:
        waiter = conn.start(raw, b"", loop)
        for r in reads:
            assert not waiter.done()
            conn.data_received(r)
        assert waiter.done()
    finally:
        loop.close()
    assert raw.body == payload and raw.error is None
    assert conn.finish() is True  # the connection may carry the next request


def test_keep_alive_reuses_one_connection_and_content_length_bodies():
    body = b'{"ok": true}'
    script = [(0, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))]

    async def go():
        async with Scripted([script, script, script]) as srv:
            raws, t = await post(srv.url, n=3)
            return raws, srv

    raws, srv = run(go())
    assert [r.body for r in raws] == [body] * 3 and all(r.error is None for r in raws)
    assert srv.connections == 1


def test_server_closing_idle_keepalive_connections_is_resent_then_fresh_connections_are_used():
    # Like llama-server: closes after every response, without Connection: close.
    async def go():
        async with Scripted([], close_after_each=True) as srv:
            raws, t = await post(srv.url, n=2 * STALE_LIMIT + 4)
            return raws, t, srv

    raws, t, srv = run(go())
    assert all(r.error is None and r.body == b"".join(EVENTS) for r in raws)
    # each answered on a connection of its own; a reused one the server had
    # already dropped was resent once, until STALE_LIMIT such failures made
    # every request open a fresh connection (and the result says so)
    assert srv.connections == len(raws)
    assert all(r.retries <= 1 for r in raws)
    assert sum(r.retries for r in raws) == t.stale_failures <= STALE_LIMIT
    if t.stale_failures == STALE_LIMIT:  # (a close seen before reuse costs no retry at all)
        last_retry = max(i for i, r in enumerate(raws) if r.retries)
        assert last_retry < len(raws) - 3  # from then on: a fresh connection each, no more failures
        assert "one connection per request" in t.notes[0]


def test_stale_race_is_resent_on_a_fresh_connection(monkeypatch):
    # The connection looks alive when reused but the server drops it unanswered.
    script_ok = [(0, HEAD + chunked(*EVENTS))]
    script_drop = [(0, "close")]

    async def go():
        async with Scripted([script_ok, script_drop, script_ok]) as srv:
            raws, t = await post(srv.url, n=2)
            return raws, t, srv

    raws, t, srv = run(go())
    assert raws[1].error is None and raws[1].retries == 1 and raws[1].body == b"".join(EVENTS)
    assert t.stale_failures == 1 and srv.connections == 2


@pytest.mark.parametrize("script,error", [
    ([(0, HEAD + b"5\r\nabcde\r\n"), (0, "close")], ErrorClass.RESET),       # cut mid-body
    ([(0, HEAD + b"zz\r\n")], ErrorClass.RESET),                              # malformed chunk size
    ([(0, b"NOT HTTP\r\n\r\n")], ErrorClass.RESET),
    ([(0, b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\nRetry-After: 1\r\n\r\n{}")], ErrorClass.HTTP_5XX),
    ([(0, b"HTTP/1.1 429 Slow\r\nContent-Length: 0\r\n\r\n")], ErrorClass.HTTP_429),
])
def test_failures_are_classified(script, error):
    async def go():
        async with Scripted([script]) as srv:
            (raw,), _ = await post(srv.url)
            return raw

    raw = run(go())
    assert raw.error is error and raw.end is not None and raw.retries == 0
    if error is ErrorClass.HTTP_5XX:
        assert raw.retry_after == "1" and raw.body == b"{}"


def test_interim_100_and_close_delimited_body():
    script = [(0, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart1"),
              (0.01, b"part2"), (0, "close")]

    async def go():
        async with Scripted([script]) as srv:
            (raw,), _ = await post(srv.url)
            return raw

    raw = run(go())
    assert raw.error is None and raw.status == 200 and raw.body == b"part1part2"


def test_stall_and_total_timeouts():
    stall = [(0, HEAD + chunked(EVENTS[0])[:-5]), (2.0, b"0\r\n\r\n")]

    async def go(**kw):
        async with Scripted([stall]) as srv:
            (raw,), _ = await post(srv.url, **kw)
            return raw

    raw = run(go(stall_timeout=0.2))
    assert raw.error is ErrorClass.STALL and raw.chunks and raw.end - raw.sent < 1.5
    raw = run(go(request_timeout=0.3, stall_timeout=None))
    assert raw.error is ErrorClass.TIMEOUT and raw.end - raw.sent < 1.5


def test_connect_failure_and_cancellation():
    async def refused():
        (raw,), _ = await post("http://127.0.0.1:1")
        return raw

    raw = run(refused())
    assert raw.error is ErrorClass.CONNECT and "127.0.0.1:1" in raw.error_detail

    async def cancelled():
        slow = [(0, HEAD), (5.0, b"0\r\n\r\n")]
        async with Scripted([slow]) as srv:
            async with FastTransport(srv.url) as t:
                raw = RawExchange()
                task = asyncio.ensure_future(t.post("/x", b"{}", raw))
                await asyncio.sleep(0.1)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                return raw

    raw = run(cancelled())
    assert raw.error is ErrorClass.CANCELLED and raw.end is not None and raw.headers is not None


def test_request_id_header_is_opt_in():
    async def go(header):
        async with Scripted([]) as srv:
            async with FastTransport(srv.url, request_id_header=header) as t:
                await t.post("/v1/completions", b"{}", RawExchange(), request_id=7)
            return srv.requests[0]

    assert b"X-Request-Id: im-7\r\n" in run(go("X-Request-Id"))
    assert b"X-Request-Id" not in run(go(None))


def test_get_json_and_transport_choice(monkeypatch):
    body = b'{"data": [1]}'
    script = [(0, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))]

    async def go():
        async with Scripted([script]) as srv:
            async with FastTransport(srv.url) as t:
                return await t.get_json("/v1/models")

    assert run(go()) == (200, {"data": [1]})
    # Chosen by the run, never by the environment.
    monkeypatch.setenv("INFERMETER_TRANSPORT", "aiohttp")
    assert isinstance(make_transport("http://127.0.0.1:1"), FastTransport)
    assert isinstance(make_transport("http://127.0.0.1:1", "aiohttp"), HttpTransport)
    assert make_transport("http://127.0.0.1:1", "aiohttp", request_id_header="X-Id").request_id_header == "X-Id"
    with pytest.raises(ValueError):
        FastTransport("ftp://x")
    with pytest.raises(ValueError, match="unknown transport"):
        make_transport("http://127.0.0.1:1", "curl")
