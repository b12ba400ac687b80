"""The embedded engine for real: built llama-server + generated tiny model on loopback.

Uses the real cache: ``ensure_llama_server()`` builds llama-server if it is missing
(minutes, once) and ``ensure_model("tiny")`` generates the model (seconds, once).
"""

from __future__ import annotations

import json
import os
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from infermeter.embedded.build import ensure_llama_server
from infermeter.embedded.models import ensure_model
from infermeter.embedded.tokenizer import EOS_TOKEN
from infermeter.embedded.server import EmbeddedServer
from infermeter.workloads.tokenizer import load_tokenizer

pytestmark = [pytest.mark.integration]
try:  # the first test may build llama-server (minutes): more than the default per-test timeout
    import pytest_timeout  # noqa: F401

    pytestmark.append(pytest.mark.timeout(3600))
except ImportError:  # pragma: no cover
    pass

SONNET = Path(__file__).resolve().parents[3] / "src/infermeter/workloads/data/sonnet.txt"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _post(url: str, body: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with _OPENER.open(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _get(url: str, timeout: float = 30.0) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _stream(url: str, body: dict[str, Any]) -> list[dict[str, Any] | str]:
    """POST with stream: the SSE events' JSON payloads, and "[DONE]"."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    events: list[dict[str, Any] | str] = []
    with _OPENER.open(req, timeout=120) as resp:
        assert resp.headers.get("Content-Type", "").startswith("text/event-stream")
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            payload = line[len("data:"):].strip()
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture(scope="module")
def tiny():
    return ensure_model("tiny")


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory: pytest.TempPathFactory):
    ensure_llama_server()
    log = tmp_path_factory.mktemp("engine") / "llama-server.log"
    with EmbeddedServer(tiny, parallel=2, ctx_size=8192, threads=2, log_path=log) as srv:
        yield srv


@pytest.fixture(scope="module")
def client_tok(tiny):
    return load_tokenizer(tiny.tokenizer_dir)


def test_health_models_props_metrics(server: EmbeddedServer, tiny) -> None:
    status, body = _get(server.base_url + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body = _get(server.base_url + "/v1/models")
    assert status == 200
    assert tiny.model_id in [m["id"] for m in json.loads(body)["data"]]
    props = server.props()
    assert props["total_slots"] == 2
    assert server.slot_ctx == 4096  # 8192 split over 2 slots (no unified KV)
    status, body = _get(server.base_url + "/metrics")
    assert status == 200 and b"llamacpp:" in body
    assert server.version
    assert "--metrics" in server.command and server.command[0] == str(ensure_llama_server())


def test_completion_length_is_exact_with_ignore_eos(server: EmbeddedServer, client_tok) -> None:
    prompt = "Shall I compare thee to a summer's day?"
    for n in (16, 40):
        out = _post(server.base_url + "/v1/completions", {
            "model": server.model_id, "prompt": prompt, "max_tokens": n,
            "ignore_eos": True, "temperature": 0})
        assert out["usage"]["completion_tokens"] == n
        assert out["usage"]["prompt_tokens"] == len(client_tok.encode(prompt))
        assert out["choices"][0]["finish_reason"] == "length"
        assert out["model"] == server.model_id


def _texts() -> list[str]:
    sonnet_lines = [ln for ln in SONNET.read_text(encoding="utf-8").splitlines() if ln.strip()]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = [(stdlib / "json" / "encoder.py").read_text(encoding="utf-8")[:6000],
            (stdlib / "asyncio" / "tasks.py").read_text(encoding="utf-8")[:6000]]
    tricky = [
        "  leading and trailing spaces  ", "tabs\tand\n\nnewlines\r\n", "x" * 300,
        "numbers 12345 3.14159 1e-9 0xFF", "don't can't we'll I'm you're they've",
        "naïve café — 東京 🙂 Ünïcödé", "!!!??? ...;;; ===>>> [[]]{}",
        "def f(a, *, b=2) -> dict[str, int]:\n    return {'k': a + b}\n",
        "    indented\n        more\n\t\tmixed", "special <|eos|> and <|user|> in text",
    ]
    return sonnet_lines[:120] + ["\n".join(sonnet_lines)] + code + tricky


def test_server_token_counts_match_the_client_tokenizer(server: EmbeddedServer, client_tok) -> None:
    mismatches = []
    for text in _texts():
        server_ids = _post(server.base_url + "/tokenize", {"content": text})["tokens"]
        client_ids = client_tok.encode(text)
        if server_ids != client_ids:
            mismatches.append((text[:60], len(server_ids), len(client_ids)))
    assert not mismatches, mismatches


def test_chat_prompt_tokens_match_the_client_template(server: EmbeddedServer, client_tok) -> None:
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "From fairest creatures we desire increase."}]
    out = _post(server.base_url + "/v1/chat/completions", {
        "model": server.model_id, "messages": messages, "max_tokens": 8, "ignore_eos": True})
    prompt = client_tok.chat_prompt(messages)
    assert prompt is not None and prompt.endswith("<|assistant|>\n")
    assert out["usage"]["prompt_tokens"] == len(client_tok.encode(prompt))
    assert out["usage"]["completion_tokens"] == 8
    applied = _post(server.base_url + "/apply-template", {"messages": messages})
    assert applied["prompt"] == prompt


def test_streaming_chat_ends_with_usage_then_done(server: EmbeddedServer) -> None:
    events = _stream(server.base_url + "/v1/chat/completions", {
        "model": server.model_id, "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 12, "ignore_eos": True, "stream": True,
        "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = [e for e in events if isinstance(e, dict)]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 12
    content_chunks = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert 1 <= len(content_chunks) <= 12
    assert any(c["choices"] and c["choices"][0].get("finish_reason") == "length" for c in chunks)
    # without include_usage, no chunk carries usage
    plain = _stream(server.base_url + "/v1/chat/completions", {
        "model": server.model_id, "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 4, "ignore_eos": True, "stream": True})
    assert plain[-1] == "[DONE]"
    assert not [e for e in plain if isinstance(e, dict) and not e["choices"] and e.get("usage")]


def test_min_tokens_is_silently_ignored(server: EmbeddedServer, tiny) -> None:
    vocab = json.loads((tiny.tokenizer_dir / "tokenizer.json").read_text())["added_tokens"]
    eos_id = next(t["id"] for t in vocab if t["content"] == EOS_TOKEN)
    out = _post(server.base_url + "/v1/completions", {
        "model": server.model_id, "prompt": "Hello", "max_tokens": 32, "min_tokens": 20,
        "logit_bias": {str(eos_id): 100.0}})
    # EOS is forced, and min_tokens does not hold it back
    assert out["usage"]["completion_tokens"] <= 1
    assert out["choices"][0]["finish_reason"] == "stop"


def test_repeated_prompt_hits_the_prompt_cache_unless_disabled(server: EmbeddedServer) -> None:
    prompt = SONNET.read_text(encoding="utf-8")[:4000]
    body = {"model": server.model_id, "prompt": prompt, "max_tokens": 2, "ignore_eos": True}
    first = _post(server.base_url + "/v1/completions", body)
    second = _post(server.base_url + "/v1/completions", body)
    n_prompt = first["usage"]["prompt_tokens"]
    assert n_prompt > 500 and second["usage"]["prompt_tokens"] == n_prompt
    assert second["timings"]["cache_n"] >= n_prompt - 2
    assert second["timings"]["prompt_n"] <= 2
    third = _post(server.base_url + "/v1/completions", {**body, "cache_prompt": False})
    assert third["timings"]["cache_n"] == 0
    assert third["timings"]["prompt_n"] == n_prompt


def test_stop_leaves_no_process_behind(tiny, tmp_path: Path) -> None:
    srv = EmbeddedServer(tiny, parallel=1, ctx_size=2048, log_path=tmp_path / "s.log")
    srv.start()
    pid = srv.pid
    assert pid is not None and not _dead(pid)
    url = srv.base_url
    srv.stop()
    deadline = time.monotonic() + 5
    while not _dead(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _dead(pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    with pytest.raises(OSError):
        _OPENER.open(url + "/health", timeout=2)
    srv.stop()  # idempotent
