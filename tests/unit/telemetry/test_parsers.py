"""Telemetry parsers on fixture files of every CLI and exporter format (tests/fixtures/telemetry/)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from infermeter.telemetry import backends, prom
from infermeter.telemetry.amd import (parse_amd_smi_metric_csv, parse_amd_smi_metric_json, parse_rocm_smi_csv,
                                      parse_rocm_smi_json)
from infermeter.telemetry.base import MIB, to_bytes, to_float, to_joules
from infermeter.telemetry.dcgm import parse_dcgm
from infermeter.telemetry.nvidia import parse_nvidia_smi_csv

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "telemetry"


def text(name: str) -> str:
    return (FIX / name).read_text()


# -- value helpers -------------------------------------------------------------------------

@pytest.mark.parametrize("raw, want", [
    (12, 12.0), ("12.5 W", 12.5), ("[N/A]", None), ("N/A", None), ("[Not Supported]", None),
    ({"value": 42, "unit": "%"}, 42.0), ({"value": "N/A"}, None), (float("nan"), None), (True, None),
    ("1.5e3", 1500.0),
])
def test_to_float(raw, want):
    assert to_float(raw) == want


def test_units():
    assert to_bytes({"value": 2, "unit": "MB"}, "B") == 2 * MIB  # amd-smi's MB are MiB
    assert to_bytes("3 MiB") == 3 * MIB
    assert to_bytes("4096", "B") == 4096
    assert to_bytes("[N/A]", "MiB") is None
    assert to_joules({"value": 2.5, "unit": "kJ"}) == 2500.0
    assert to_joules(1500, "mJ") == pytest.approx(1.5)


# -- NVIDIA ----------------------------------------------------------------------------------

def test_nvidia_smi_csv_without_header_uses_the_query_order():
    rows = parse_nvidia_smi_csv(text("nvidia_smi_noheader.csv"))
    assert [r["gpu"] for r in rows] == [0, 1]
    assert rows[0]["name"] == "NVIDIA H100 80GB HBM3"
    assert rows[0]["mem_used_bytes"] == 71234 * MIB
    assert rows[0]["mem_total_bytes"] == 81559 * MIB
    assert rows[0]["util_pct"] == 97.0 and rows[0]["power_w"] == 612.45
    assert "power_w" not in rows[1]  # [N/A]
    assert rows[0]["mem_api"] == "nvidia-smi"


def test_nvidia_smi_csv_with_header_is_read_by_column_name():
    rows = parse_nvidia_smi_csv(text("nvidia_smi_header.csv"))
    assert len(rows) == 2
    first, second = rows
    # columns in another order, with units in names and values
    assert first["gpu"] == 0 and first["mem_used_bytes"] == 30012 * MIB
    assert first["mem_total_bytes"] == 40960 * MIB
    assert first["util_pct"] == 35.0 and first["power_w"] == pytest.approx(250.31)
    assert first["uuid"].startswith("GPU-5a2b")
    assert second["gpu"] == 1 and second["mem_used_bytes"] == 0
    assert "util_pct" not in second and "power_w" not in second


# -- AMD -----------------------------------------------------------------------------------

def test_rocm_smi_meminfo_json_strings_in_bytes():
    rows = parse_rocm_smi_json(text("rocm_smi_meminfo.json"))
    assert [r["gpu"] for r in rows] == [0, 1]
    assert rows[0]["mem_used_bytes"] == 195784933376
    assert rows[0]["mem_total_bytes"] == 206141652992
    assert rows[1]["mem_used_bytes"] == 297824256


def test_rocm_smi_full_json_power_names_differ_by_card_and_system_is_skipped():
    rows = parse_rocm_smi_json(text("rocm_smi_full.json"))
    assert len(rows) == 2  # "system" is not a card
    assert rows[0]["power_w"] == 712.0 and rows[0]["util_pct"] == 100.0
    assert rows[1]["power_w"] == 140.0 and rows[1]["util_pct"] == 0.0
    assert rows[1]["mem_total_bytes"] == 68702699520


def test_rocm_smi_csv_by_column_name():
    rows = parse_rocm_smi_csv(text("rocm_smi_meminfo.csv"))
    assert [(r["gpu"], r["mem_used_bytes"]) for r in rows] == [(0, 195784933376), (1, 297824256)]


def test_amd_smi_metric_json_bare_list():
    rows = parse_amd_smi_metric_json(text("amd_smi_metric_list.json"))
    assert [r["gpu"] for r in rows] == [0, 1]
    g0, g1 = rows
    assert g0["mem_used_bytes"] == 180314 * MIB and g0["mem_total_bytes"] == 196592 * MIB
    assert g0["mem_free_bytes"] == 16278 * MIB
    assert g0["util_pct"] == 97.0 and g0["mem_util_pct"] == 41.0
    assert g0["power_w"] == 698.0 and g0["energy_j"] == pytest.approx(8123456.25)
    # "usage": "N/A", "socket_power": "N/A", "energy": "N/A"
    assert "util_pct" not in g1 and "power_w" not in g1 and "energy_j" not in g1
    assert g1["mem_used_bytes"] == 284 * MIB


def test_amd_smi_metric_json_rocm7_gpu_data_wrapper():
    rows = parse_amd_smi_metric_json(text("amd_smi_metric_gpu_data.json"))
    assert len(rows) == 1
    g = rows[0]
    assert g["mem_used_bytes"] == 250000 * MIB and g["util_pct"] == 12.0 and g["power_w"] == 231.0
    assert g["energy_j"] == pytest.approx(1234500.0)  # kJ


def test_amd_smi_metric_csv_by_column_name():
    rows = parse_amd_smi_metric_csv(text("amd_smi_metric.csv"))
    assert [r["gpu"] for r in rows] == [0, 1]
    assert rows[0]["mem_used_bytes"] == 180314 * MIB and rows[0]["power_w"] == 698.0
    assert rows[0]["energy_j"] == pytest.approx(8123456.25)
    assert rows[1]["mem_used_bytes"] == 284 * MIB
    assert "util_pct" not in rows[1] and "power_w" not in rows[1]


def test_amd_smi_metric_csv_other_column_names_and_title_line():
    csv_text = "AMD SMI metrics\ngpu,gfx_usage,current_socket_power,vram_used,vram_total\n0,55,300,1024,2048\n"
    rows = parse_amd_smi_metric_csv(csv_text)
    assert rows[0]["util_pct"] == 55.0 and rows[0]["power_w"] == 300.0
    assert rows[0]["mem_used_bytes"] == 1024 * MIB and rows[0]["mem_total_bytes"] == 2048 * MIB


# -- DCGM exporter -------------------------------------------------------------------------

def test_dcgm_exporter_text():
    rows = parse_dcgm(text("dcgm_exporter.txt"))
    assert [r["gpu"] for r in rows] == [0, 1]
    g0 = rows[0]
    assert g0["mem_used_bytes"] == 77205 * MIB
    assert g0["mem_free_bytes"] == 3811 * MIB and g0["mem_reserved_bytes"] == 543 * MIB
    assert g0["mem_total_bytes"] == (77205 + 3811 + 543) * MIB
    assert g0["util_pct"] == 98.0 and g0["power_w"] == pytest.approx(645.123)
    # the energy counter has no _total: prometheus_client renames its sample, the lookup finds it
    assert g0["energy_j"] == pytest.approx(987654.321)
    assert g0["name"] == "NVIDIA H100 80GB HBM3" and g0["host"] == "gpu-node-1"
    assert rows[1]["mem_used_bytes"] == 12 * MIB


# -- Prometheus lookups ---------------------------------------------------------------------

def test_counter_lookups_survive_the_parsers_renames():
    # OpenMetrics habit: TYPE says foo, samples say foo_total -> parser makes an empty
    # counter family plus an "unknown" one; classic: TYPE foo_total; no suffix at all.
    body = ("# TYPE a:foo counter\na:foo_total{x=\"1\"} 4\na:foo_total{x=\"2\"} 6\n"
            "# TYPE b_total counter\nb_total 7\n"
            "# TYPE c counter\nc 9\n")
    e = prom.parse(body)
    assert e.scalar(["a:foo"]) == (10.0, "a:foo")
    assert e.scalar(["b"])[0] == 7.0 and e.scalar(["b_total"])[0] == 7.0
    assert e.scalar(["c"])[0] == 9.0  # renamed c_total by the parser
    assert e.scalar(["missing"]) == (None, None)


def test_a_malformed_line_costs_only_itself():
    body = "good_one 1\nthis is { not prometheus\ngood_two 2\n"
    e = prom.parse(body)
    assert e.scalar(["good_one"])[0] == 1.0
    assert e.scalar(["good_two"])[0] == 2.0


def test_histogram_quantiles_and_deltas():
    h = prom.Histogram([(0.1, 10.0), (0.2, 30.0), (0.5, 40.0), (math.inf, 40.0)], 8.0, 40.0)
    assert h.mean == pytest.approx(0.2)
    assert h.quantile(0.5) == pytest.approx(0.15)  # rank 20 of 40: halfway through (0.1, 0.2]
    assert h.quantile(0.25) == pytest.approx(0.1)
    assert h.quantile(0.1) == pytest.approx(0.04)  # first bucket interpolates from 0
    earlier = prom.Histogram([(0.1, 10.0), (0.2, 10.0), (0.5, 10.0), (math.inf, 10.0)], 0.5, 10.0)
    d = h.delta(earlier)
    assert d.count == 30.0 and d.sum == pytest.approx(7.5)
    assert d.buckets[0] == (0.1, 0.0) and d.buckets[1] == (0.2, 20.0)
    # a reset (server restarted): counts from zero, as Prometheus' increase()
    reset = prom.Histogram([(0.1, 1.0), (math.inf, 2.0)], 0.3, 2.0)
    assert reset.delta(h).count == 2.0
    over = prom.Histogram([(0.1, 0.0), (math.inf, 5.0)], 5.0, 5.0)
    assert over.quantile(0.99) == 0.1  # in +Inf: the highest finite bound, a lower bound
    assert prom.Histogram([], 0.0, 0.0).quantile(0.5) is None
    assert prom.Histogram.from_json(h.to_json()) == h


# -- server metrics maps --------------------------------------------------------------------

def normalized(name: str, backend: str | None = None):
    body = text(name)
    expo = prom.parse(body)
    mmap = backends.metric_map(backend) if backend else backends.detect(expo)
    assert mmap is not None
    values, matched = backends.normalize(prom.parse(body, mmap.wanted()), mmap)
    return mmap, values, matched


def test_vllm_v1_names():
    mmap, v, matched = normalized("vllm_v1.txt")
    assert mmap.backend == "vllm"
    assert v["running"] == 24 and v["waiting"] == 7 and v["kv_usage"] == 0.8125
    assert v["prefix_queries"] == 120000 and v["prefix_hits"] == 30000
    assert v["preemptions"] == 3 and v["generation_tokens"] == 64000
    assert v["requests"] == 500  # summed over finished_reason
    assert v["hist"]["ttft"]["count"] == 500 and v["hist"]["ttft"]["sum"] == 52.5
    assert v["hist"]["itl"]["count"] == 63500
    assert matched["kv_usage"] == "vllm:kv_cache_usage_perc"
    assert matched["itl"] == "vllm:inter_token_latency_seconds"
    assert "python_gc_objects_collected" not in str(v)


def test_vllm_older_names():
    _, v, matched = normalized("vllm_v0.txt", "vllm")
    assert v["kv_usage"] == 0.5 and matched["kv_usage"] == "vllm:gpu_cache_usage_perc"
    assert v["prefix_queries"] == 4000 and matched["prefix_queries"] == "vllm:gpu_prefix_cache_queries"
    assert v["prefix_hit_rate"] == 0.25
    assert v["preemptions"] == 5
    assert matched["itl"] == "vllm:time_per_output_token_seconds" and v["hist"]["itl"]["count"] == 19900


def test_tgi():
    mmap, v, matched = normalized("tgi.txt")
    assert mmap.backend == "tgi"
    assert v["waiting"] == 9 and v["running"] == 32 and v["batch_max_tokens"] == 51234
    assert v["requests"] == 1200  # counter without _total
    assert v["generation_tokens"] == 153600 and v["prompt_tokens"] == 614400  # histogram sums
    assert v["hist"]["e2e"]["count"] == 1200 and "ttft" not in v["hist"]


def test_sglang():
    mmap, v, _ = normalized("sglang.txt")
    assert mmap.backend == "sglang"
    assert v["running"] == 12 and v["waiting"] == 3 and v["kv_usage"] == 0.28
    assert v["prefix_hit_rate"] == pytest.approx(0.0075, abs=1e-4)
    assert v["generation_tokens"] == 7557572
    assert v["hist"]["ttft"]["count"] == 100 and v["hist"]["itl"]["count"] == 1000


def test_llamacpp_this_version():
    mmap, v, _ = normalized("llamacpp.txt")
    assert mmap.backend == "llama.cpp"
    assert v["running"] == 2 and v["waiting"] == 3
    assert v["generation_tokens"] == 4096 and v["prompt_tokens"] == 6144
    assert v["prefix_hits"] == 2048 and v["prefix_queries"] == 6144 + 2048  # prompt_tokens excludes cached
    assert "kv_usage" not in v  # this build exports none
    assert "hist" not in v


def test_llamacpp_older_build_kv_usage():
    _, v, matched = normalized("llamacpp_old.txt", "llama.cpp")
    assert v["kv_usage"] == 0.375 and v["kv_tokens"] == 1536
    assert matched["kv_usage"] == "llamacpp:kv_cache_usage_ratio"


def test_split_text_keeps_histograms_out_of_the_cheap_parse():
    mmap = backends.metric_map("vllm")
    scalars, hists = backends.split_text(text("vllm_v1.txt"), mmap)
    assert "_bucket" not in scalars and "vllm:num_requests_running" in scalars
    assert "vllm:time_to_first_token_seconds_bucket" in hists and "num_requests_running" not in hists
    values, _ = backends.normalize(prom.parse(scalars), mmap, histograms=False)
    assert values["running"] == 24 and "hist" not in values
    tgi_scalars, _ = backends.split_text(text("tgi.txt"), backends.metric_map("tgi"))
    assert "tgi_request_generated_tokens_sum" in tgi_scalars and "_bucket" not in tgi_scalars
    tv, _ = backends.normalize(prom.parse(tgi_scalars), backends.metric_map("tgi"), histograms=False)
    assert tv["generation_tokens"] == 153600


def test_detect_prefers_vllm_names_over_tgi_style_gauges():
    body = "vllm:num_requests_running 1\ntgi_queue_size 2\n"
    assert backends.detect(prom.parse(body)).backend == "vllm"
    assert backends.detect(prom.parse("unrelated_metric 1\n")) is None
    assert backends.metric_map("llamacpp").backend == "llama.cpp"
    assert backends.metric_map("openai") is None
