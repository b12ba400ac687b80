"""Phases and summaries from synthetic series; the session end to end with a fake GPU."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from infermeter.telemetry import TelemetrySession, read_series
from infermeter.telemetry.base import Sampler
from infermeter.telemetry.phases import PhaseTimeline
from infermeter.telemetry.prom import Histogram
from infermeter.telemetry.summary import summarize_gpus, summarize_server, window_energy

GIB = 1024**3
T0 = 1_700_000_000.0  # an epoch


def gpu_series() -> list[dict[str, Any]]:
    """idle 0.5 GiB; loading climbs; ready 68 GiB (what a screenshot shows); under load up
    to 76 GiB at t=12; energy counter 100 J/s (400 W under load on the power gauge)."""
    plan = [(0, "idle", 0.5), (1, "idle", 0.5), (2, "idle", 0.5), (3, "loading", 10), (4, "loading", 40),
            (5, "loading", 60), (6, "ready", 67), (7, "ready", 68)]
    plan += [(t, "load", 70 + (6 if t == 12 else 0)) for t in range(8, 18)]
    plan += [(18, "cooldown", 70)]
    out = []
    for t, phase, gib in plan:
        out.append({"kind": "gpu", "source": "fake", "gpu": 0, "name": "Fake GPU", "t": T0 + t, "phase": phase,
                    "mem_used_bytes": int(gib * GIB), "mem_total_bytes": 80 * GIB, "mem_api": "nvml:v2",
                    "util_pct": 90.0 if phase == "load" else 0.0, "power_w": 400.0 if phase == "load" else 100.0,
                    "energy_j": 100.0 * t,
                    "processes": [{"pid": 321, "used_bytes": int((gib - 0.5) * GIB)}]})
    return out


def test_ready_and_peak_memory_with_their_phases():
    window = (T0 + 8, T0 + 17.5)
    (g,) = summarize_gpus(gpu_series(), window=window, origin=T0 + 8, server_pid=321).values()
    assert g["idle_mem_used_bytes"] == int(0.5 * GIB)
    assert g["ready"]["mem_used_bytes"] == 68 * GIB  # the last sample before traffic
    assert g["ready"]["max_mem_used_bytes"] == 68 * GIB
    assert g["ready"]["mem_used_fraction"] == pytest.approx(68 / 80, abs=1e-4)
    assert g["ready"]["server_process_mem_bytes"] == int(67.5 * GIB)
    assert g["peak"]["mem_used_bytes"] == 76 * GIB
    assert g["peak"]["phase"] == "load" and g["peak"]["t_rel"] == pytest.approx(4.0)
    w = g["window"]
    assert w["samples"] == 10 and w["mean_util_pct"] == 90.0 and w["mean_power_w"] == 400.0
    assert w["energy_method"] == "energy-counter"
    assert w["energy_j"] == pytest.approx(950.0)  # 100 J/s for 9.5 s, interpolated at both edges
    assert g["mem_api"] == "nvml:v2" and g["samples"] == 19


def test_energy_from_power_when_there_is_no_counter():
    pts = [(T0 + t, 300.0) for t in range(5)]
    got = window_energy([], pts, T0, T0 + 4)
    assert (got.joules, got.method) == (pytest.approx(1200.0), "power-integral")
    assert window_energy([], pts, T0 + 1, T0 + 3).joules == pytest.approx(600.0)
    # samples cover only part of the window: n/a, not extended at the mean power
    short = window_energy([], pts[:3], T0, T0 + 4)
    assert short.joules is None and "not extrapolated" in short.reason
    single = window_energy([], [(T0 + 1, 250.0)], T0, T0 + 2)
    assert single.joules is None and single.method is None
    none = window_energy([], [], T0, T0 + 2)
    assert none.joules is None and "neither an energy counter nor power" in none.reason
    # a counter that went backwards (driver reload) is not trusted: power instead, saying why
    back = window_energy([(T0, 500.0), (T0 + 4, 10.0)], pts, T0, T0 + 4, interval=4.0)
    assert back.method == "power-integral" and "backwards" in back.reason


def test_session_totals_and_energy_per_output_token():
    from infermeter.telemetry.session import _gpu_totals

    gpus = summarize_gpus(gpu_series(), window=(T0 + 8, T0 + 17.5), origin=T0 + 8)
    totals = _gpu_totals(gpus, output_tokens=1900)
    assert totals["window_energy_j"] == pytest.approx(950.0)
    assert totals["energy_per_output_token_j"] == pytest.approx(0.5)
    assert totals["ready_mem_used_bytes"] == 68 * GIB


def test_phase_timeline_window_relabels_the_warmup():
    tl = PhaseTimeline()
    for t, name in ((3, "loading"), (6, "ready"), (7.5, "load")):
        tl.mark(name, T0 + t)
    assert tl.phase_at(T0 + 1) == "idle" and tl.phase_at(T0 + 6) == "ready" and tl.phase_at(T0 + 7.6) == "load"
    tl.apply_window(T0 + 8, T0 + 17.5, warmup=True)
    assert tl.phase_at(T0 + 7.7) == "warmup"
    assert tl.phase_at(T0 + 8) == "load" and tl.phase_at(T0 + 17.4) == "load"
    assert tl.phase_at(T0 + 17.6) == "cooldown"
    spans = tl.spans(until=T0 + 19, origin=T0 + 8)
    assert [s["name"] for s in spans] == ["loading", "ready", "warmup", "load", "cooldown"]
    assert spans[3]["start_rel"] == 0.0 and spans[3]["end_rel"] == pytest.approx(9.5)
    no_warm = PhaseTimeline()
    no_warm.mark("ready", T0 + 6)
    no_warm.mark("load", T0 + 7.5)
    no_warm.apply_window(T0 + 8, None, warmup=False)
    assert no_warm.phase_at(T0 + 7.7) == "ready"  # the early "load" mark is dropped
    assert no_warm.phase_at(T0 + 30) == "load"


def hist(counts: list[float], total: float) -> dict[str, Any]:
    bounds = [0.05, 0.1, 0.2, math.inf]
    return Histogram(list(zip(bounds, counts)), total, counts[-1]).to_json()


def test_server_summary_over_the_window():
    def s(t, **kw):
        return {"kind": "server", "source": "server-metrics", "backend": "vllm", "t": T0 + t, "scrape_ms": 2.0, **kw}

    before = hist([5, 10, 10, 10], 0.6)
    after = hist([5, 30, 50, 50], 6.6)  # 40 new requests: 20 in (0.05, 0.1], 20 in (0.1, 0.2]
    samples = [s(7, running=0, waiting=0, kv_usage=0.0, preemptions=2, generation_tokens=1000,
                 prefix_queries=100, prefix_hits=10, hist={"ttft": before})]
    for i, t in enumerate(range(8, 18)):
        samples.append(s(t, running=4 + (i % 2) * 4, waiting=i, kv_usage=0.1 * i, preemptions=2 + (i > 5) * 3,
                         generation_tokens=1000 + 200 * i, prefix_queries=100 + 50 * i, prefix_hits=10 + 25 * i))
    samples.append(s(18, running=0, waiting=0, kv_usage=0.0, preemptions=5, generation_tokens=2900,
                     prefix_queries=600, prefix_hits=260, hist={"ttft": after}))
    client = {"ttft": [0.08] * 20 + [0.16] * 20, "itl": [0.01, 0.02]}
    out = summarize_server(samples, window=(T0 + 8, T0 + 17.5), origin=T0 + 8, client=client)
    w = out["window"]
    assert out["backend"] == "vllm" and w["samples"] == 10
    assert w["peak_kv_usage"] == pytest.approx(0.9) and w["max_running"] == 8 and w["mean_running"] == 6.0
    assert w["max_waiting"] == 9 and w["mean_waiting"] == pytest.approx(4.5)
    assert w["preemptions"] == 3 and w["generation_tokens"] == 1900
    assert w["prefix_hit_rate"] == pytest.approx(250 / 500)
    # the scrape at t=8 began at the window's start but answered 2 ms later: the one before brackets
    assert w["bracket"] == {"start_t_rel": -1.0, "end_t_rel": 10.0, "exact": True}
    assert w["hist_bracket"] == {"start_t_rel": -1.0, "end_t_rel": 10.0, "exact": True}  # those with histograms
    ttft = w["latency"]["ttft"]
    assert ttft["server"]["count"] == 40 and ttft["server"]["mean_ms"] == pytest.approx(150.0)
    assert ttft["server"]["p50_ms"] == pytest.approx(100.0)
    assert ttft["server"]["p90_ms"] == pytest.approx(180.0)  # rank 36: 16/20 through (0.1, 0.2]
    assert ttft["client"]["count"] == 40 and ttft["client"]["mean_ms"] == pytest.approx(120.0)
    assert w["latency"]["itl"]["server"] is None and w["latency"]["itl"]["client"]["count"] == 2


class FakeGpu(Sampler):
    name = "fake-gpu"
    kind = "gpu"

    def __init__(self) -> None:
        self.mem = 1 * GIB
        self.forced_count = 0

    def sample(self) -> list[dict[str, Any]]:
        self.forced_count += self.forced
        return [{"kind": "gpu", "source": self.name, "gpu": 0, "mem_used_bytes": self.mem,
                 "mem_total_bytes": 80 * GIB, "mem_api": "fake", "power_w": 200.0}]


def test_session_marks_phases_and_writes_the_series(tmp_path):
    gpu = FakeGpu()
    # a 60 s interval: every sample here is one a phase change (or the end) asked for
    tel = TelemetrySession(gpu="none", gpu_interval=60, extra_samplers=[gpu])
    with tel:  # one sample at start (idle), one at "loading"
        gpu.mem = 40 * GIB
        tel.mark_phase("ready")
        gpu.mem = 60 * GIB
        tel.mark_phase("load")
        start = time.time()
        gpu.mem = 75 * GIB
        tel.mark_phase("load")  # e.g. the peak, sampled mid-run
        gpu.mem = 62 * GIB
        end = time.time()
        summary = tel.stop(window=(start, end), output_tokens=100, path=tmp_path / "run.telemetry.jsonl")
    (g,) = summary["gpu"]["devices"].values()
    # the sample the "load" mark took just before traffic is still "ready" (no warm-up)
    assert g["ready"]["mem_used_bytes"] == 60 * GIB and g["ready"]["max_mem_used_bytes"] == 60 * GIB
    assert g["peak"]["mem_used_bytes"] == 75 * GIB and g["peak"]["phase"] == "load"
    assert g["idle_mem_used_bytes"] == 1 * GIB
    assert gpu.forced_count >= 5
    assert summary["series_file"] == "run.telemetry.jsonl"
    assert summary["origin_epoch"] == start
    meta, samples = read_series(tmp_path / "run.telemetry.jsonl")
    assert meta["kind"] == "meta" and meta["origin_epoch"] == start
    phases = [s["phase"] for s in samples]
    assert phases[0] == "idle" and "loading" in phases and "ready" in phases and "load" in phases
    assert phases[-1] == "cooldown"  # the sample stop() takes after the window
    for s in samples:
        assert s["t_rel"] == pytest.approx(s["t"] - start, abs=1e-5)
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
    fake = next(a for a in summary["samplers"] if a["name"] == "fake-gpu")
    assert fake["available"] and fake["samples"] == len(samples) and fake["mean_cost_us"] is not None


def test_disabled_session_does_nothing():
    tel = TelemetrySession(enabled=False, extra_samplers=[FakeGpu()])
    with tel:
        tel.mark_phase("ready")
        assert tel.samples == []
        assert tel.stop() == {"enabled": False}


def test_for_run_reads_spec_settings():
    from infermeter.runner.sections import TelemetrySection

    tel = TelemetrySession.for_run(TelemetrySection(telemetry_gpu="none", telemetry_interval=0.25))
    assert tel.gpu_choice == "none" and tel.interval == 0.25 and tel.enabled
    assert tel.timeline.initial == "ready" and not tel.mark_loading  # an external server is loaded already


def test_after_warmup_samples_every_source_once():
    gpu = FakeGpu()
    with TelemetrySession(gpu="none", gpu_interval=60, extra_samplers=[gpu]) as tel:
        before = gpu.forced_count
        tel.after_warmup()
        assert gpu.forced_count == before + 1  # taken before the call returned
        tel.stop()
    TelemetrySession(gpu="none", enabled=False).after_warmup()  # telemetry off: nothing to sample, no error
