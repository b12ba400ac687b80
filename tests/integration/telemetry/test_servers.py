"""Telemetry against real servers on loopback: the embedded llama-server's /metrics under
load, the in-tree test server's vLLM histograms through a full run, and the agent CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from infermeter.embedded.build import ensure_llama_server
from infermeter.embedded.models import ensure_model
from infermeter.embedded.server import EmbeddedServer
from infermeter.runner.execute import execute_run
from infermeter.runner.spec import RunSpec
from infermeter.telemetry import TelemetrySession, read_series

pytestmark = [pytest.mark.integration]
try:  # the first test may build llama-server (minutes)
    import pytest_timeout  # noqa: F401

    pytestmark.append(pytest.mark.timeout(3600))
except ImportError:  # pragma: no cover
    pass

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


async def _complete(session: aiohttp.ClientSession, url: str, model: str, n_tokens: int) -> int:
    body = {"model": model, "prompt": "the quick brown fox " * 8, "max_tokens": n_tokens,
            "ignore_eos": True, "temperature": 0}
    async with session.post(url + "/v1/completions", json=body) as resp:
        assert resp.status == 200
        data = await resp.json()
        return int(data["usage"]["completion_tokens"])


async def _drive(url: str, model: str, requests: int, n_tokens: int) -> list[int]:
    async with aiohttp.ClientSession(trust_env=False) as session:
        return list(await asyncio.gather(*(_complete(session, url, model, n_tokens) for _ in range(requests))))


# long enough that the load outlasts several 50 ms scrapes even on a quiet machine
N_TOKENS = 400


def test_llama_server_metrics_sampled_during_load(tmp_path):
    model = ensure_model("tiny")
    with EmbeddedServer(model, parallel=2, binary=ensure_llama_server()) as server:
        tel = TelemetrySession(gpu="auto", interval=0.05, initial_phase="ready", mark_loading=False)
        with tel:
            avail = tel.attach_server(server.base_url, backend="llama.cpp", pid=server.pid)
            assert avail.available, avail.reason
            tel.mark_phase("load")
            start = time.time()
            tokens = asyncio.run(_drive(server.base_url, model.model_id, requests=4, n_tokens=N_TOKENS))
            end = time.time()
            summary = tel.stop(window=(start, end), output_tokens=sum(tokens),
                               path=tmp_path / "llama.telemetry.jsonl")
    assert tokens == [N_TOKENS] * 4
    meta, samples = read_series(tmp_path / "llama.telemetry.jsonl")
    server_samples = [s for s in samples if s["kind"] == "server"]
    during = [s for s in server_samples if s["phase"] == "load"]
    assert during, "no scrape landed inside the load window"
    # two slots, four requests: the server reported work in progress (and a queue) mid-run
    assert max(s["running"] for s in during) > 0
    assert max(s["running"] for s in server_samples) <= 2
    # llama.cpp credits tokens when a request finishes; the scrape after the window has all of them
    first, last = server_samples[0], server_samples[-1]
    assert last["generation_tokens"] - first["generation_tokens"] == 4 * N_TOKENS
    w = summary["server"]["window"]
    assert summary["server"]["backend"] == "llama.cpp"
    assert w["generation_tokens"] == 4 * N_TOKENS and w["max_running"] >= 1
    assert w["prompt_tokens"] + w["prefix_hits"] == w["prefix_queries"] > 0
    assert w["bracket"]["exact"] is True
    assert meta["window"]["start_epoch"] == start
    # no GPU here (or one, on a GPU runner): either way a result, never an error
    assert summary["gpu"]["available"] or summary["gpu"]["reason"]
    sm = next(a for a in summary["samplers"] if a["name"] == "server-metrics")
    assert sm["matched"]["running"] == "llamacpp:requests_processing"
    assert sm["errors"] == 0 and sm["samples"] == len(server_samples)


def test_run_on_the_test_server_with_telemetry(test_server, tokenizer_dir, tmp_path):
    """execute_run samples the server's /metrics through the run: the server's own TTFT
    histogram over the measured window beside the client's, warm-up excluded."""
    server = test_server(ttft_ms=40, itl_ms=2)
    spec = RunSpec.from_flat(dict(
        backend="vllm", base_url=server.base_url, model="test-model", tokenizer=str(tokenizer_dir),
        dataset_name="random", random_input_len=16, random_output_len=8, ignore_eos=True,
        num_prompts=12, max_concurrency=3, warmup_requests=2, result_dir=str(tmp_path),
        result_filename="run.json", progress=False,
        telemetry_interval=0.05))  # a short run: scrape often enough to land inside it
    report = execute_run(spec)
    summary = report.result["infermeter"]["telemetry"]
    w = summary["server"]["window"]
    ttft = w["latency"]["ttft"]
    assert ttft["server"]["count"] == 12  # the two warm-up requests are outside the window
    assert w["hist_bracket"]["exact"] is True
    assert ttft["client"]["count"] == 12
    # the server's TTFT (arrival to first write) is the injected 40 ms; the client's adds the network
    assert 35 <= ttft["server"]["mean_ms"] <= ttft["client"]["mean_ms"] + 5
    assert w["generation_tokens"] == 12 * 8
    assert 1 <= w["max_running"] <= 3
    assert [p["name"] for p in summary["phases"]][-3:] == ["warmup", "load", "cooldown"]
    _, samples = read_series(tmp_path / "run.telemetry.jsonl")
    assert any(s["phase"] == "warmup" for s in samples)
    assert all("_hist_text" not in s for s in samples)  # histograms parsed after the run


def test_agent_cli_serves_samples(tmp_path):
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[3] / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cli = "import sys; from infermeter.cli.main import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", cli, "telemetry", "agent", "--port", "0", "--duration", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[-1]
        with OPENER.open(url + "/info", timeout=10) as r:
            info = json.loads(r.read())
        assert info["agent"] == "infermeter-telemetry"
        names = {s["name"] for s in info["samplers"]}
        assert {"nvml", "nvidia-smi"} <= names  # tried, with the reason when not available
        with OPENER.open(url + "/samples?since=0", timeout=10) as r:
            assert "samples" in json.loads(r.read())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_scrape_and_probe_cli_against_the_test_server(test_server, capsys):
    from infermeter.cli.main import main

    server = test_server()
    assert main(["telemetry", "scrape", server.base_url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sample"]["backend"] == "vllm" and out["sample"]["running"] == 0
    assert out["sample"]["hist"]["ttft"]["count"] == 0
    assert out["matched"]["running"] == "vllm:num_requests_running"
    assert main(["telemetry", "probe", "--gpu", "none", "--metrics", server.base_url, "--samples", "3", "--json"]) == 0
    (entry,) = [e for e in json.loads(capsys.readouterr().out) if e["name"] == "server-metrics"]
    assert entry["available"] and entry["sample_cost_us"]["n"] == 3
    assert main(["telemetry", "scrape", server.base_url + "/nope"]) == 2
    assert "answered HTTP 404" in capsys.readouterr().err
