"""Unit tests of the test server: fault specs, config, wire bytes, in-process app."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.test_utils import TestServer as AiohttpTestServer

from infermeter.testserver import (
    TOKEN_WORDS,
    FaultRule,
    TestServerConfig,
    create_app,
    output_text,
    token_text,
)
from infermeter.testserver import protocol as P
from infermeter.testserver.__main__ import config_from_args


# ------------------------------------------------------------------ fault specs
def test_fault_spec_parse_params():
    r = FaultRule.parse("stall; after=3; seconds=2")
    assert (r.mode, r.after, r.seconds) == ("stall", 3, 2.0)
    r = FaultRule.parse(" RESET ;k=4; rst=1 ")
    assert (r.mode, r.after, r.rst) == ("reset", 4, True)
    r = FaultRule.parse("http_500; rate=0.25")
    assert r.rate == 0.25 and r.every is None
    r = FaultRule.parse("oversized; bytes=1000; every=5")
    assert (r.size, r.every) == (1000, 5)
    assert FaultRule.parse("http_503").mode == "http_503"
    assert FaultRule.parse("no_data; kind=event").kind == "event"


@pytest.mark.parametrize(
    "spec",
    ["", "explode", "http_200", "http_999", "stall; after", "stall; after=x", "stall; colour=red",
     "http_500; rate=2", "reset; after=-1", "no_data; kind=loud"],
)  # fmt: skip
def test_fault_spec_rejects(spec):
    with pytest.raises(ValueError):
        FaultRule.parse(spec)


def test_config_validation_and_json_roundtrip():
    with pytest.raises(ValueError, match="allow_die"):
        TestServerConfig(faults=[FaultRule(mode="die")])
    TestServerConfig(faults=[FaultRule(mode="die")], allow_die=True)
    with pytest.raises(ValueError):
        TestServerConfig(ttft_ms=-1)
    with pytest.raises(ValueError):
        TestServerConfig(unknown_field=1)
    cfg = TestServerConfig(ttft_ms=12, faults=[FaultRule.parse("stall; after=1")], model_aliases=["a"])
    assert TestServerConfig.from_json(cfg.to_json()) == cfg
    assert cfg.served_models == ["test-model", "a"]


def test_cli_args_to_config():
    cfg = config_from_args(
        ["--port", "0", "--model", "m", "--ttft-ms", "50", "--itl-ms", "5",
         "--fault", "stall; after=3; seconds=2", "--fault", "http_500; rate=0.1",
         "--cpu", "1", "--alias", "x", "--no-uvloop", "--max-concurrency", "4"]
    )  # fmt: skip
    assert (cfg.model, cfg.ttft_ms, cfg.itl_ms, cfg.cpu) == ("m", 50.0, 5.0, 1)
    assert [f.mode for f in cfg.faults] == ["stall", "http_500"]
    assert cfg.faults[0].seconds == 2.0 and cfg.faults[1].rate == 0.1
    assert cfg.model_aliases == ["x"] and cfg.use_uvloop is False and cfg.max_concurrency == 4
    base = TestServerConfig(itl_ms=7, eos_after=3).to_json()
    cfg = config_from_args(["--config-json", base, "--ttft-ms", "1"])
    assert (cfg.itl_ms, cfg.eos_after, cfg.ttft_ms) == (7.0, 3, 1.0)
    with pytest.raises(ValueError):
        config_from_args(["--fault", "die"])  # needs --allow-die


# --------------------------------------------------------------------- protocol
def test_token_texts_deterministic():
    assert [token_text(i) for i in range(3)] == [" the", " of", " and"]
    assert token_text(len(TOKEN_WORDS)) == token_text(0)
    assert output_text(40) == "".join(token_text(i) for i in range(40))
    assert output_text(20, (17, "X")) == "".join("X" if i == 17 else token_text(i) for i in range(20))


def test_completions_chunk_bytes():
    f = P.CompletionsFormat("cmpl-1", 100, "m", 3, "length")
    assert f.token(0, False) == (
        b'data: {"id":"cmpl-1","object":"text_completion","created":100,"model":"m",'
        b'"choices":[{"index":0,"text":" the","logprobs":null,"finish_reason":null}]}\n\n'
    )
    assert f.token(1, True).endswith(b'"text":" of","logprobs":null,"finish_reason":"length"}]}\n\n')
    assert f.tail(2, True, True) == (
        b'data: {"id":"cmpl-1","object":"text_completion","created":100,"model":"m",'
        b'"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'
        b"data: [DONE]\n\n"
    )
    assert f.tail(2, False, False) == b""
    big = f.token_with_text(0, P.oversized_text(1000), False)
    assert len(json.loads(big[6:])["choices"][0]["text"]) == 1000


def test_chat_chunk_bytes():
    f = P.ChatFormat("chatcmpl-1", 100, "m", 3, "stop", role_chunk=True)
    head = json.loads(f.head[6:])
    assert head["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tok = json.loads(f.token(2, True)[6:])
    assert tok["object"] == "chat.completion.chunk"
    assert tok["choices"][0] == {"index": 0, "delta": {"content": " and"}, "logprobs": None, "finish_reason": "stop"}
    assert P.ChatFormat("c", 1, "m", 1, "length", role_chunk=False).head == b""


def test_tgi_event_bytes():
    f = P.TgiFormat(prompt_tokens=3, finish="length", details=True)
    assert f.token(0, False) == (
        b'data:{"index":1,"token":{"id":1000,"text":" the","logprob":-0.125,"special":false},'
        b'"generated_text":null,"details":null}\n\n'
    )
    last = json.loads(f.token(2, True)[5:])
    assert last["generated_text"] == " the of and"
    assert last["details"] == {"finish_reason": "length", "generated_tokens": 3, "seed": None, "input_length": 3}
    assert json.loads(f.error_event("Model is overloaded", "overloaded", 429)[5:]) == {
        "error": "Model is overloaded",
        "error_type": "overloaded",
    }


# ------------------------------------------------------------ in-process app
def _with_client(cfg: TestServerConfig, fn):
    async def go():
        client = TestClient(AiohttpTestServer(create_app(cfg)))
        await client.start_server()
        try:
            return await fn(client)
        finally:
            await client.close()

    return asyncio.run(go())


def test_in_process_validation_errors():
    cfg = TestServerConfig(ttft_ms=0, itl_ms=0, max_model_len=10)

    async def fn(c):
        out = {}
        r = await c.post("/v1/completions", data=b"{not json")
        out["badjson"] = (r.status, await r.json())
        r = await c.post("/v1/completions", json={"prompt": ["a", "b"]})
        out["batch"] = r.status
        r = await c.post("/v1/chat/completions", json={"messages": []})
        out["nomsg"] = r.status
        r = await c.post("/v1/completions", json={"prompt": "a " * 11})
        out["long"] = (r.status, await r.json())
        r = await c.post("/generate", json={"inputs": 5})
        out["tgi"] = (r.status, await r.json())
        r = await c.post("/v1/completions", json={"prompt": "a", "max_tokens": 3, "stream": False})
        out["ok"] = (r.status, await r.json())
        r = await c.get("/stats")
        out["stats"] = await r.json()
        return out

    out = _with_client(cfg, fn)
    assert out["badjson"][0] == 400 and out["badjson"][1]["error"]["type"] == "BadRequestError"
    assert out["batch"] == 400 and out["nomsg"] == 400
    assert out["long"][0] == 400
    assert out["long"][1]["error"]["message"].startswith("This model's maximum context length is 10 tokens")
    assert out["tgi"][0] == 422 and out["tgi"][1]["error_type"] == "validation"
    assert out["ok"][0] == 200 and out["ok"][1]["usage"]["completion_tokens"] == 3
    assert out["stats"]["outcomes"] == {"rejected": 5, "ok": 1}
    assert out["stats"]["tokens_sent"] == 3


def test_in_process_prompt_ratio_and_chat_parts():
    cfg = TestServerConfig(ttft_ms=0, itl_ms=0, prompt_tokens_per_word=1.5)

    async def fn(c):
        msgs = [{"role": "user", "content": [{"type": "text", "text": "a b c d"}]}]
        r = await c.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 1})
        return await r.json()

    assert _with_client(cfg, fn)["usage"]["prompt_tokens"] == 6


def test_processes_given_one_shared_port_split_its_connections():
    import socket as socket_mod

    from infermeter.testserver.server import serve

    with socket_mod.socket() as probe:  # a free port to share
        probe.bind(("127.0.0.1", 0))
        shared = probe.getsockname()[1]

    async def go() -> tuple[list[int], list[int]]:
        stop = asyncio.Event()
        ports: list[int] = []
        cfg = TestServerConfig(ttft_ms=0, itl_ms=0, shared_port=shared)
        servers = [asyncio.ensure_future(serve(cfg, on_ready=lambda h, p: ports.append(p), stop=stop))
                   for _ in range(2)]
        while len(ports) < 2:
            await asyncio.sleep(0.01)
        for _ in range(40):  # one connection each: the kernel spreads them over the two listeners
            reader, writer = await asyncio.open_connection("127.0.0.1", shared)
            body = b'{"model": "test-model", "prompt": "a", "max_tokens": 1}'
            writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            assert (await reader.read()).startswith(b"HTTP/1.1 200")
            writer.close()
        counts = []
        for port in ports:  # each process's own port answers for it alone
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            body = (await reader.read()).split(b"\r\n\r\n", 1)[1]
            writer.close()
            counts.append(json.loads(body)["count"])
        stop.set()
        await asyncio.gather(*servers)
        return ports, counts

    ports, counts = asyncio.run(go())
    assert len(set(ports)) == 2 and shared not in ports
    assert sum(counts) == 40 and min(counts) > 0
