"""Sharding a plan and merging shard results: mechanisms, with hand-checkable values."""

from __future__ import annotations

import math
import time

import numpy as np

from infermeter.core.notices import message
import pytest

from infermeter.errors import UserError
from infermeter.load.schedule import LoadMode, arrival_offsets, make_plan
from infermeter.core.records import RequestRecord
from infermeter.load.shard import Shard, check_start_at
from infermeter.metrics.merge import merge_shards


@pytest.mark.parametrize("arrival,burstiness", [("poisson", 1.0), ("gamma", 0.5), ("constant", 1.0)])
@pytest.mark.parametrize("n_shards", [1, 2, 3, 7])
def test_sharded_schedules_union_is_exactly_the_unsharded_schedule(arrival, burstiness, n_shards):
    plan = make_plan(1001, 250.0, burstiness=burstiness, arrival=arrival)
    whole = arrival_offsets(plan, seed=5)
    pieces: dict[int, float] = {}
    for i in range(n_shards):
        shard = Shard(i, n_shards)
        idx = list(shard.indices(plan.num_requests))
        offs = shard.offsets(plan, seed=5)
        local = shard.local_plan(plan)
        assert local.num_requests == len(idx) == len(offs)
        assert local.request_rate == pytest.approx(250.0 / n_shards)
        for k, t in zip(idx, offs):
            assert k not in pieces
            pieces[k] = float(t)
    assert sorted(pieces) == list(range(1001))
    assert np.array_equal(np.array([pieces[k] for k in range(1001)]), whole)


def test_concurrency_and_burst_shares_add_up():
    plan = make_plan(100, max_concurrency=10)
    shares = [Shard(i, 4).local_plan(plan) for i in range(4)]
    assert [p.max_concurrency for p in shares] == [3, 3, 2, 2]
    assert [p.num_requests for p in shares] == [25, 25, 25, 25]
    assert all(p.mode is LoadMode.CONCURRENCY for p in shares)
    burst = make_plan(10, warmup_requests=3)
    parts = [Shard(i, 3).local_plan(burst) for i in range(3)]
    assert [p.num_requests for p in parts] == [4, 3, 3]
    assert [p.warmup_requests for p in parts] == [1, 1, 1]
    assert all(p.mode is LoadMode.BURST and math.isinf(p.request_rate) for p in parts)
    # a capped rate plan splits its cap too
    capped = make_plan(50, 20.0, max_concurrency=5)
    assert [Shard(i, 2).local_plan(capped).max_concurrency for i in range(2)] == [3, 2]


@pytest.mark.parametrize("text", ["", "2", "1/0", "2/2", "-1/2", "a/b", "1/2/3"])
def test_bad_shard_specs_are_refused(text):
    with pytest.raises(UserError):
        Shard.parse(text)


def test_shard_parse_and_too_many_shards():
    assert Shard.parse(" 1 / 3 ") == Shard(1, 3)
    with pytest.raises(UserError, match="nothing to send"):
        Shard(3, 4).local_plan(make_plan(3))
    with pytest.raises(UserError, match="smaller than"):
        Shard(2, 3).local_plan(make_plan(30, max_concurrency=2))


def test_start_at_in_the_past_is_refused_beyond_a_second():
    now = 1_000_000.0
    check_start_at(None, now)
    check_start_at(now + 5, now)
    check_start_at(now - 0.9, now)
    with pytest.raises(UserError, match="in the past"):
        check_start_at(now - 1.5, now)


def test_sleep_until_epoch_lands_on_the_epoch():
    import asyncio

    from infermeter.load.shard import sleep_until_epoch

    async def go():
        target = time.time() + 0.05
        origin = await sleep_until_epoch(target)
        return target, origin, time.perf_counter(), time.time()

    target, origin, perf_after, wall_after = asyncio.run(go())
    assert perf_after >= origin  # returned no earlier than the origin
    # the origin is the perf_counter reading of the wall-clock target
    assert (wall_after - target) == pytest.approx(perf_after - origin, abs=0.005)


# -- merge -----------------------------------------------------------------
def _rec(i, sent, tokens, end, ok=True, error=None):
    return RequestRecord(index=i, warmup=False, scheduled=sent, input_len=10, requested_output_len=len(tokens),
                         queued=sent, sent=sent, first_token=tokens[0] if tokens else None, end=end,
                         token_times=list(tokens), ok=ok, error=error, output_tokens_server=len(tokens),
                         output_events=len(tokens))


def _result(shard, start_epoch, n_records, global_load, conc=1, seed=0, warnings=()):
    return {
        "date": "x", "backend": "vllm", "model_id": "m", "tokenizer_id": "t", "num_prompts": n_records,
        "request_rate": "inf", "burstiness": 1.0, "max_concurrency": conc, "gpu": "none",
        "infermeter": {
            "start_epoch": start_epoch, "percentiles": [50.0, 75.0, 99.0],
            "percentile_metrics": ["ttft", "itl"], "goodput": None,
            "load": global_load, "workload": {"seed": seed}, "target": {"protocol": "openai", "backend": "vllm",
                                                                      "connection_notes": []},
            "work": {"token_count_crosscheck": {"checked": 2, "equal": 2, "mean_difference": 0.0}},
            "client": {"loop_lag_mean_ms": 0.01, "loop_lag_p99_ms": 0.05, "loop_lag_max_ms": 0.1,
                       "loop_samples": 10, "cpu_seconds": 1.0, "wall_seconds": 2.0, "cpu_utilization": 0.5,
                       "max_rss_mib": 100.0, "client_bound": False, "reasons": []},
            "warnings": list(warnings), "stopped_early": None, "warmup_requests": 0,
            "shard": None if shard is None else {"index": shard[0], "count": shard[1], "global_load": global_load},
            "provenance": {"command": ["infermeter", "run"]},
        },
    }


GLOBAL = {"mode": "concurrency", "num_requests": 4, "request_rate": "inf", "max_concurrency": 2,
          "burstiness": 1.0, "arrival": "none", "warmup_requests": 0}


def test_merge_pools_samples_and_uses_the_common_window():
    # shard 0 started at epoch 100.0, shard 1 at 100.5: its times move by +0.5
    a = [_rec(0, 0.0, [0.1, 0.3], 0.3), _rec(2, 0.3, [0.7, 0.8], 0.8)]        # ttft .1 .4; itl .2 .1
    b = [_rec(1, 0.0, [0.2, 0.5], 0.5), _rec(3, 0.5, [0.6, 1.4], 1.5)]        # ttft .2 .1; itl .3 .8
    r0 = _result((0, 2), 100.0, 2, GLOBAL, warnings=["output length not fixed (no --ignore-eos): x"])
    r1 = _result((1, 2), 100.5, 2, GLOBAL, warnings=["output length not fixed (no --ignore-eos): x",
                                                     "1 of 2 requests failed (reset 1)"])
    out, records = merge_shards([(r0, a), (r1, b)], names=["s0", "s1"])
    assert [r.index for r in records] == [0, 1, 2, 3]
    assert records[1].sent == pytest.approx(0.5) and records[3].end == pytest.approx(2.0)
    # window: earliest send 0.0 (shard 0) to latest end 1.5 + 0.5 = 2.0
    assert out["duration"] == pytest.approx(2.0)
    assert out["request_throughput"] == pytest.approx(4 / 2.0)
    assert out["output_throughput"] == pytest.approx(8 / 2.0)
    ttfts = [100, 400, 200, 100]  # ms, pooled
    itls = [200, 100, 300, 800]
    assert out["mean_ttft_ms"] == pytest.approx(np.mean(ttfts))
    assert out["median_ttft_ms"] == pytest.approx(150.0)
    assert out["p75_ttft_ms"] == pytest.approx(np.percentile(ttfts, 75))
    assert out["p75_itl_ms"] == pytest.approx(np.percentile(itls, 75))
    assert out["p99_ttft_ms"] is None and out["p99_itl_ms"] is None  # 4 samples cannot support p99
    assert out["p50_itl_ms"] == pytest.approx(250.0)
    # pooled percentiles differ from averaged per-shard percentiles
    averaged = (np.percentile([200, 100], 50) + np.percentile([300, 800], 50)) / 2  # 350
    assert out["p50_itl_ms"] != pytest.approx(averaged)
    im = out["infermeter"]
    assert im["load"]["num_requests"] == 4 and im["load"]["max_concurrency"] == 2
    assert out["num_prompts"] == 4 and out["max_concurrency"] == 2
    assert im["start_epoch"] == 100.0
    assert [s["offset_s"] for s in im["merged_from"]] == [0.0, 0.5]
    assert im["work"]["token_count_crosscheck"]["checked"] == 4
    assert im["client"]["cpu_seconds"] == pytest.approx(2.0) and im["client"]["processes"] == 2
    # carried once; the stale per-shard failure count is recomputed (no failures when merged);
    # these shards are older results, whose warnings are plain strings
    texts = [message(w) for w in im["warnings"]]
    assert texts.count("output length not fixed (no --ignore-eos): x") == 1
    assert not any("requests failed" in w for w in texts)
    assert not any("apart" in w for w in texts)  # 0.5 s apart is within the tolerance
    assert all(set(w) == {"code", "message", "figures"} for w in im["warnings"])
    assert out["gpu"] == "none"  # metadata survives
    assert out["ttfts"] == pytest.approx([0.1, 0.2, 0.4, 0.1])


def test_merge_refuses_mixed_or_duplicate_shards_and_notes_missing_ones():
    a = [_rec(0, 0.0, [0.1], 0.1)]
    with pytest.raises(UserError, match="more than once"):
        merge_shards([(_result((0, 2), 1.0, 1, GLOBAL), a), (_result((0, 2), 1.0, 1, GLOBAL), [])])
    with pytest.raises(UserError, match="both"):
        merge_shards([(_result((0, 2), 1.0, 1, GLOBAL), a), (_result((1, 2), 1.0, 1, GLOBAL), list(a))])
    other = dict(GLOBAL, num_requests=8)
    with pytest.raises(UserError, match="different plans"):
        merge_shards([(_result((0, 2), 1.0, 1, GLOBAL), a), (_result((1, 2), 1.0, 1, other), [])])
    with pytest.raises(UserError, match="different splits"):
        merge_shards([(_result((0, 2), 1.0, 1, GLOBAL), a), (_result((1, 3), 1.0, 1, GLOBAL), [])])
    out, _ = merge_shards([(_result((0, 2), 1.0, 1, GLOBAL), a)])
    assert any(w["code"] == "merge-incomplete" and w["figures"]["missing"] == ["1/2"]
               for w in out["infermeter"]["warnings"])


def test_merge_counts_failures_from_pooled_records():
    a = [_rec(0, 0.0, [0.1, 0.2], 0.2), _rec(2, 0.0, [], 0.05, ok=False, error="reset")]
    b = [_rec(1, 0.0, [0.3, 0.4], 0.4), _rec(3, 0.0, [], 0.05, ok=False, error="http_5xx")]
    out, _ = merge_shards([(_result((0, 2), 5.0, 2, GLOBAL), a), (_result((1, 2), 5.0, 2, GLOBAL), b)])
    assert out["completed"] == 2 and out["failed"] == 2
    assert out["infermeter"]["errors_by_class"] == {"reset": 1, "http_5xx": 1}
    assert any(w["code"] == "requests-failed" and w["message"].startswith("2 of 4 requests failed")
               for w in out["infermeter"]["warnings"])


def test_merge_matches_warning_codes_not_text():
    # a shard's own failure warning (a notice) is recomputed from the pooled records, never repeated
    a = [_rec(0, 0.0, [0.1, 0.2], 0.2), _rec(2, 0.0, [], 0.05, ok=False, error="reset")]
    b = [_rec(1, 0.0, [0.3, 0.4], 0.4), _rec(3, 0.0, [0.5, 0.6], 0.6)]
    stale = {"code": "requests-failed", "message": "worded any way at all", "figures": {"failed": 1}}
    kept = {"code": "ignore-eos-unsupported", "message": "--ignore-eos: min_tokens", "figures": {}}
    out, _ = merge_shards([(_result((0, 2), 5.0, 2, GLOBAL, warnings=[stale, kept]), a),
                           (_result((1, 2), 5.0, 2, GLOBAL, warnings=[kept]), b)])
    ws = out["infermeter"]["warnings"]
    assert [w["code"] for w in ws].count("requests-failed") == 1 and stale not in ws
    assert ws.count(kept) == 1


def test_selfcheck_truth_from_hand_values():
    from infermeter.runner.selfcheck import truth_from

    # two requests; client times relative to start_epoch 1000.0
    a = _rec(0, 0.0, [0.060, 0.070, 0.080], 0.08)  # reported TTFT 60 ms
    b = _rec(1, 0.010, [0.080, 0.092], 0.092)       # reported TTFT 70 ms
    result = {"infermeter": {"start_epoch": 1000.0}}
    server = [  # the server wrote the first tokens 1 ms before the client stamped them
        {"client_request_id": "im-1", "arrival_epoch": 1000.0105, "first_write_epoch": 1000.079,
         "last_write_epoch": 1000.091, "tokens_sent": 2},
        {"client_request_id": "im-0", "arrival_epoch": 1000.0005, "first_write_epoch": 1000.059,
         "last_write_epoch": 1000.079, "tokens_sent": 3},
    ]
    t = truth_from(result, [a, b], server)
    assert t["joined_by"] == "request id"
    assert t["truth_mean_ttft_ms"] == pytest.approx(64.0)  # (59 + 69) / 2
    assert t["ttft_error"] == pytest.approx((65.0 - 64.0) / 64.0)
    assert t["truth_mean_itl_ms"] == pytest.approx((20 + 12) / 3)
    assert t["itl_error"] == pytest.approx(((20 + 12) / 3 - (20 + 12) / 3) / ((20 + 12) / 3), abs=1e-9)
    assert t["truth_p99_ttft_ms"] == pytest.approx(59 + 0.99 * 10)
    # without ids, pairs by order; a missing server record leaves the truth unknown
    t2 = truth_from(result, [a, b], [dict(s, client_request_id=None) for s in server])
    assert t2["joined_by"] == "order" and t2["truth_mean_ttft_ms"] == pytest.approx(64.0)
    assert truth_from(result, [a, b], server[:1])["truth_mean_ttft_ms"] is None


def test_merge_files_reads_records_next_to_results_and_skips_earlier_merges(tmp_path):
    import json

    from infermeter.storage.files import RecordWriter, read_records
    from infermeter.metrics.merge import merge_files

    for i, recs in enumerate([[_rec(0, 0.0, [0.1, 0.2], 0.2)], [_rec(1, 0.0, [0.3, 0.5], 0.5)]]):
        res = _result((i, 2), 50.0, 1, dict(GLOBAL, num_requests=2))
        res["infermeter"]["records_file"] = f"s{i}.records.jsonl"
        (tmp_path / f"s{i}.json").write_text(json.dumps(res))
        with RecordWriter(tmp_path / f"s{i}.records.jsonl") as w:
            for r in recs:
                w(r)
    (tmp_path / "notes.json").write_text("{}")  # not a result: ignored in a folder
    first, rpath = merge_files([tmp_path], tmp_path / "m1.json")
    assert first["completed"] == 2 and [r.index for r in read_records(rpath)] == [0, 1]
    again, _ = merge_files([tmp_path], tmp_path / "m2.json")  # m1.json is a merge, not a shard
    assert again["completed"] == 2
    assert json.loads((tmp_path / "m2.json").read_text())["infermeter"]["records_file"] == "m2.records.jsonl"
    with pytest.raises(UserError, match="not an infermeter result"):
        merge_files([tmp_path / "notes.json"], tmp_path / "m3.json")
    (tmp_path / "s1.records.jsonl").unlink()
    with pytest.raises(UserError, match="missing"):
        merge_files([tmp_path / "s0.json", tmp_path / "s1.json"], tmp_path / "m4.json")
