"""VALID/INVALID rules on synthetic results, SLO parsing, steady state, and the bisection."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from infermeter.errors import UserError
from infermeter.metrics.validity import ValidityOptions, assess, bears_on
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


@pytest.mark.parametrize("changes,code,needle", [
    ({"infermeter__work__exact": False, "infermeter__work__shorter_than_asked": 200}, "unequal-work", "unequal work"),
    ({"infermeter__client__client_bound": True, "infermeter__client__reasons": ["loop lag"]}, "client-bound",
     "client-bound: loop lag"),
    ({"failed": 3, "infermeter__errors_by_class": {"http_5xx": 3}}, "error-rate", "error rate 1.5% above 1%"),
    ({"completed": 0}, "no-success", "no request succeeded"),
    ({"infermeter__stopped_early": "interrupted (Ctrl-C)"}, "stopped-early", "stopped early"),
    ({"infermeter__work__token_count_crosscheck": {"checked": 200, "mismatched": 3, "examples": [
        {"index": 4, "server": 8, "received": 2}]}}, "server-count-mismatch", "server 8, received 2"),
])
def test_each_rule_invalidates_with_a_code(changes, code, needle):
    v = assess(variant(**changes))
    assert v["label"] == "INVALID", v
    assert any(r["code"] == code and needle in r["message"] for r in v["reasons"]), v["reasons"]
    assert all(set(r) == {"code", "message", "figures"} for r in v["reasons"])


def test_too_few_samples_is_a_note_not_a_defect():
    # Before, a run under 100 requests was INVALID only because p99 could not be estimated.
    v = assess(variant(infermeter__unsupported_percentiles__ttft=["99"], infermeter__sample_counts__ttft=40))
    assert v["label"] == "VALID" and v["reasons"] == []
    note = next(n for n in v["notes"] if n["code"] == "too-few-samples")
    assert note["message"].startswith("ttft: p99 n/a (n = 40)") and note["figures"]["needed"] == {"99": 100}


def test_client_error_is_graded_against_a_tolerance_users_can_set():
    # 0.6 ms lag on a 50 ms TTFT: a 1.2 % possible error.  Before, over 1 % made the run INVALID.
    graded = variant(infermeter__client={"loop_lag_mean_ms": 0.6, "loop_lag_spread_ms": 0.06,
                                         "cpu_utilization": 0.3, "client_bound": True, "reasons": ["1.2%"]},
                     mean_ttft_ms=50.0, mean_itl_ms=5.0)
    v = assess(graded)
    assert v["label"] == "VALID" and v["client_error_bound_pct"] == {"ttft": pytest.approx(1.2),
                                                                      "itl": pytest.approx(1.2)}
    strict = assess(graded, options=ValidityOptions(client_error_tolerance_pct=1.0))
    assert strict["label"] == "INVALID"
    reason = strict["reasons"][0]
    assert reason["code"] == "client-bound" and reason["figures"]["over"] == ["ttft", "itl"]
    # figures stored by the monitor win over recomputing them
    stored = variant(infermeter__client={"client_error_bound_pct": {"ttft": 0.5, "itl": 12.0}, "cpu_utilization": 0.95})
    v = assess(stored)
    assert v["label"] == "INVALID" and v["reasons"][0]["figures"]["over"] == ["itl"]
    assert any(n["code"] == "client-cpu-busy" for n in v["notes"])
    assert bears_on(v["reasons"][0]) == {"itl", "tpot"}


def test_bears_on_by_code():
    assert bears_on({"code": "unequal-work", "message": "", "figures": {}}) == {"ttft", "tpot", "itl", "e2el"}
    assert bears_on({"code": "client-bound", "message": "", "figures": {"over": ["ttft"]}}) == {"ttft", "e2el"}
    assert bears_on("an older result's reason in plain text") == {"ttft", "tpot", "itl", "e2el"}


def test_thresholds_are_configurable():
    two_failed = variant(failed=2)  # 1.0 %: not above the default 1 %
    assert assess(two_failed)["label"] == "VALID"
    assert assess(two_failed, options=ValidityOptions(max_error_rate=0.005))["label"] == "INVALID"
    short = assess(CLEAN, options=ValidityOptions(min_duration_s=30))
    assert short["label"] == "INVALID" and "shorter than its minimum of 30 s" in short["reasons"][0]["message"]


def rec(i: int, sent: float, ttft: float, e2el: float = 0.2, ok: bool = True) -> RequestRecord:
    return RequestRecord(index=i, warmup=False, scheduled=sent, input_len=8, requested_output_len=4, queued=sent,
                         sent=sent, first_token=sent + ttft, end=sent + e2el, ok=ok, output_tokens_server=4,
                         token_times=[sent + ttft + 0.01 * j for j in range(4)])


def test_no_warmup_invalidates_only_when_the_first_requests_are_outliers():
    rate_run = variant(infermeter__load={"mode": "rate"})
    cold = [rec(i, i * 0.1, 0.5 if i < 3 else 0.05) for i in range(60)]
    warm = [rec(i, i * 0.1, 0.05) for i in range(60)]
    v = assess(rate_run, cold)
    assert v["label"] == "INVALID" and v["reasons"][0]["code"] == "cold-start"
    v = assess(rate_run, warm)
    assert v["label"] == "VALID" and any(n["code"] == "no-warmup" for n in v["notes"])
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
        load = spec.load.request_rate
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
    base = RunSpec.from_flat(dict(base_url="http://x:1", num_prompts=100, request_rate=1.0, result_dir=str(tmp_path)))
    out = search_capacity(base, parse_slos("ttft_p90<=100"), low=1, high=64, rel_tol=0.01, max_runs=20, run=run)
    assert out["status"] == "found" and out["capacity"] <= 17.3 < out["first_failing"]
    assert (out["first_failing"] - out["capacity"]) / out["capacity"] <= 0.01
    assert calls[:2] == [1.0, 64.0] and len(out["curve"]) == out["runs"] == len(calls)
    assert all(p["passed"] == (p["load"] <= 17.3) for p in out["curve"])
    (tmp_path / "low").mkdir()
    run, _ = fake_runner(0.5, tmp_path / "low")
    assert search_capacity(base, parse_slos("ttft_p90<=100"), low=1, high=64, run=run)["status"] == "below-low"


def probe_runner(tmp_path, *, slow_every: int | None = None, client: dict | None = None, n: int = 100):
    """A stand-in for execute_run: TTFT 50 ms (every ``slow_every``-th request 500 ms) at any load."""
    from infermeter.storage.files import RecordWriter

    def run(spec: RunSpec):
        load = spec.load.request_rate
        path = tmp_path / f"{load}.records.jsonl"
        w = RecordWriter(path)
        for i in range(n):
            slow = slow_every is not None and i % slow_every == 0
            w(rec(i, i / load, 0.5 if slow else 0.05))
        w.close()
        result = variant(infermeter__load={"mode": "rate"}, infermeter__warmup_requests=3,
                         request_throughput=load, completed=n)
        if client is not None:
            result["infermeter"]["client"] = dict(client)
        return SimpleNamespace(result=result, records_path=path, result_path=tmp_path / f"{load}.json")

    return run


def test_capacity_refuses_probes_too_small_to_support_the_claim(tmp_path):
    # 400 requests, none over: P99 at 99 % needs 459.  Before, every probe FAILed and the answer
    # was "below the lowest load" although that load met its SLO.
    base = RunSpec.from_flat(dict(base_url="http://x:1", num_prompts=400, request_rate=1.0, result_dir=str(tmp_path)))
    with pytest.raises(UserError, match="--num-prompts 400 cannot support ttft_p99<=200 at 99% .* 459"):
        search_capacity(base, parse_slos("ttft_p99<=200"), low=5, high=80, run=probe_runner(tmp_path, n=400))


def test_capacity_never_says_below_low_when_the_low_load_met_its_slos(tmp_path):
    # 8 of 100 requests over 100 ms: the observed p90 meets "p90 <= 100", but at 99 % confidence
    # 100 samples allow only 3 over: unproven, not failed.
    base = RunSpec.from_flat(dict(base_url="http://x:1", num_prompts=100, request_rate=1.0, result_dir=str(tmp_path)))
    out = search_capacity(base, parse_slos("ttft_p90<=100"), low=5, high=80,
                          run=probe_runner(tmp_path, slow_every=13))
    assert out["status"] == "unproven-low" and out["capacity"] is None, out
    low = out["curve"][0]
    assert low["outcome"] == "unproven" and low["slos"][0]["status"] == "unproven"
    assert low["slos"][0]["over_limit"] == 8 and low["slos"][0]["value_ms"] <= 100


def test_a_probe_fails_only_for_reasons_that_bear_on_its_slos(tmp_path):
    # The client may have moved inter-token gaps by 12 % (past the tolerance: INVALID), and TTFT by 0.5 %.
    client = {"client_error_bound_pct": {"ttft": 0.5, "itl": 12.0}, "cpu_utilization": 0.2, "client_bound": True,
              "reasons": ["inter-token gaps may move by 12%"]}
    base = RunSpec.from_flat(dict(base_url="http://x:1", num_prompts=100, request_rate=1.0, result_dir=str(tmp_path)))
    out = search_capacity(base, parse_slos("ttft_p90<=100"), low=5, high=80, run=probe_runner(tmp_path, client=client))
    assert out["status"] == "at-least-high" and out["capacity"] == 80, out
    assert all(p["validity"] == "INVALID" and p["passed"] for p in out["curve"])
    assert [r["code"] for r in out["answer_reasons"]] == ["client-bound"]  # shown beside the answer
    (tmp_path / "itl").mkdir()
    out = search_capacity(base, parse_slos("itl_p90<=100"), low=5, high=80,
                          run=probe_runner(tmp_path / "itl", client=client))
    assert out["status"] == "below-low" and [r["code"] for r in out["low_blocking"]] == ["client-bound"]


def test_capacity_output_says_unproven_and_shows_other_reasons(tmp_path):
    from io import StringIO

    from rich.console import Console

    from infermeter.cli.capacity_cmd import print_capacity

    base = RunSpec.from_flat(dict(base_url="http://x:1", num_prompts=100, request_rate=1.0, result_dir=str(tmp_path)))
    out = search_capacity(base, parse_slos("ttft_p90<=100"), low=5, high=80,
                          run=probe_runner(tmp_path, slow_every=13))
    buf = StringIO()
    print_capacity(Console(file=buf, width=250), out)
    text = " ".join(buf.getvalue().split())
    assert "below" not in text and "not proven at the lowest load, 5 req/s" in text
    assert "ttft_p90<=100 needs 44 samples with none over, had 100 (8 over)" in text
    client = {"client_error_bound_pct": {"ttft": 0.5, "itl": 12.0}, "cpu_utilization": 0.2}
    (tmp_path / "b").mkdir()
    out = search_capacity(base, parse_slos("ttft_p90<=100"), low=5, high=80,
                          run=probe_runner(tmp_path / "b", client=client))
    buf = StringIO()
    print_capacity(Console(file=buf, width=250), out)
    text = " ".join(buf.getvalue().split())
    assert "Capacity: at least 80 req/s" in text and "beside the answer (client-bound, bears on no SLO here)" in text
