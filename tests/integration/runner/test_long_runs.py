"""A long run's analysis from records spilled to disk (core/recordstore.py, core/samplecolumn.py)
equals the analysis of the same records held in memory: run against the test server with the
memory bounds set low, then recompute from the records file."""

from __future__ import annotations

import pytest

from infermeter.core import recordstore, samplecolumn
from infermeter.core.livestats import LatencySnapshot, LiveLatencies
from infermeter.core.recordstore import run_duration
from infermeter.metrics.compute import compute
from infermeter.metrics.merge import merge_files
from infermeter.runner.execute import execute_run
from infermeter.runner.spec import RunSpec
from infermeter.storage import result as result_mod
from infermeter.storage.files import read_records

pytestmark = pytest.mark.integration


def spec(server, tokenizer_dir, tmp_path, **kw) -> RunSpec:
    base = dict(backend="vllm", base_url=server.base_url, model="test-model", tokenizer=str(tokenizer_dir),
                dataset_name="random", random_input_len=8, random_output_len=6, ignore_eos=True,
                num_prompts=900, request_rate=600.0, result_dir=str(tmp_path), progress=False, telemetry=False)
    base.update(kw)
    return RunSpec.from_flat(base)


@pytest.fixture
def low_bounds(monkeypatch):
    monkeypatch.setattr(recordstore, "MEMORY_ROWS", 128)
    monkeypatch.setattr(recordstore, "BLOCK_ROWS", 64)
    monkeypatch.setattr(samplecolumn, "MEMORY_VALUES", 200)
    monkeypatch.setattr(result_mod, "PER_REQUEST_LIMIT", 300)
    spills = []
    real = recordstore.RecordStore._spill

    def spill(self):
        spills.append(len(self))
        return real(self)

    monkeypatch.setattr(recordstore.RecordStore, "_spill", spill)
    return spills


def test_a_spilled_run_reports_what_its_records_say(test_server, tokenizer_dir, tmp_path, low_bounds):
    server = test_server(ttft_ms=3, itl_ms=1)
    report = execute_run(spec(server, tokenizer_dir, tmp_path))
    r = report.result
    assert low_bounds, "the run's records never spilled to disk"
    recs = [x for x in read_records(report.records_path) if not x.warmup]
    assert len(recs) == 900 and r["completed"] == 900
    want = compute(recs, run_duration(recs), r["infermeter"]["percentiles"])
    for key in ("mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "std_ttft_ms", "mean_itl_ms", "p99_itl_ms",
                "median_tpot_ms", "p90_e2el_ms", "total_output_tokens", "request_throughput"):
        assert r[key] == pytest.approx(want[key], rel=1e-9), key
    assert r["infermeter"]["sample_counts"] == want["sample_counts"]
    # vLLM's per-request arrays: the first 300 requests, in request order, and the result says so
    by_index = {x.index: x for x in recs}
    assert r["input_lens"] == [by_index[i].input_len for i in range(300)]
    assert r["ttfts"] == pytest.approx([by_index[i].ttft for i in range(300)])
    assert r["infermeter"]["per_request_arrays"] == {"requests": 300, "of": 900, "complete": False}
    assert r["infermeter"]["validity"]["confidence"]["ttft"]["n"] == 900
    assert r["infermeter"]["client"]["dispatch_lag_p99_ms"] is not None


def test_shards_of_long_runs_merge_exactly(test_server, tokenizer_dir, tmp_path, low_bounds):
    server = test_server(ttft_ms=3, itl_ms=1)
    for k in (0, 1):
        execute_run(spec(server, tokenizer_dir, tmp_path, shard=f"{k}/2", start_at=None, num_prompts=700,
                         result_filename=f"s{k}.json"))
    merged, records_path = merge_files([tmp_path / "s0.json", tmp_path / "s1.json"], tmp_path / "merged.json")
    recs = list(read_records(records_path))
    assert len(recs) == 700 and sorted(x.index for x in recs) == list(range(700))
    pooled = [x for k in (0, 1) for x in read_records(tmp_path / f"s{k}.records.jsonl") if not x.warmup]
    assert sorted(x.ttft for x in recs) == pytest.approx(sorted(x.ttft for x in pooled))
    want = compute(recs, run_duration(recs), merged["infermeter"]["percentiles"])
    for key in ("p50_ttft_ms", "p99_ttft_ms", "p99_itl_ms", "mean_e2el_ms"):
        assert merged[key] == pytest.approx(want[key], rel=1e-9), key


def test_live_histograms_merge_exactly_and_stay_within_their_bound(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=4, itl_ms=1)
    for k in (0, 1):
        execute_run(spec(server, tokenizer_dir, tmp_path, shard=f"{k}/2", num_prompts=400,
                         result_filename=f"s{k}.json"))
    merged, records_path = merge_files([tmp_path / "s0.json", tmp_path / "s1.json"], tmp_path / "merged.json")
    live = LatencySnapshot.from_dict(merged["infermeter"]["histograms"])
    # exact: the merged buckets are those of one histogram fed every shard's requests (as recorded)
    ok = [x for k in (0, 1) for x in read_records(tmp_path / f"s{k}.records.jsonl") if x.ok and not x.warmup]
    one = LiveLatencies()
    for rec in ok:
        one.observe(rec)
    whole = one.snapshot()
    for name in ("ttft", "itl", "e2el"):
        a, b = getattr(live, name), getattr(whole, name)
        assert a.buckets() == b.buckets() and a.count == b.count and a.min == b.min and a.max == b.max, name
    # approximate: each percentile within the stated relative error of the exact one
    bound = merged["infermeter"]["histograms"]["rel_error"]
    for name, key in (("ttft", "ttft"), ("itl", "itl"), ("e2el", "e2el")):
        for p in (50, 90, 99):
            exact = merged[f"p{p}_{key}_ms"] / 1e3
            assert getattr(live, name).percentile(p) == pytest.approx(exact, rel=bound, abs=1e-9), (name, p)


def test_a_saturated_closed_loop_waits_for_its_backlog_of_answers(test_server, tokenizer_dir, tmp_path, monkeypatch):
    # Answers are interpreted off the byte path, a slice per loop turn; a closed loop that sends as
    # fast as answers arrive must not let them pile up (memory growing with the request count).
    from infermeter.load.generator import LoadRunner

    monkeypatch.setattr(LoadRunner, "BACKLOG_MAX", 8)
    monkeypatch.setattr(LoadRunner, "FINISH_SLICE_S", 0.0)  # one answer per loop turn: the backlog builds up
    server = test_server(ttft_ms=0, itl_ms=0)
    report = execute_run(spec(server, tokenizer_dir, tmp_path, num_prompts=3000, request_rate=float("inf"),
                              max_concurrency=64))
    r = report.result
    assert r["completed"] == 3000
    assert r["infermeter"]["client"]["finish_backlog_max"] <= 8 + 64
