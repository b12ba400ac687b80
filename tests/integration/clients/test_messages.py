"""Messages that name the real cause: TLS against a plain-HTTP server, credentials in the URL
beside an API key, bytes that are not UTF-8."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import pytest

from infermeter.cli.main import main
from infermeter.runner.execute import execute_run
from infermeter.runner.spec import RunSpec
from infermeter.storage.files import read_records

pytestmark = pytest.mark.integration


def _run_args(url, tokenizer_dir, tmp_path):
    return ["run", "--base-url", url, "--model", "test-model", "--tokenizer", str(tokenizer_dir),
            "--random-input-len", "8", "--random-output-len", "4", "--num-prompts", "3", "--disable-tqdm",
            "--result-dir", str(tmp_path)]


class _PlainHttpThatWaits:
    """A plain HTTP server that, like many, waits for a full request head before it says anything:
    a TLS ClientHello gets no answer at all (the https client would wait out its timeout)."""

    def __enter__(self):
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def handle(reader, writer):
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        async def start():
            self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(start()),
                                                       self.loop.run_forever()), daemon=True)
        self.thread.start()
        ready.wait(5)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_https_to_a_plain_http_server_says_tls_failed_quickly(tokenizer_dir, tmp_path, capsys):
    with _PlainHttpThatWaits() as srv:
        t0 = time.monotonic()
        code = main(_run_args(f"https://127.0.0.1:{srv.port}", tokenizer_dir, tmp_path))
        took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 3, err
    assert "TLS failed" in err and "plain HTTP" in err and "use http://" in err
    assert "TimeoutError" not in err
    assert took < 8.0  # was 11 s: the preflight's whole timeout, then "TimeoutError"


def test_https_to_an_answering_http_server_says_tls_failed(test_server, tokenizer_dir, tmp_path, capsys):
    server = test_server(ttft_ms=5, itl_ms=1)
    code = main(_run_args(server.base_url.replace("http://", "https://"), tokenizer_dir, tmp_path))
    err = capsys.readouterr().err
    assert code == 3 and "TLS failed" in err and "use http://" in err, err


def test_url_credentials_beside_an_api_key_name_the_clash_not_the_path(test_server, tokenizer_dir, tmp_path,
                                                                        capsys, monkeypatch):
    server = test_server(ttft_ms=5, itl_ms=1)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    code = main(_run_args(server.base_url.replace("http://", "http://user:pw@"), tokenizer_dir, tmp_path))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "user:password" in err and "API key" in err
    assert "root" not in err and "ValueError" not in err  # was: "check that --base-url points at ... root"
    assert "pw@" not in err


def test_url_credentials_go_to_every_request_as_basic_auth(test_server, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = test_server(ttft_ms=5, itl_ms=1, keep_bodies=10)
    spec = RunSpec.from_flat(dict(backend="vllm", base_url=server.base_url.replace("http://", "http://us%40er:p%3Aw@"),
                   model="test-model", tokenizer=str(tokenizer_dir), dataset_name="random", random_input_len=8,
                   random_output_len=4, num_prompts=3, result_dir=str(tmp_path), progress=False))
    assert execute_run(spec).result["completed"] == 3
    bodies = server.get_json("/stats?bodies=1")["bodies"]
    assert len(bodies) == 3
    want = "Basic " + base64.b64encode(b"us@er:p:w").decode()
    assert all(b["headers"].get("Authorization") == want for b in bodies)


def test_bytes_that_are_not_utf8_are_called_so(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=5, itl_ms=1, faults=[{"mode": "bad_utf8", "every": 2}])
    spec = RunSpec.from_flat(dict(
        backend="vllm", base_url=server.base_url, model="test-model", tokenizer=str(tokenizer_dir),
        dataset_name="random", random_input_len=8, random_output_len=4, ignore_eos=True,
        num_prompts=4, max_concurrency=1, result_dir=str(tmp_path), progress=False))
    report = execute_run(spec)
    failed = [r for r in read_records(report.records_path) if not r.ok]
    assert len(failed) == 2
    for r in failed:
        assert r.error == "malformed"
        assert r.error_detail.startswith("event is not UTF-8 (byte 0xff"), r.error_detail
