"""The workloads of docs/workloads.md end to end against the in-tree test server:
multi-turn sessions, trace replay, step load, time-bounded runs and their end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from infermeter.runner.execute import execute_run
from infermeter.runner.spec import RunSpec
from infermeter.storage.files import read_records

pytestmark = pytest.mark.integration

CONVS = Path(__file__).resolve().parents[2] / "fixtures" / "conversations.jsonl"


def spec(server, tokenizer_dir, tmp_path, **kw) -> RunSpec:
    base = dict(backend="vllm", base_url=server.base_url, model="test-model", tokenizer=str(tokenizer_dir),
                dataset_name="random", random_input_len=32, random_output_len=8, ignore_eos=True,
                num_prompts=12, result_dir=str(tmp_path), progress=False, telemetry=False)
    base.update(kw)
    return RunSpec.from_flat(base)


@pytest.mark.parametrize("load", [{"max_concurrency": 2}, {"request_rate": 20.0}], ids=["concurrency", "rate"])
def test_multi_turn_sends_turns_in_order_with_the_history(test_server, tokenizer_dir, tmp_path, load):
    server = test_server(ttft_ms=10, itl_ms=1)
    report = execute_run(spec(server, tokenizer_dir, tmp_path, dataset_name="multi-turn", dataset_path=str(CONVS),
                              endpoint="/v1/chat/completions", num_prompts=3, multi_turn_output_len=5,
                              multi_turn_think_time=0.05, **load))
    r = report.result
    assert r["completed"] == 8 and r["failed"] == 0  # 3 + 2 + 3 turns
    recs = sorted(read_records(report.records_path), key=lambda x: x.index)
    assert sorted({x.session_id for x in recs}) == [0, 1, 2]
    for sid in range(3):
        turns = [x for x in recs if x.session_id == sid]
        assert [x.turn for x in turns] == list(range(len(turns)))
        for a, b in zip(turns, turns[1:]):  # the next turn only after the previous ended, plus think time
            assert b.sent >= a.end + 0.045
            assert b.input_len > a.input_len  # the history grows
    per_turn = r["infermeter"]["workload_metrics"]["per_turn"]
    assert [row["turn"] for row in per_turn] == [0, 1, 2] and [row["requests"] for row in per_turn] == [3, 3, 2]
    assert per_turn[2]["mean_input_len"] > per_turn[0]["mean_input_len"]


@pytest.mark.parametrize("source", ["infermeter:mooncake-small", "infermeter:burstgpt-small",
                                    "infermeter:azure-small"])
def test_trace_replays_on_its_own_schedule(test_server, tokenizer_dir, tmp_path, source):
    from infermeter.workloads.traces import read_trace

    server = test_server(ttft_ms=5, itl_ms=1)
    report = execute_run(spec(server, tokenizer_dir, tmp_path, dataset_name="trace", dataset_path=source,
                              num_prompts=10, trace_speed=4.0))
    r = report.result
    assert r["completed"] == 10
    rows, _, _ = read_trace(source)
    recs = sorted(read_records(report.records_path), key=lambda x: x.index)
    want = [(row.t - rows[0].t) / 4.0 for row in rows[:10]]
    assert [x.scheduled for x in recs] == pytest.approx(want, abs=1e-6)
    assert all(x.sent - x.scheduled < 0.05 for x in recs)
    assert [x.input_len for x in recs] == [row.input_len for row in rows[:10]]
    assert [x.requested_output_len for x in recs] == [row.output_len for row in rows[:10]]
    assert r["infermeter"]["load"]["arrival"] == "trace"


def test_step_load_records_the_offered_rate(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=5, itl_ms=1)
    report = execute_run(spec(server, tokenizer_dir, tmp_path, rate_steps=[10.0, 20.0], step_hold_s=1.0))
    r = report.result
    assert r["completed"] == 30
    recs = sorted(read_records(report.records_path), key=lambda x: x.index)
    assert [x.offered_rate for x in recs] == [10.0] * 10 + [20.0] * 20
    assert all(x.scheduled < 1.0 for x in recs[:10]) and all(1.0 <= x.scheduled < 2.0 for x in recs[10:])
    rows = r["infermeter"]["workload_metrics"]["offered_vs_achieved"]
    assert [row["offered_rate"] for row in rows] == [10.0, 20.0] and [row["requests"] for row in rows] == [10, 20]


def test_duration_run_cuts_off_requests_after_the_grace(test_server, tokenizer_dir, tmp_path):
    # 60 tokens at 10 ms: a request takes ~0.6 s; the second pair, sent at ~0.6 s, is in flight at
    # the 1.0 s end and cannot finish within the 0.1 s grace
    server = test_server(ttft_ms=5, itl_ms=10)
    report = execute_run(spec(server, tokenizer_dir, tmp_path, max_concurrency=2, num_prompts=4,
                              random_output_len=60, duration=1.0, duration_grace=0.1))
    r = report.result
    recs = list(read_records(report.records_path))
    cut = [x for x in recs if x.error == "cut_off"]
    assert len(recs) == 4 and len(cut) == 2 and r["completed"] == 2
    assert r["infermeter"]["workload_metrics"]["duration"]["cut_off"] == 2
    assert all(x.end is None and x.sent < 1.0 for x in cut)
    assert r["failed"] == 0  # cut off is not a failure
    codes = {n["code"] for n in r["infermeter"]["validity"]["reasons"]}
    assert not codes & {"error-rate", "no-success", "stopped-early"}, codes
    assert r["duration"] < 1.0  # the window ends at the last real end


def test_duration_run_keeps_sending_until_the_end(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=5, itl_ms=1)
    report = execute_run(spec(server, tokenizer_dir, tmp_path, max_concurrency=2, num_prompts=3, duration=1.0,
                              duration_grace=5.0))
    r = report.result
    recs = list(read_records(report.records_path))
    assert len(recs) > 6  # the 3 prompts are a pool, cycled for the whole second
    assert r["completed"] == len(recs) and r["infermeter"]["workload_metrics"]["duration"]["cut_off"] == 0
    assert max(x.sent for x in recs) < 1.0 and max(x.end for x in recs) < 1.5


def test_rate_duration_run_sends_the_schedule_cut_at_the_duration(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=5, itl_ms=1)
    report = execute_run(spec(server, tokenizer_dir, tmp_path, request_rate=30.0, duration=1.0))
    recs = list(read_records(report.records_path))
    assert 10 < len(recs) < 60 and max(x.scheduled for x in recs) < 1.0
    assert all(x.offered_rate == 30.0 for x in recs)
    assert not math.isnan(report.result["request_throughput"])
