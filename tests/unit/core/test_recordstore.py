"""RecordStore: compact rows in memory, spilled to disk past a bound, and the analysis of a
spilled store equal to that of the plain records (core/recordstore.py)."""

from __future__ import annotations

import random

import pytest

from infermeter.core import recordstore, samplecolumn
from infermeter.core.outcome import ClientStats, RunOutcome
from infermeter.core.records import RequestRecord
from infermeter.core.recordstore import RecordStore, run_duration
from infermeter.load.schedule import LoadMode, LoadPlan
from infermeter.metrics.compute import GoodputSLO, compute
from infermeter.metrics.tokens import crosscheck_counts
from infermeter.metrics.validity import assess
from infermeter.storage.result import build_result
from infermeter.telemetry.summary import window_inputs


def records(n: int, seed: int = 7) -> list[RequestRecord]:
    """Finished records in completion order (not index order), with failures, odd fields and texts."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        sent = 0.01 * i + rng.random() * 0.005
        ok = i % 11 != 3
        tokens = [sent + 0.02 + 0.004 * k + rng.random() * 1e-3 for k in range(rng.randint(0, 6))]
        out.append(RequestRecord(
            index=i, warmup=False, scheduled=0.01 * i, input_len=rng.randint(5, 50), requested_output_len=6,
            queued=0.01 * i + 1e-4, sent=sent, first_token=tokens[0] if tokens else None,
            end=(tokens[-1] if tokens else sent + 0.03) if ok else sent + 0.01, token_times=tokens,
            status=200 if ok else 500, ok=ok, error=None if ok else "http", error_detail=None if ok else f"boom {i}",
            output_tokens_server=len(tokens) if ok else None, output_events=len(tokens),
            finish_reason="length" if i % 2 else "stop", generated_text="ab " * len(tokens) if ok else None,
            first_choice=tokens[0] if tokens else None, last_choice=tokens[-1] if tokens else None,
            choice_events=len(tokens), anomalies=["late usage"] if i % 17 == 0 else []))
    rng.shuffle(out)
    return out


def same(a, b, path="") -> bool:
    """Equal, floats to 1e-12 relative (a spilled column's mean sums in another order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), (path, set(a) ^ set(b))
        return all(same(a[k], b[k], f"{path}.{k}") for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), path
        return all(same(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15), (path, a, b)
        return True
    assert a == b, (path, a, b)
    return True


def fill(rows, **kw) -> RecordStore:
    store = RecordStore(keep_text=50, **kw)
    for r in rows:
        store.append(r)
    return store


@pytest.fixture
def small_bounds(monkeypatch):
    monkeypatch.setattr(recordstore, "BLOCK_ROWS", 64)
    monkeypatch.setattr(samplecolumn, "MEMORY_VALUES", 100)


def test_a_spilled_store_gives_back_every_record(small_bounds):
    rows = records(1000)
    kept = fill(rows, spill=False)
    spilled = fill(rows, memory_rows=200)
    assert spilled.spilled and not kept.spilled
    assert len(spilled) == len(kept) == 1000
    assert len(spilled._mem) < 200  # the rest is on disk
    assert list(spilled) == list(kept)  # completion order, every field (texts of the first 50 rows only)
    assert spilled[-1] == kept[-1] and spilled[10] == kept[10]
    assert sum(r.generated_text is not None for r in spilled) == sum(1 for r in rows[:50] if r.generated_text is not None)
    assert run_duration(spilled) == run_duration(kept) == run_duration(rows)
    spilled.sort_by_index()  # no-op once spilled: it would hold one entry per row
    assert [r.index for r in spilled] == [r.index for r in rows]
    kept.sort_by_index()
    assert [r.index for r in kept] == list(range(1000))
    spilled.close()


def test_the_analysis_of_a_spilled_store_equals_that_of_the_records(small_bounds):
    rows = records(1500)
    plain = sorted(rows, key=lambda r: r.index)
    spilled = fill(rows, memory_rows=300)
    assert spilled.spilled
    slo = GoodputSLO.parse(["ttft:25", "e2el:60"])
    pct = (50.0, 90.0, 99.0)
    want = compute(plain, run_duration(plain), pct, slo)
    got = compute(spilled, run_duration(spilled), pct, slo)
    assert same(got, want)
    assert got["sample_counts"]["itl"] > 100  # the sample columns did spill
    assert crosscheck_counts(spilled) == crosscheck_counts(plain)
    assert window_inputs(spilled, 1000.0)[:2] == window_inputs(plain, 1000.0)[:2]
    plan = LoadPlan(mode=LoadMode.RATE, num_requests=1500, request_rate=100.0, max_concurrency=None,
                    burstiness=1.0, arrival="poisson")
    client = ClientStats(0.01, 0.02, 0.03, 10, 1.0, 15.0, 0.07, 100.0)

    def result(recs):
        outcome = RunOutcome(records=recs, warmup_records=[], start_epoch=1000.0, duration=run_duration(recs),
                             client=client, stopped_early=None)
        r = build_result(outcome=outcome, metrics=want, plan=plan, backend="vllm", model_id="m", tokenizer_id="t",
                         target={}, workload={}, percentiles=pct, percentile_metrics=["ttft", "itl", "e2el"],
                         warnings=[], records_file="x.records.jsonl", metadata={}, command=[])
        r["infermeter"].pop("provenance")
        r["infermeter"]["validity"] = assess(r, recs)
        return r

    a, b = result(plain), result(spilled)
    assert b["max_concurrent_requests"] == a["max_concurrent_requests"] > 1
    assert same(b, a)  # per-request arrays in request order, peaks, scheduled rate, vLLM definitions, validity
    spilled.close()


def test_per_request_arrays_are_bounded_and_say_so(monkeypatch):
    from infermeter.storage import result as result_mod

    monkeypatch.setattr(result_mod, "PER_REQUEST_LIMIT", 100)
    rows = records(300)
    plan = LoadPlan(mode=LoadMode.BURST, num_requests=300, request_rate=float("inf"), max_concurrency=None,
                    burstiness=1.0, arrival="none")
    outcome = RunOutcome(records=rows, warmup_records=[], start_epoch=0.0, duration=run_duration(rows),
                         client=ClientStats(0, 0, 0, 1, 0, 1, 0, 1), stopped_early=None)
    metrics = compute(rows, outcome.duration)
    r = build_result(outcome=outcome, metrics=metrics, plan=plan, backend="vllm", model_id="m", tokenizer_id="t",
                     target={}, workload={}, percentiles=(50.0,), percentile_metrics=["ttft"], warnings=[],
                     records_file="run.records.jsonl", metadata={}, command=[])
    assert len(r["ttfts"]) == len(r["input_lens"]) == 100
    by_index = {x.index: x for x in rows}
    assert r["input_lens"] == [by_index[i].input_len for i in range(100)]  # the first 100 requests
    assert r["infermeter"]["per_request_arrays"] == {"requests": 100, "of": 300, "complete": False}
    assert any("first 100 of 300" in str(w) and "run.records.jsonl" in str(w) for w in r["infermeter"]["warnings"])
