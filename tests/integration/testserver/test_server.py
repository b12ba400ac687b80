"""The controllable test server, driven over loopback by a plain aiohttp client."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field

import aiohttp
import pytest

from infermeter.testserver import (
    FaultRule,
    TestServerConfig,
    output_text,
    run_test_server,
    start_test_server,
    token_text,
)

pytestmark = pytest.mark.integration

TTFT_MS = 40.0
ITL_MS = 5.0
MAX_MODEL_LEN = 200


@pytest.fixture(scope="module")
def server():
    cfg = TestServerConfig(ttft_ms=TTFT_MS, itl_ms=ITL_MS, max_model_len=MAX_MODEL_LEN)
    with run_test_server(cfg) as h:
        yield h
    assert h.returncode == 0, h.stderr_tail()


@pytest.fixture(scope="module")
def fast():
    """Same protocol, near-zero timing: for format and fault tests."""
    cfg = TestServerConfig(ttft_ms=2, itl_ms=0.5, max_model_len=MAX_MODEL_LEN, model_aliases=["alias"])
    with run_test_server(cfg) as h:
        yield h


# --------------------------------------------------------------------- client
@dataclass
class Result:
    status: int
    headers: dict
    t_sent: float
    t_headers: float = 0.0
    events: list[tuple[float, bytes]] = field(default_factory=list)  # (arrival, raw event)
    body: bytes = b""
    error: BaseException | None = None

    def data(self) -> list[bytes]:
        """The ``data:`` payloads of the events (without the prefix)."""
        out = []
        for _, ev in self.events:
            for line in ev.split(b"\n"):
                if line.startswith(b"data:"):
                    out.append(line[5:].lstrip(b" "))
        return out

    def json_events(self) -> list[dict]:
        return [json.loads(d) for d in self.data() if d != b"[DONE]"]

    def event_times(self) -> list[float]:
        return [t for t, ev in self.events if ev.startswith(b"data:") and b"[DONE]" not in ev]


async def _request(
    session: aiohttp.ClientSession,
    url: str,
    body: dict,
    headers: dict | None = None,
    stream: bool = True,
) -> Result:
    t_sent = time.perf_counter()
    res = Result(status=0, headers={}, t_sent=t_sent)
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            res.t_headers = time.perf_counter()
            res.status = resp.status
            res.headers = dict(resp.headers)
            if not stream or resp.status != 200:
                res.body = await resp.read()
                return res
            buf = b""
            async for chunk in resp.content.iter_any():
                now = time.perf_counter()
                buf += chunk
                while b"\n\n" in buf:
                    ev, buf = buf.split(b"\n\n", 1)
                    res.events.append((now, ev))
            if buf:
                res.events.append((time.perf_counter(), buf))
    except (aiohttp.ClientError, ConnectionError) as e:
        res.error = e
    return res


def call(url: str, body: dict, headers: dict | None = None, stream: bool = True) -> Result:
    async def go():
        async with aiohttp.ClientSession() as s:
            return await _request(s, url, body, headers, stream)

    return asyncio.run(go())


def completions(n: int, **extra) -> dict:
    return {"model": "test-model", "prompt": "one two three four", "max_tokens": n, "stream": True, **extra}


def chat(n: int, **extra) -> dict:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there you"}]
    return {"model": "test-model", "messages": msgs, "max_tokens": n, "stream": True, **extra}


def tgi(n: int, details: bool = True) -> dict:
    return {"inputs": "one two three", "parameters": {"max_new_tokens": n, "details": details}}


# --------------------------------------------------------------------- formats
def test_completions_stream_exact_events(fast):
    r = call(fast.base_url + "/v1/completions", completions(7, stream_options={"include_usage": True}))
    assert r.status == 200 and r.error is None
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert all(ev.startswith(b"data: ") for _, ev in r.events)
    data = r.data()
    assert data[-1] == b"[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    tokens, usage = chunks[:-1], chunks[-1]
    assert len(tokens) == 7
    for i, c in enumerate(tokens):
        assert c["object"] == "text_completion"
        assert c["model"] == "test-model"
        assert c["id"] == tokens[0]["id"] and c["id"].startswith("cmpl-")
        assert isinstance(c["created"], int)
        (ch,) = c["choices"]
        assert ch["index"] == 0 and ch["logprobs"] is None
        assert ch["text"] == token_text(i)
        assert ch["finish_reason"] == ("length" if i == 6 else None)
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}
    assert "".join(c["choices"][0]["text"] for c in tokens) == output_text(7)


def test_completions_stream_without_usage_by_default(fast):
    r = call(fast.base_url + "/v1/completions", completions(3))
    chunks = r.json_events()
    assert len(chunks) == 3 and all(c["choices"] for c in chunks)
    assert r.data()[-1] == b"[DONE]"


def test_chat_stream_format(fast):
    r = call(fast.base_url + "/v1/chat/completions", chat(5, stream_options={"include_usage": True}))
    assert r.status == 200
    chunks = r.json_events()
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    role, tokens, usage = chunks[0], chunks[1:-1], chunks[-1]
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert role["choices"][0]["finish_reason"] is None
    assert [c["choices"][0]["delta"] for c in tokens] == [{"content": token_text(i)} for i in range(5)]
    assert [c["choices"][0]["finish_reason"] for c in tokens] == [None] * 4 + ["length"]
    assert usage["choices"] == [] and usage["usage"]["prompt_tokens"] == 5  # 2 + 3 words
    assert usage["usage"]["completion_tokens"] == 5
    assert r.data()[-1] == b"[DONE]"
    assert chunks[0]["id"].startswith("chatcmpl-")


def test_chat_max_completion_tokens_and_alias(fast):
    body = chat(99, model="alias", max_completion_tokens=2)
    r = call(fast.base_url + "/v1/chat/completions", body)
    assert r.status == 200
    assert len(r.json_events()) == 1 + 2
    assert r.json_events()[0]["model"] == "alias"


def test_tgi_stream_format_with_details(fast):
    r = call(fast.base_url + "/generate_stream", tgi(4))
    assert r.status == 200
    # axum writes "data:" without a space; TGI sends no [DONE]
    assert all(ev.startswith(b"data:{") for _, ev in r.events)
    assert b"[DONE]" not in b"".join(ev for _, ev in r.events)
    evs = r.json_events()
    assert len(evs) == 4
    for i, e in enumerate(evs):
        assert e["index"] == i + 1
        assert e["token"]["text"] == token_text(i) and e["token"]["special"] is False
        assert isinstance(e["token"]["id"], int) and isinstance(e["token"]["logprob"], float)
    assert all(e["generated_text"] is None and e["details"] is None for e in evs[:-1])
    assert evs[-1]["generated_text"] == output_text(4)
    assert evs[-1]["details"]["finish_reason"] == "length"
    assert evs[-1]["details"]["generated_tokens"] == 4
    assert evs[-1]["details"]["seed"] is None


def test_tgi_stream_without_details(fast):
    evs = call(fast.base_url + "/generate_stream", tgi(3, details=False)).json_events()
    assert len(evs) == 3 and evs[-1]["details"] is None and evs[-1]["generated_text"] == output_text(3)


def test_non_streaming(fast):
    base = fast.base_url
    r = call(base + "/v1/completions", completions(6, stream=False), stream=False)
    body = json.loads(r.body)
    assert r.status == 200 and body["object"] == "text_completion"
    assert body["choices"][0]["text"] == output_text(6)
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}

    r = call(base + "/v1/chat/completions", chat(3, stream=False), stream=False)
    body = json.loads(r.body)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": output_text(3)}
    assert body["usage"]["completion_tokens"] == 3

    r = call(base + "/generate", tgi(5), stream=False)
    body = json.loads(r.body)
    assert body["generated_text"] == output_text(5)
    assert body["details"]["generated_tokens"] == 5 and len(body["details"]["tokens"]) == 5

    r = call(base + "/", {"inputs": "a b", "parameters": {"max_new_tokens": 2}}, stream=False)
    assert json.loads(r.body) == [{"generated_text": output_text(2)}]


def test_default_max_tokens_is_16(fast):
    body = completions(1)
    del body["max_tokens"]
    assert len(call(fast.base_url + "/v1/completions", body).json_events()) == 16


def test_prompt_token_ids_count(fast):
    body = completions(1, stream=False, prompt=[5, 6, 7, 8, 9])
    r = call(fast.base_url + "/v1/completions", body, stream=False)
    assert json.loads(r.body)["usage"]["prompt_tokens"] == 5


def test_side_endpoints(fast):
    async def go():
        async with aiohttp.ClientSession() as s:
            base = fast.base_url
            async with s.get(base + "/health") as r:
                assert r.status == 200
            async with s.get(base + "/v1/models") as r:
                models = await r.json()
            async with s.get(base + "/version") as r:
                assert "version" in await r.json()
            async with s.get(base + "/metrics") as r:
                metrics = await r.text()
            return models, metrics

    models, metrics = asyncio.run(go())
    assert models["object"] == "list"
    m = models["data"][0]
    assert m["id"] == "test-model" and m["object"] == "model"
    assert m["owned_by"] == "infermeter-testserver" and m["max_model_len"] == MAX_MODEL_LEN
    assert [d["id"] for d in models["data"]] == ["test-model", "alias"]
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:generation_tokens_total"):
        assert name in metrics


# --------------------------------------------------------------------- errors
def test_unknown_model_404(fast):
    r = call(fast.base_url + "/v1/completions", completions(2, model="nope"))
    assert r.status == 404
    err = json.loads(r.body)["error"]
    assert err["type"] == "NotFoundError" and err["code"] == 404 and "nope" in err["message"]


def test_prompt_too_long_400(fast):
    body = completions(2, prompt="w " * (MAX_MODEL_LEN + 1))
    r = call(fast.base_url + "/v1/completions", body)
    assert r.status == 400
    err = json.loads(r.body)["error"]
    assert err["type"] == "BadRequestError" and "maximum context length" in err["message"]
    # prompt + max_tokens over the limit is rejected too (as vLLM does)
    r = call(fast.base_url + "/v1/completions", completions(MAX_MODEL_LEN))
    assert r.status == 400
    # TGI: 422 with its own error shape
    r = call(fast.base_url + "/generate_stream", {"inputs": "w " * 300, "parameters": {"max_new_tokens": 2}})
    assert r.status == 422 and json.loads(r.body)["error_type"] == "validation"


def test_bad_requests(fast):
    r = call(fast.base_url + "/v1/completions", completions(0))
    assert r.status == 400
    r = call(fast.base_url + "/v1/completions", completions(2), headers={"X-Test-Fault": "explode"})
    assert r.status == 400 and "unknown fault mode" in json.loads(r.body)["error"]["message"]


# ---------------------------------------------------------------------- timing
def test_ttft_and_itl_match_injected(server):
    n = 41

    async def go():
        async with aiohttp.ClientSession() as s:
            await _request(s, server.base_url + "/v1/completions", completions(2))  # warm the connection
            return [await _request(s, server.base_url + "/v1/completions", completions(n)) for _ in range(5)]

    results = asyncio.run(go())
    ttfts, itls = [], []
    for r in results:
        times = r.event_times()
        assert len(times) == n
        ttfts.append((times[0] - r.t_sent) * 1e3)
        itls.append((times[-1] - times[0]) / (n - 1) * 1e3)
    assert abs(statistics.median(ttfts) - TTFT_MS) < 6.0, ttfts
    assert abs(statistics.mean(itls) - ITL_MS) < 0.1 * ITL_MS, itls
    assert min(ttfts) >= TTFT_MS - 0.5  # never early


def test_ttft_per_prompt_token_and_jitter():
    cfg = TestServerConfig(ttft_ms=10, itl_ms=1, ttft_per_prompt_token_us=100, itl_jitter_ms=0.5, seed=7)
    body = {"prompt": "w " * 150, "max_tokens": 20, "stream": True}
    with run_test_server(cfg) as h:

        async def go():
            async with aiohttp.ClientSession() as s:
                url = h.base_url + "/v1/completions"
                await _request(s, url, completions(1))  # warm the connection
                return [await _request(s, url, body) for _ in range(5)]

        results = asyncio.run(go())
        st = h.stats(requests=True)
    ttfts = [(r.event_times()[0] - r.t_sent) * 1e3 for r in results]
    # 150 words * 100 us = 15 ms of "prefill"; the client adds ~1-2 ms of its own
    assert abs(statistics.median(ttfts) - (10 + 15)) < 6.0, ttfts
    recs = [r for r in st["requests"] if r["prompt_tokens"] == 150]
    assert len(recs) == 5
    for rec in recs:
        assert abs((rec["sched_first_perf"] - rec["start_perf"]) - 0.025) < 1e-6
    # jitter: gaps vary but the schedule stays absolute (20 tokens ~ 19 ms)
    times = results[0].event_times()
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(set(round(g, 4) for g in gaps)) > 3
    assert 0.010 < times[-1] - times[0] < 0.045
    for rec in recs:  # server side: the last token is due ~19 ms (19 gaps of 1 +- 0.5 ms) after the first
        assert 0.0095 - 1e-4 <= rec["last_write_perf"] - rec["sched_first_perf"]


def test_stats_ground_truth(server):
    server.reset_stats()
    for _ in range(3):
        call(server.base_url + "/v1/completions", completions(10))
    call(server.base_url + "/v1/completions", completions(2), headers={"X-Test-Fault": "http_500"})
    st = server.stats(requests=True)
    assert st["count"] == 4
    assert st["tokens_sent"] == 30
    assert st["outcomes"] == {"ok": 3, "fault": 1}
    assert st["faults"] == {"http_500": 1}
    assert st["ttft_lateness_ms"]["n"] == 3
    assert 0 <= st["ttft_lateness_ms"]["mean"] < 5
    assert st["server_ttft_ms"]["mean"] >= TTFT_MS - 0.1
    assert len(st["requests"]) == 4
    ok = [r for r in st["requests"] if r["outcome"] == "ok"]
    for rec in ok:
        assert rec["tokens_sent"] == 10
        assert rec["first_write_perf"] >= rec["sched_first_perf"] - 1e-4
        assert rec["last_write_perf"] >= rec["sched_first_perf"] + 9 * ITL_MS / 1e3 - 1e-4
        assert rec["first_write_epoch"] <= rec["last_write_epoch"]
        assert abs((rec["first_write_epoch"] - rec["arrival_epoch"]) - rec["server_ttft_s"]) < 0.005
    server.reset_stats()
    assert server.stats()["count"] == 0


# ---------------------------------------------------------------------- faults
@pytest.mark.parametrize("path,body", [("/v1/completions", completions(3)), ("/generate_stream", tgi(3))])
def test_http_error_faults(fast, path, body):
    for code in (500, 400, 429):
        r = call(fast.base_url + path, body, headers={"X-Test-Fault": f"http_{code}"})
        assert r.status == code
        err = json.loads(r.body)
        if path.startswith("/v1"):
            assert err["error"]["code"] == code and err["error"]["message"]
        else:
            assert err["error"] and err["error_type"]
        if code == 429:
            assert r.headers["Retry-After"] == "1"


def test_fault_reset(fast):
    r = call(fast.base_url + "/v1/completions", completions(10), headers={"X-Test-Fault": "reset; after=3"})
    assert isinstance(r.error, (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)), r.error
    assert len(r.json_events()) == 3
    r = call(fast.base_url + "/v1/completions", completions(10), headers={"X-Test-Fault": "reset; after=2; rst=1"})
    assert r.error is not None


def test_fault_stall(fast):
    r = call(fast.base_url + "/v1/completions", completions(6), headers={"X-Test-Fault": "stall; after=3; seconds=0.3"})
    assert r.error is None and r.data()[-1] == b"[DONE]"
    times = r.event_times()
    assert len(times) == 6
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[2] >= 0.3 - 0.01  # between token 3 and 4 (client-side read jitter allowed)
    assert max(gaps[:2] + gaps[3:]) < 0.1


def test_fault_slow_headers(fast):
    r = call(fast.base_url + "/v1/completions", completions(2), headers={"X-Test-Fault": "slow_headers; seconds=0.3"})
    assert r.status == 200 and r.t_headers - r.t_sent >= 0.3 - 0.001
    assert len(r.json_events()) == 2


def test_fault_bad_json(fast):
    r = call(fast.base_url + "/v1/completions", completions(5), headers={"X-Test-Fault": "bad_json; after=2"})
    bad = []
    good = []
    for d in r.data():
        try:
            good.append(json.loads(d)) if d != b"[DONE]" else None
        except ValueError:
            bad.append(d)
    assert len(bad) == 1 and len(good) == 5
    # the bad event sits between token 2 and token 3
    assert r.data().index(bad[0]) == 2


def test_fault_no_data(fast):
    r = call(fast.base_url + "/v1/completions", completions(4), headers={"X-Test-Fault": "no_data; after=1"})
    raw = [ev for _, ev in r.events]
    assert b": keepalive" in raw and b"event: ping" in raw
    assert len(r.json_events()) == 4


def test_fault_no_done_and_no_usage(fast):
    body = completions(4, stream_options={"include_usage": True})
    r = call(fast.base_url + "/v1/completions", body, headers={"X-Test-Fault": "no_done"})
    assert r.error is None and b"[DONE]" not in r.data()
    assert r.json_events()[-1]["usage"]["completion_tokens"] == 4
    r = call(fast.base_url + "/v1/completions", body, headers={"X-Test-Fault": "no_usage"})
    assert r.data()[-1] == b"[DONE]"
    assert all("usage" not in c for c in r.json_events()) and len(r.json_events()) == 4


def test_fault_oversized(fast):
    size = 2 * 1024 * 1024
    r = call(fast.base_url + "/v1/completions", completions(4), headers={"X-Test-Fault": "oversized; after=1"})
    sizes = [len(ev) for _, ev in r.events]
    assert max(sizes) >= size and sorted(sizes)[-2] < 1000
    evs = r.json_events()
    assert len(evs) == 4 and len(evs[1]["choices"][0]["text"]) == size


def test_fault_tgi_overloaded(fast):
    r = call(fast.base_url + "/generate_stream", tgi(6), headers={"X-Test-Fault": "tgi_overloaded; after=2"})
    evs = r.json_events()
    assert len(evs) == 3
    assert evs[-1] == {"error": "Model is overloaded", "error_type": "overloaded"}
    assert r.error is None  # the stream ends cleanly after the error event
    r = call(fast.base_url + "/v1/chat/completions", chat(6), headers={"X-Test-Fault": "tgi_overloaded; after=0"})
    assert "error" in r.json_events()[-1]


def test_fault_die_needs_allow_die(fast):
    r = call(fast.base_url + "/v1/completions", completions(4), headers={"X-Test-Fault": "die"})
    assert r.status == 400
    with pytest.raises(ValueError):
        TestServerConfig(faults=[FaultRule(mode="die")])


def test_fault_die_kills_process():
    with run_test_server(TestServerConfig(ttft_ms=1, itl_ms=1, allow_die=True)) as h:
        r = call(h.base_url + "/v1/completions", completions(8), headers={"X-Test-Fault": "die; after=2"})
        assert r.error is not None
        h.process.wait(5)
        assert h.returncode == 70


def test_config_faults_every_and_rate():
    cfg = TestServerConfig(ttft_ms=1, itl_ms=0.1, faults=[FaultRule.parse("http_503; every=3")])
    with run_test_server(cfg) as h:
        statuses = [call(h.base_url + "/v1/completions", completions(1)).status for _ in range(6)]
        # the header wins over the config rule
        over = call(h.base_url + "/v1/completions", completions(1), headers={"X-Test-Fault": "none"})
    assert statuses == [200, 200, 503, 200, 200, 503]
    assert over.status == 200  # request 7 is not a multiple of 3 anyway; check 'none' parses
    cfg = TestServerConfig(ttft_ms=1, itl_ms=0.1, faults=[FaultRule(mode="http_500")], fault_rate=0.5, seed=3)
    with run_test_server(cfg) as h:
        statuses = [call(h.base_url + "/v1/completions", completions(1)).status for _ in range(30)]
        forced_ok = call(h.base_url + "/v1/completions", completions(1), headers={"X-Test-Fault": "none"})
    assert 5 <= statuses.count(500) <= 25 and statuses.count(200) == 30 - statuses.count(500)
    assert forced_ok.status == 200


def test_eos_after_and_ignore_eos():
    with run_test_server(TestServerConfig(ttft_ms=1, itl_ms=0.2, eos_after=3)) as h:
        r = call(h.base_url + "/v1/completions", completions(10))
        evs = r.json_events()
        assert len(evs) == 3 and evs[-1]["choices"][0]["finish_reason"] == "stop"
        r = call(h.base_url + "/v1/completions", completions(10, ignore_eos=True))
        evs = r.json_events()
        assert len(evs) == 10 and evs[-1]["choices"][0]["finish_reason"] == "length"
        evs = call(h.base_url + "/generate_stream", tgi(10)).json_events()
        assert len(evs) == 3 and evs[-1]["details"]["finish_reason"] == "eos_token"


def test_max_concurrency_queues():
    cfg = TestServerConfig(ttft_ms=50, itl_ms=5, max_concurrency=1)
    with run_test_server(cfg) as h:

        async def go():
            async with aiohttp.ClientSession() as s:
                url = h.base_url + "/v1/completions"
                return await asyncio.gather(*(_request(s, url, completions(10)) for _ in range(2)))

        a, b = sorted(asyncio.run(go()), key=lambda r: r.event_times()[0])
        st = h.stats()
    # the second waits for the first to finish (~95 ms), then its own TTFT
    assert b.event_times()[0] - a.event_times()[-1] >= 0.045
    assert st["queue_wait_ms"]["max"] >= 80


def test_client_disconnect_recorded(fast):
    fast.reset_stats()

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.post(fast.base_url + "/v1/completions", json=completions(180)) as r:
                await r.content.readuntil(b"\n\n")
            # leaving the block without reading closes the connection

    asyncio.run(go())
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        st = fast.stats()
        if st["count"]:
            break
        time.sleep(0.05)
    assert st["outcomes"] == {"client_disconnect": 1}


def test_cli_flags_and_clean_stop():
    h = run_test_server(extra_args=["--model", "cli-model", "--fault", "http_429", "--itl-ms", "1", "--cpu", "0"])
    try:
        r = call(h.base_url + "/v1/completions", completions(1, model="cli-model"))
        assert r.status == 429
        assert h.stats()["config"]["itl_ms"] == 1.0
        with open(f"/proc/{h.pid}/status") as f:
            allowed = [line for line in f if line.startswith("Cpus_allowed_list")]
        assert allowed[0].split()[-1] == "0"
    finally:
        assert h.stop() == 0
    assert not h.alive


def test_async_helper():
    async def go():
        async with await start_test_server(ttft_ms=1, itl_ms=1) as h:
            async with aiohttp.ClientSession() as s:
                r = await _request(s, h.base_url + "/v1/completions", completions(3))
        return h, r

    h, r = asyncio.run(go())
    assert len(r.json_events()) == 3
    assert h.returncode == 0


def test_helper_reports_startup_failure():
    with pytest.raises(RuntimeError, match="exited with code 2"):
        run_test_server(extra_args=["--ttft-ms", "-1"])
