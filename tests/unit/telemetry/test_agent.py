"""The remote-host agent serves samples over HTTP (loopback), and the puller moves them
onto the local clock."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from infermeter.telemetry import agent as agent_mod
from infermeter.telemetry import TelemetrySession
from infermeter.telemetry.agent import RemoteAgentSampler, TelemetryAgent
from infermeter.telemetry.base import Availability, Sampler

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CountingGpu(Sampler):
    name = "fake-gpu"
    kind = "gpu"

    def __init__(self) -> None:
        self.n = 0

    def sample(self) -> list[dict[str, Any]]:
        self.n += 1
        return [{"kind": "gpu", "source": self.name, "gpu": 0, "mem_used_bytes": self.n * 1000,
                 "mem_total_bytes": 10**9, "mem_api": "fake", "power_w": 100.0}]


def get(url: str) -> tuple[int, Any]:
    try:
        with OPENER.open(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_agent_serves_info_and_samples_since():
    gpu = CountingGpu()
    with TelemetryAgent([gpu], [Availability("fake-gpu", True)], port=0, interval=0.05) as agent:
        wait_for(lambda: gpu.n >= 3)
        status, info = get(agent.url + "/info")
        assert status == 200 and info["agent"] == "infermeter-telemetry"
        assert info["samplers"] == [{"name": "fake-gpu", "available": True}]
        assert abs(info["now"] - time.time()) < 5
        status, body = get(agent.url + "/samples?since=0")
        assert status == 200 and len(body["samples"]) >= 3
        ts = [s["t"] for s in body["samples"]]
        assert ts == sorted(ts)
        status, later = get(agent.url + f"/samples?since={ts[-1]!r}")
        assert all(s["t"] > ts[-1] for s in later["samples"])
        assert get(agent.url + "/samples?since=yesterday")[0] == 400
        assert get(agent.url + "/nope")[0] == 404

        remote = RemoteAgentSampler(agent.url)
        assert remote.probe().available
        assert remote.offset is not None and abs(remote.offset) < 1.0  # same host, same clock
        seen = gpu.n
        wait_for(lambda: gpu.n >= seen + 3)
        first = remote.sample()
        assert len(first) >= 2
        assert all(s["source"] == "agent:fake-gpu" and "t_agent" in s for s in first)
        again = remote.sample()  # only what is new since the last pull
        assert all(s["t_agent"] > first[-1]["t_agent"] for s in again)


def test_agent_without_gpus_is_reported_not_available():
    tried = [Availability("nvml", False, "nvidia-ml-py is not installed")]
    with TelemetryAgent([], tried, port=0) as agent:
        a = RemoteAgentSampler(agent.url).probe()
        assert not a.available and "nvidia-ml-py is not installed" in a.reason
    assert not RemoteAgentSampler("http://127.0.0.1:9").probe().available  # nothing listening


def test_remote_clock_offset_is_corrected(monkeypatch):
    skew = 100.0  # the agent's clock runs 100 s ahead

    def fake_get(url: str, timeout: float = 2.0):
        now = time.time() + skew
        if url.endswith("/info"):
            body = {"agent": "infermeter-telemetry", "now": now, "samplers": [{"name": "nvml", "available": True}]}
        else:
            body = {"now": now, "samples": [{"kind": "gpu", "source": "nvml", "gpu": 0, "t": now - 0.5,
                                             "mem_used_bytes": 1}]}
        return 200, json.dumps(body).encode()

    monkeypatch.setattr(agent_mod, "http_get", fake_get)
    remote = RemoteAgentSampler("127.0.0.1:1")
    assert remote.probe().available
    assert remote.offset == pytest.approx(skew, abs=0.5)
    (s,) = remote.sample()
    assert s["t"] == pytest.approx(time.time() - 0.5, abs=0.5)
    assert s["t_agent"] - s["t"] == pytest.approx(skew, abs=0.5)


def test_a_session_pulls_gpu_samples_from_an_agent():
    gpu = CountingGpu()
    with TelemetryAgent([gpu], [Availability("fake-gpu", True)], port=0, interval=0.05) as agent:
        with TelemetrySession(gpu=f"agent:{agent.url}", gpu_interval=0.05) as tel:
            tel.mark_phase("ready")
            wait_for(lambda: gpu.n >= 5)
            tel.mark_phase("load")
            start = time.time()
            n0 = gpu.n
            wait_for(lambda: gpu.n >= n0 + 3)
            summary = tel.stop(window=(start, time.time()))
    assert summary["gpu"]["available"]
    (g,) = summary["gpu"]["devices"].values()
    assert g["source"] == "agent:fake-gpu" and g["window"]["samples"] >= 1
    assert g["peak"]["mem_used_bytes"] >= g["ready"]["mem_used_bytes"]
