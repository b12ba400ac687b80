"""VALID/INVALID rules on synthetic results, SLO parsing, steady state, and the bisection."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from infermeter.errors import UserError
from infermeter.metrics.validity import ValidityOptions, assess
from infermeter.runner.capacity import PRESETS, parse_slos, search_capacity, steady_state
from infermeter.core.records import RequestRecord
from infermeter.runner.spec import RunSpec

CLEAN = {
    "completed": 200, "failed": 0, "duration": 10.0,
    "infermeter": {
        "work": {"requests_checked": 200, "exact": True, "shorter_than_asked": 0, "longer_than_asked": 0},
        "sample_counts": {"ttft": 200, "tpot": 200, "itl": 3000, "e2el": 200},
        "unsupported_percentiles": {"ttft": [], "tpot": [], "itl": [], "e2el": []},
        "percentile_metrics": ["ttft", "tpot", "itl", "e2el"], "percentiles": [50.0, 90.0],
        "client": {"client_bound": False, "reasons": []},
        "errors_by_class": {}, "stopped_early": None,
        "load": {"mode": "burst"}, "warmup_requests": 0,
    },
}


def variant(**changes):
    r = copy.deepcopy(CLEAN)
    for path, value in changes.items():
        d = r
        keys = path.split("__")
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return r


def test_clean_result_is_valid():
    v = assess(CLEAN)
    assert v["label"] == "VALID" and v["reasons"] == []


@pytest.mark.parametrize("changes,needle", [
    ({"infermeter__work__exact": False, "infermeter__work__shorter_than_asked": 200}, "unequal work"),
    ({"infermeter__unsupported_percentiles__ttft": ["99"]}, "too few samples: ttft p99"),
    ({"infermeter__client__client_bound": True, "infermeter__client__reasons": ["loop lag"]}, "client-bound: loop lag"),
    ({"failed": 3, "infermeter__errors_by_class": {"http_5xx": 3}}, "error rate 1.5% above 1%"),
    ({"completed": 0}, "no request completed"),
    ({"infermeter__stopped_early": "interrupted (Ctrl-C)"}, "stopped early"),
])
def test_each_rule_invalidates(changes, needle):
    v = assess(variant(**changes))
    assert v["label"] == "INVALID" and any(needle in r for r in v["reasons"]), v["reasons"]


def test_thresholds_are_configurable():
    two_failed = variant(failed=2)  # 1.0 %: not above the default 1 %
    assert assess(two_failed)["label"] == "VALID"
    assert assess(two_failed, options=ValidityOptions(max_error_rate=0.005))["label"] == "INVALID"
    short = assess(CLEAN, options=ValidityOptions(min_duration_s=30))
    assert short["label"] == "INVALID" and "shorter than its minimum of 30 s" in short["reasons"][0]


def rec(i: int, sent: float, ttft: float, e2el: float = 0.2, ok: bool = True) -> RequestRecord:
    return RequestRecord(index=i, warmup=False, scheduled=sent, input_len=8, requested_output_len=4, queued=sent,
                         sent=sent, first_token=sent + ttft, end=sent + e2el, ok=ok, output_tokens_server=4,
                         token_times=[sent + ttft + 0.01 * j for j in range(4)])


def test_no_warmup_invalidates_only_when_the_first_requests_are_outliers():
    rate_run = variant(infermeter__load={"mode": "rate"})
    cold = [rec(i, i * 0.1, 0.5 if i < 3 else 0.05) for i in range(60)]
    warm = [rec(i, i * 0.1, 0.05) for i in range(60)]
    v = assess(rate_run, cold)
    assert v["label"] == "INVALID" and "no warm-up" in v["reasons"][0]
    v = assess(rate_run, warm)
    assert v["label"] == "VALID" and any("no warm-up" in n for n in v["notes"])
    assert v["confidence"]["ttft"]["n"] == 60 and v["confidence"]["ttft"]["p50"]["supported"]
    assert assess(variant(infermeter__load={"mode": "rate"}, infermeter__warmup_requests=5), cold)["label"] == "VALID"


def test_slo_parsing_and_presets():
    slos = parse_slos("ttft_p99<=6000, tpot_p99<=175")
    assert [(s.metric, s.percentile, s.limit_ms) for s in slos] == [("ttft", 99, 6000), ("tpot", 99, 175)]
    assert [s.label for s in parse_slos("mlperf-llama3.1-405b")] == ["ttft_p99<=6000", "tpot_p99<=175"]
    assert [s.limit_ms for s in parse_slos("mlperf-llama3.1-405b-interactive")] == [4500, 80]
    assert set(PRESETS) == {"mlperf-llama3.1-405b", "mlperf-llama3.1-405b-interactive"}
    for bad in ("ttft<=5", "foo_p99<=1", "ttft_p99<=x", "ttft_p100<=5", ""):
        with pytest.raises(UserError):
            parse_slos(bad)


def test_steady_state_splits_warmup_and_cooldown_and_sees_a_growing_queue():
    # 10 req/s for 10 s, each taking 0.5 s: ~5 in flight; warm-up ~0.5 s, cool-down 0.5 s.
    steady = [rec(i, i * 0.1, 0.05, e2el=0.5) for i in range(100)]
    st = steady_state(steady)
    assert st["stable"] and st["steady_in_flight"] == pytest.approx(5, abs=1)
    assert st["warmup_s"] < 1.0 and st["cooldown_s"] == pytest.approx(0.5, abs=0.01)
    # the server falls behind: each request waits longer than the one before
    growing = [rec(i, i * 0.1, 0.05 + 0.05 * i, e2el=0.5 + 0.05 * i) for i in range(100)]
    st = steady_state(growing)
    assert not st["stable"] and st["cooldown_s"] > 4


def fake_runner(knee: float, tmp_path):
    """A stand-in for execute_run: TTFT 50 ms below the knee, 500 ms above."""
    from infermeter.storage.files import RecordWriter

    calls = []

    def run(spec: RunSpec):
        load = spec.request_rate
        calls.append(load)
        path = tmp_path / f"{load}.records.jsonl"
        w = RecordWriter(path)
        for i in range(100):
            w(rec(i, i / load, 0.05 if load <= knee else 0.5))
        w.close()
        result = variant(infermeter__load={"mode": "rate"}, infermeter__warmup_requests=3,
                         request_throughput=min(load, knee), completed=100)
        return SimpleNamespace(result=result, records_path=path, result_path=tmp_path / f"{load}.json")

    return run, calls


def test_bisection_brackets_the_knee(tmp_path):
    run, calls = fake_runner(17.3, tmp_path)
    base = RunSpec(base_url="http://x:1", num_prompts=100, request_rate=1.0, result_dir=str(tmp_path))
    out = search_capacity(base, parse_slos("ttft_p90<=100"), low=1, high=64, rel_tol=0.01, max_runs=20, run=run)
    assert out["status"] == "found" and out["capacity"] <= 17.3 < out["first_failing"]
    assert (out["first_failing"] - out["capacity"]) / out["capacity"] <= 0.01
    assert calls[:2] == [1.0, 64.0] and len(out["curve"]) == out["runs"] == len(calls)
    assert all(p["passed"] == (p["load"] <= 17.3) for p in out["curve"])
    (tmp_path / "low").mkdir()
    run, _ = fake_runner(0.5, tmp_path / "low")
    assert search_capacity(base, parse_slos("ttft_p90<=100"), low=1, high=64, run=run)["status"] == "below-low"
