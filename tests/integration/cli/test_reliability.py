"""Reliability end to end: server faults, stop rules, exit codes, crashes and signals,
secrets and untrusted server text (docs/reliability.md lists what each test covers)."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from aiohttp import web

from infermeter.cli.main import main
from infermeter.cli.run_cmd import exit_code_for
from infermeter.runner.execute import execute_run
from infermeter.runner.spec import RunSpec
from infermeter.storage.files import read_records

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-c", "import sys; from infermeter.cli.main import main; sys.exit(main())"]


def spec(server_url, tokenizer_dir, tmp_path, **kw) -> RunSpec:
    base = dict(backend="vllm", base_url=server_url, model="test-model", tokenizer=str(tokenizer_dir),
                dataset_name="random", random_input_len=16, random_output_len=8, ignore_eos=True,
                num_prompts=6, max_concurrency=3, result_dir=str(tmp_path), progress=False)
    base.update(kw)
    return RunSpec.from_flat(base)


def cli_args(base_url, tokenizer_dir, tmp_path, *extra) -> list[str]:
    return ["run", "--base-url", base_url, "--model", "test-model", "--tokenizer", str(tokenizer_dir),
            "--random-input-len", "16", "--random-output-len", "8", "--ignore-eos", "--disable-tqdm",
            "--save-result", "--result-dir", str(tmp_path), "--result-filename", "r.json", *extra]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- server faults
# (case id, backend, server faults, spec overrides, errors_by_class, per-failed-record check)
FAILING = [
    ("reset", "vllm", {"mode": "reset", "every": 3}, {}, {"reset": 2},
     lambda r: r.first_token is not None and r.output_events == 2),
    ("reset-rst", "vllm", {"mode": "reset", "every": 3, "rst": True}, {}, {"reset": 2},
     lambda r: r.output_events == 2),
    ("stall", "vllm", {"mode": "stall", "every": 3, "seconds": 4}, {"stall_timeout": 1.0}, {"stall": 2},
     lambda r: r.output_events == 2 and r.e2el >= 1.0),
    ("slow-headers-timeout", "vllm", {"mode": "slow_headers", "every": 3, "seconds": 4},
     {"request_timeout": 1.0}, {"timeout": 2},
     lambda r: r.headers is None and r.e2el >= 1.0),
    ("bad-json", "vllm", {"mode": "bad_json", "every": 3}, {}, {"malformed": 2},
     lambda r: "not JSON" in r.error_detail),
    ("http-400", "vllm", {"mode": "http_400", "every": 3}, {}, {"http_4xx": 2},
     lambda r: r.status == 400 and "injected fault" in r.error_detail),
    ("http-429", "vllm", {"mode": "http_429", "every": 3}, {}, {"http_429": 2},
     lambda r: r.status == 429 and r.retry_after == "1"),
    ("http-503", "vllm", {"mode": "http_503", "every": 3}, {}, {"http_5xx": 2},
     lambda r: r.status == 503 and r.retry_after == "1"),
    ("tgi-overloaded", "tgi", {"mode": "tgi_overloaded", "every": 3}, {}, {"overloaded": 2},
     lambda r: r.output_events == 2 and "overloaded" in r.error_detail),
    ("openai-error-event", "vllm", {"mode": "tgi_overloaded", "every": 3}, {}, {"server_error": 2},
     lambda r: r.output_events == 2),
    ("oversized", "vllm", {"mode": "oversized", "every": 3}, {}, {"oversized": 2},
     lambda r: r.first_token is not None and r.output_events == 2),
    ("tgi-no-end", "tgi", {"mode": "no_done", "every": 3}, {}, {"incomplete": 2},
     lambda r: r.output_events == 8),
]


@pytest.mark.parametrize("case", FAILING, ids=[c[0] for c in FAILING])
def test_server_fault_is_classified_recorded_and_counted(test_server, tokenizer_dir, tmp_path, case):
    _, backend, fault, overrides, classes, check = case
    server = test_server(ttft_ms=5, itl_ms=2, faults=[fault])
    report = execute_run(spec(server.base_url, tokenizer_dir, tmp_path, backend=backend, **overrides))
    r = report.result
    assert r["infermeter"]["errors_by_class"] == classes
    assert r["failed"] == 2 and r["completed"] == 4
    recs = list(read_records(report.records_path))
    assert len(recs) == 6  # failed requests are recorded too
    failed = [x for x in recs if not x.ok]
    assert len(failed) == 2
    for x in failed:  # its class and the timings it got so far
        assert x.error == next(iter(classes)) and x.sent is not None and x.end >= x.sent
        assert check(x), x
    assert any(w["code"] == "requests-failed"
               and w["message"].startswith(f"2 of 6 requests failed ({next(iter(classes))} 2)")
               for w in r["infermeter"]["warnings"])
    assert exit_code_for(r) == 5


def _ok_slow_headers(recs, result):  # the header delay counts in TTFT
    return sum(1 for x in recs if x.ttft >= 1.5) == 2


def _ok_no_usage(recs, result):  # the client tokenizer counts what the server did not
    fallback = [x for x in recs if x.output_tokens_server is None]
    return (len(fallback) == 2 and all(x.output_tokens_client == 8 and "no usage chunk" in x.anomalies
                                       for x in fallback)
            and result["infermeter"]["work"]["count_source"] == {"server": 4, "tokenizer": 2}
            and result["total_output_tokens"] == 6 * 8)


SUCCEEDING = [
    ("no-data", {"mode": "no_data", "every": 3}, {},
     lambda recs, result: all(x.output_events == 8 and not x.anomalies for x in recs)),
    ("no-done", {"mode": "no_done", "every": 3}, {},
     lambda recs, result: sum("stream ended without [DONE]" in x.anomalies for x in recs) == 2),
    ("no-usage", {"mode": "no_usage", "every": 3}, {}, _ok_no_usage),
    ("slow-headers", {"mode": "slow_headers", "every": 3, "seconds": 1.5}, {"request_timeout": 30.0},
     _ok_slow_headers),
]


@pytest.mark.parametrize("case", SUCCEEDING, ids=[c[0] for c in SUCCEEDING])
def test_tolerable_oddities_succeed(test_server, tokenizer_dir, tmp_path, case):
    _, fault, overrides, check = case
    server = test_server(ttft_ms=5, itl_ms=2, faults=[fault])
    report = execute_run(spec(server.base_url, tokenizer_dir, tmp_path, **overrides))
    assert report.result["completed"] == 6 and report.result["failed"] == 0
    assert server.stats()["faults"] == {fault["mode"]: 2}  # the fault did fire
    recs = list(read_records(report.records_path))
    assert check(recs, report.result)
    assert exit_code_for(report.result) == 0


# --------------------------------------------------------------------------- stop rules
@pytest.mark.parametrize("rule,reason", [({"max_errors": 3}, "--max-errors 3"),
                                         ({"max_error_rate": 0.25}, "--max-error-rate")])
def test_stop_rules_end_the_run_and_keep_what_finished(test_server, tokenizer_dir, tmp_path, rule, reason):
    server = test_server(ttft_ms=5, itl_ms=1, faults=[{"mode": "http_500", "every": 2}])
    report = execute_run(spec(server.base_url, tokenizer_dir, tmp_path, num_prompts=100, max_concurrency=2,
                              random_output_len=4, **rule))
    r = report.result
    assert reason in r["infermeter"]["stopped_early"]
    assert r["infermeter"]["errors_by_class"]["http_5xx"] >= 4
    recs = list(read_records(report.records_path))
    assert len(recs) == r["completed"] + r["failed"] < 100
    assert exit_code_for(r) == 6


def test_server_dying_mid_run(test_server, tokenizer_dir, tmp_path, capsys):
    """The server process exits mid-stream: that request is a reset, the rest cannot connect;
    with --max-errors the run stops (exit 6), and what finished is on disk."""
    server = test_server(ttft_ms=5, itl_ms=2, allow_die=True, faults=[{"mode": "die", "every": 3}])
    code = main(cli_args(server.base_url, tokenizer_dir, tmp_path, "--num-prompts", "8",
                         "--max-concurrency", "1", "--max-errors", "2"))
    assert code == 6
    assert server.process.wait(5) == 70  # it really died
    data = json.loads((tmp_path / "r.json").read_text())
    # The request it died in is a reset; later ones find nobody (connect), or a dead kept-alive
    # connection (reset), depending on when the process is gone.
    # (The stop rule fires once more than 2 have failed; a request already on its way may follow.)
    failed = sum(data["infermeter"]["errors_by_class"].values())
    assert set(data["infermeter"]["errors_by_class"]) == {"reset", "connect"} and 3 <= failed < 6
    assert data["completed"] == 2 and "--max-errors 2" in data["infermeter"]["stopped_early"]
    assert len(list(read_records(tmp_path / "r.records.jsonl"))) == 2 + failed
    assert f"{failed} of {2 + failed} requests failed" in capsys.readouterr().out


def test_server_dying_without_a_stop_rule_fails_the_rest(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=5, itl_ms=2, allow_die=True, faults=[{"mode": "die", "every": 3}])
    r = execute_run(spec(server.base_url, tokenizer_dir, tmp_path, max_concurrency=1)).result
    assert sum(r["infermeter"]["errors_by_class"].values()) == 4 and r["completed"] == 2
    assert set(r["infermeter"]["errors_by_class"]) == {"reset", "connect"}
    assert r["infermeter"]["stopped_early"] is None and exit_code_for(r) == 5


# --------------------------------------------------------------------------- refused before load
def test_connection_refused_before_the_run(tokenizer_dir, tmp_path, capsys):
    code = main(cli_args(f"http://127.0.0.1:{closed_port()}", tokenizer_dir, tmp_path, "--num-prompts", "2"))
    err = capsys.readouterr().err
    assert code == 3 and "cannot reach" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("extra,code,text", [
    (["--random-input-len", "5000"], 2, "exceeds the server's context of 4096 tokens"),
    (["--model", "nope"], 3, "model 'nope' is not served"),
])
def test_refused_before_any_request_reaches_the_server(test_server, tokenizer_dir, tmp_path, capsys,
                                                        extra, code, text):
    server = test_server(max_model_len=4096)
    assert main(cli_args(server.base_url, tokenizer_dir, tmp_path, "--num-prompts", "2", *extra)) == code
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("infermeter: error:")]
    assert len(errors) == 1 and text in errors[0]
    assert server.stats()["count"] == 0  # no generation request was sent


# --------------------------------------------------------------------------- our own crashes and signals
def _start_slow_run(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=50, itl_ms=20)  # ~0.4 s per request
    args = cli_args(server.base_url, tokenizer_dir, tmp_path, "--num-prompts", "400", "--max-concurrency", "4",
                    "--random-output-len", "16")
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records = tmp_path / "r.records.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if records.exists() and records.read_bytes().count(b"\n") >= 3:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the run wrote no records")
    return server, proc, records


def test_kill_9_loses_no_completed_request(test_server, tokenizer_dir, tmp_path):
    server, proc, records = _start_slow_run(test_server, tokenizer_dir, tmp_path)
    time.sleep(random.uniform(0.0, 0.6))  # a random moment mid-run
    proc.kill()
    proc.communicate(timeout=30)
    data = records.read_bytes()
    assert data.endswith(b"\n")  # no torn line
    lines = data.splitlines()
    parsed = [json.loads(line) for line in lines]  # every line whole JSON
    assert len(parsed) >= 3 and len({p["index"] for p in parsed}) == len(parsed)
    assert len(list(read_records(records))) == len(parsed)
    # Every request the server finished is on disk, except at most those the client was still
    # reading (4 in flight) or had read but not yet interpreted (a loop iteration's worth) when it died.
    time.sleep(0.5)
    served = server.stats()["outcomes"].get("ok", 0)
    ok = sum(1 for p in parsed if p["ok"])
    assert served - 6 <= ok <= served
    assert not (tmp_path / "r.json").exists()  # no half-written result
    assert not list(tmp_path.glob(".r.json.*"))


@pytest.mark.parametrize("sig,reason", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")])
def test_signal_stops_the_run_and_saves_a_partial_result(test_server, tokenizer_dir, tmp_path, sig, reason):
    _server, proc, records = _start_slow_run(test_server, tokenizer_dir, tmp_path)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["infermeter"]["stopped_early"].startswith(reason)
    recs = list(read_records(records))
    assert len(recs) == data["completed"] + data["failed"] and data["completed"] >= 3
    assert set(data["infermeter"]["errors_by_class"]) <= {"cancelled"}  # only the interrupted ones
    assert "stopped early" in out


def test_sigterm_before_the_load_is_one_line_exit_130(tokenizer_dir, tmp_path):
    with Loopback(models_delay=8.0) as server:  # preflight hangs
        proc = subprocess.Popen(CLI + cli_args(server.base_url, tokenizer_dir, tmp_path, "--num-prompts", "2"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not server.seen and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "infermeter: interrupted"
    assert server.count == 0 and not (tmp_path / "r.json").exists()


def test_large_concurrency_raises_the_open_file_limit(test_server, tokenizer_dir, tmp_path):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"hard open-file limit {hard} is too low for this test")
    server = test_server(ttft_ms=5, itl_ms=1)

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))

    args = cli_args(server.base_url, tokenizer_dir, tmp_path, "--num-prompts", "300", "--max-concurrency", "300",
                    "--random-output-len", "2")
    proc = subprocess.run(CLI + args, capture_output=True, text=True, timeout=120, preexec_fn=low_limit)
    assert proc.returncode == 0, proc.stderr
    assert "open-file limit raised from 200" in proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["completed"] == 300


# --------------------------------------------------------------------------- secrets and untrusted text
class Loopback:
    """A minimal OpenAI-style server on 127.0.0.1, in a thread, that records what it received."""

    def __init__(self, *, models=("test-model",), error_every=0, error_message="", redirect_to=None,
                 models_delay=0.0):
        self.models = list(models)
        self.models_delay = models_delay
        self.error_every = error_every
        self.error_message = error_message
        self.redirect_to = redirect_to
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self.count = 0
        self._ready = threading.Event()

    async def _models(self, request):
        self.seen.append((request.method, request.path, request.headers.get("Authorization")))
        await asyncio.sleep(self.models_delay)
        return web.json_response({"data": [{"id": m, "max_model_len": 4096} for m in self.models]})

    async def _completions(self, request):
        self.seen.append((request.method, request.path, request.headers.get("Authorization")))
        if self.redirect_to:
            raise web.HTTPTemporaryRedirect(self.redirect_to + request.path)
        body = await request.json()
        self.count += 1
        if self.error_every and self.count % self.error_every == 0:
            return web.json_response({"error": {"message": self.error_message}}, status=500)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        n = body.get("max_tokens", 4)
        for i in range(n):
            chunk = {"choices": [{"index": 0, "text": " the", "finish_reason": "length" if i == n - 1 else None}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        usage = {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": n}}
        await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def __enter__(self) -> "Loopback":
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        return self

    async def _serve(self):
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


SECRET = "sk-infermeter-test-9f8e7d6c5b4a"


@pytest.mark.parametrize("variant", ["env", "file", "header"])
def test_api_key_goes_only_to_the_target_and_is_never_written(tokenizer_dir, tmp_path, capsys, monkeypatch,
                                                              variant):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out_dir = tmp_path / "results"
    with Loopback() as target:
        extra = ["--num-prompts", "4", "--max-concurrency", "2", "--metadata", "team=infra"]
        if variant == "env":
            monkeypatch.setenv("IM_TEST_KEY", SECRET)
            extra += ["--api-key-env", "IM_TEST_KEY"]
        elif variant == "file":
            key_file = tmp_path / "key.txt"
            key_file.write_text(SECRET + "\n")
            extra += ["--api-key-file", str(key_file)]
        else:
            extra += ["--header", f"Authorization: Bearer {SECRET}", f"-HX-Api-Key={SECRET}"]
        args = cli_args(target.base_url, tokenizer_dir, out_dir, *extra)
        monkeypatch.setattr(sys, "argv", ["infermeter", *args])  # provenance records sys.argv
        code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # The target got the key, on every request.
    assert {a for _m, _p, a in target.seen} == {f"Bearer {SECRET}"}
    assert {p for _m, p, _a in target.seen} == {"/v1/models", "/v1/completions"} and target.count == 4
    files = [p for p in out_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} == {"r.json", "r.records.jsonl"}
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p
    for text in (captured.out, captured.err):
        assert SECRET not in text
    data = json.loads((out_dir / "r.json").read_text())
    assert data["completed"] == 4
    if variant == "header":
        assert data["infermeter"]["target"]["headers"] == {"Authorization": "<redacted>", "X-Api-Key": "<redacted>"}
        assert "Authorization: <redacted>" in data["infermeter"]["provenance"]["command"]


def test_api_key_is_not_sent_to_another_host_on_redirect(tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with Loopback() as elsewhere, Loopback() as target:
        target.redirect_to = elsewhere.base_url  # every request is redirected to another origin
        main(cli_args(target.base_url, tokenizer_dir, tmp_path, "--num-prompts", "2"))
    assert target.count == 0 and {a for _m, _p, a in target.seen} == {f"Bearer {SECRET}"}
    # Whether the transport follows the redirect or not, the other host never sees the key.
    assert all(a is None for _m, _p, a in elsewhere.seen)


def test_server_text_cannot_drive_the_terminal(tokenizer_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    evil = "boom \x1b[31mred\x1b]0;pwned\x07 [bold]markup[/bold]\u202e"
    with Loopback(error_every=2, error_message=evil) as server:
        code = main(cli_args(server.base_url, tokenizer_dir, tmp_path, "--num-prompts", "4",
                             "--max-concurrency", "1"))
    out, err = capsys.readouterr()
    assert code == 5
    assert "first: http_5xx: boom ?[31mred?]0;pwned? [bold]markup[/bold]?" in " ".join(out.split())  # inert
    for text in (out, err):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    # The message is kept as data in the result (JSON-escaped).
    assert evil in json.loads((tmp_path / "r.json").read_text())["errors"][1]


def test_server_text_in_a_one_line_error_is_neutralised(tokenizer_dir, tmp_path, capsys):
    with Loopback(models=["evil\x1b[2J\x07\nsecond line"]) as server:
        code = main(cli_args(server.base_url, tokenizer_dir, tmp_path, "--num-prompts", "2"))
    err = capsys.readouterr().err
    assert code == 3 and "is not served" in err
    assert "\x1b" not in err and "\x07" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("binary, words", [
    ("missing", "is not an existing file"),
    ("failing", "exited with status 1 while starting: boom"),
])
def test_embedded_engine_failure_is_one_line_exit_4(tmp_path, monkeypatch, capsys, binary, words):
    if binary == "missing":
        path = tmp_path / "no-such-llama-server"
    else:
        path = tmp_path / "fake-llama-server"
        path.write_text('#!/bin/sh\necho "boom: failed to load model" >&2\nexit 1\n')
        path.chmod(0o755)
    monkeypatch.setenv("INFERMETER_LLAMA_SERVER", str(path))
    code = main(["run", "--num-prompts", "2", "--disable-tqdm", "--save-result", "--result-dir", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("infermeter: error:")]
    assert code == 4
    assert len(err) == 1 and words in err[0]
