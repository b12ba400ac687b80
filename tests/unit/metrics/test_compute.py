
import pytest

from infermeter.errors import UserError
from infermeter.metrics.compute import GoodputSLO, compute, parse_percentiles
from infermeter.metrics.stats import min_samples_for
from infermeter.core.records import RequestRecord


def rec(i, sent, tokens, end, out=None, asked=None, ok=True, error=None):
    r = RequestRecord(index=i, warmup=False, scheduled=sent, input_len=10, requested_output_len=asked,
                      queued=sent, sent=sent, first_token=tokens[0] if tokens else None, end=end,
                      token_times=list(tokens), ok=ok, error=error,
                      output_tokens_server=out if out is not None else len(tokens))
    return r


def test_metrics_match_hand_computed_values():
    # two requests, sent at 0.0 and 1.0
    a = rec(0, 0.0, [0.5, 0.6, 0.8], 0.8)       # ttft .5, itl .1,.2, e2el .8, tpot (.8-.5)/2 = .15
    b = rec(1, 1.0, [1.2, 1.5], 1.6, out=3)     # ttft .2, itl .3, e2el .6, tpot (.6-.2)/2 = .2
    m = compute([a, b], duration=1.6, percentiles=[50, 99])
    assert m["completed"] == 2 and m["failed"] == 0
    assert m["total_output_tokens"] == 6 and m["total_input_tokens"] == 20
    assert m["request_throughput"] == pytest.approx(2 / 1.6)
    assert m["output_throughput"] == pytest.approx(6 / 1.6)
    assert m["total_token_throughput"] == pytest.approx(26 / 1.6)
    assert m["mean_ttft_ms"] == pytest.approx(350.0)
    assert m["median_ttft_ms"] == pytest.approx(350.0)
    assert m["std_ttft_ms"] == pytest.approx(150.0)
    assert m["mean_itl_ms"] == pytest.approx(200.0)  # (.1 + .2 + .3) / 3
    assert m["p50_itl_ms"] == pytest.approx(200.0)
    assert m["p99_itl_ms"] is None  # 3 samples cannot support p99: no number (it would be the maximum)
    assert m["unsupported_percentiles"]["itl"] == ["99"]
    assert m["mean_tpot_ms"] == pytest.approx(175.0)
    assert m["mean_e2el_ms"] == pytest.approx(700.0)
    assert m["sample_counts"] == {"ttft": 2, "tpot": 2, "itl": 3, "e2el": 2}


def test_failures_are_counted_by_class_and_left_out_of_latencies():
    good = rec(0, 0.0, [0.1, 0.2], 0.2)
    bad = rec(1, 0.0, [5.0], 9.0, ok=False, error="reset")
    bad2 = rec(2, 0.0, [], 1.0, ok=False, error="http_5xx")
    m = compute([good, bad, bad2], duration=1.0)
    assert m["completed"] == 1 and m["failed"] == 2
    assert m["errors_by_class"] == {"reset": 1, "http_5xx": 1}
    assert m["mean_ttft_ms"] == pytest.approx(100.0)


def test_goodput_counts_requests_meeting_every_slo():
    fast = rec(0, 0.0, [0.1, 0.15], 0.15)   # ttft 100ms, tpot 50ms
    slow = rec(1, 0.0, [0.6, 0.65], 0.65)   # ttft 600ms
    slo = GoodputSLO.parse(["ttft:500", "tpot:60"])
    m = compute([fast, slow], duration=2.0, goodput=slo)
    assert m["request_goodput"] == pytest.approx(0.5)
    assert m["goodput_fraction"] == pytest.approx(0.5)


def test_unequal_work_is_detected_with_server_counts():
    a = rec(0, 0.0, [0.1] * 3, 0.2, out=256, asked=256)
    b = rec(1, 0.0, [0.1] * 3, 0.2, out=57, asked=256)
    m = compute([a, b], duration=1.0)
    w = m["work"]
    assert w["exact"] is False and w["shorter_than_asked"] == 1
    assert "1 of 2 requests" in w["warning"]
    assert m["output_len_stats"] == {"min": 57, "mean": pytest.approx(156.5), "max": 256}
    assert compute([a], duration=1.0)["work"]["exact"] is True


def test_percentiles_that_the_sample_cannot_support_are_labelled_and_null():
    recs = [rec(i, 0.0, [0.1, 0.2], 0.2) for i in range(2)]
    m = compute(recs, duration=1.0, percentiles=[50, 99])
    assert "99" in m["unsupported_percentiles"]["ttft"]
    assert "50" not in m["unsupported_percentiles"]["ttft"]
    assert m["p99_ttft_ms"] is None and m["p50_ttft_ms"] == pytest.approx(100.0)
    assert min_samples_for(99) == 100 and min_samples_for(50) == 2 and min_samples_for(99.9) == 1000


def test_empty_run_has_no_statistics_not_zeros():
    m = compute([], duration=0.0)
    assert m["completed"] == 0 and m["mean_ttft_ms"] is None and m["p99_ttft_ms"] is None
    assert m["request_throughput"] is None  # no window, no rate (and never NaN)
    assert m["output_len_stats"] == {"min": None, "mean": None, "max": None}


def test_a_run_where_every_request_failed_has_no_latency():
    # HTTP 500 on every request: nothing to time.  Before, TTFT read 0.0 ms (the fastest server).
    bad = [rec(i, 0.1 * i, [], 0.1 * i + 0.01, ok=False, error="http_5xx") for i in range(30)]
    m = compute(bad, duration=2.91, percentiles=[50, 99])
    for name in ("ttft", "tpot", "itl", "e2el"):
        assert m[f"mean_{name}_ms"] is None and m[f"median_{name}_ms"] is None and m[f"p50_{name}_ms"] is None
        assert m[f"std_{name}_ms"] is None and m["sample_counts"][name] == 0
    assert m["request_throughput"] == 0.0  # a measured zero: nothing completed in a 2.9 s window
    from infermeter.metrics.validity import assess, has_success

    result = {"completed": 0, "failed": 30, "infermeter": {"errors_by_class": m["errors_by_class"]}}
    assert not has_success(result)
    v = assess(result)
    assert v["label"] == "INVALID" and v["reasons"][0]["code"] == "no-success"


def test_without_streaming_tpot_and_itl_are_absent_and_goodput_does_not_judge_tpot():
    # a whole answer of 30 tokens in one event (--no-stream): its tokens after the first were never timed
    whole = [rec(i, 0.0, [0.5], 0.5, out=30) for i in range(30)]
    slo = GoodputSLO.parse(["tpot:10"])
    m = compute(whole, duration=0.5, percentiles=[50], goodput=slo)
    assert m["sample_counts"]["tpot"] == 0 and m["mean_tpot_ms"] is None and m["median_tpot_ms"] is None
    assert m["sample_counts"]["itl"] == 0 and m["mean_itl_ms"] is None
    assert m["untimed_requests"] == 30
    assert m["goodput_unjudged"] == {"tpot": 30} and m["goodput"]["unjudged"] == {"tpot": 30}
    from infermeter.metrics.findings import metric_warnings
    from infermeter.core.outcome import ClientStats

    client = ClientStats(0.0, 0.0, 0.0, 0, 0.0, 1.0, 0.0, 0.0)
    codes = {n.code for n in metric_warnings(m, client, rate_mode=False)}
    assert {"not-streamed", "goodput-unjudged"} <= codes
    # streamed requests are still judged: a slow one misses the TPOT SLO
    slow = rec(99, 0.0, [0.1, 0.3, 0.5], 0.5)  # tpot 200 ms
    m = compute(whole + [slow], duration=0.5, percentiles=[50], goodput=slo)
    assert m["sample_counts"]["tpot"] == 1 and m["goodput_fraction"] == pytest.approx(30 / 31)


@pytest.mark.parametrize("text", ["", "abc", "0,50", "50,100", "99,x"])
def test_bad_percentiles(text):
    with pytest.raises(UserError):
        parse_percentiles(text)


@pytest.mark.parametrize("items", [["ttft"], ["foo:5"], ["ttft:-1"], ["ttft:abc"]])
def test_bad_goodput(items):
    with pytest.raises(UserError):
        GoodputSLO.parse(items)


def test_sent_and_completion_rates_leave_out_the_final_drain():
    # three requests sent 0.5 s apart, each taking 5 s: 2 req/s sent and completed, although
    # completed / duration (vLLM's request_throughput) says 0.5 req/s for this short run
    recs = [rec(i, 0.5 * i, [0.5 * i + 1.0], 0.5 * i + 5.0) for i in range(3)]
    m = compute(recs, duration=6.0, percentiles=[50])
    assert m["request_throughput"] == pytest.approx(0.5)
    assert m["sent_rate"] == pytest.approx(2.0)
    assert m["completion_rate"] == pytest.approx(2.0)
    # a server that cannot keep up finishes them further apart than they were sent
    slow = [rec(i, 0.5 * i, [2.0 * i + 1.0], 2.0 * i + 5.0) for i in range(3)]
    m = compute(slow, duration=9.0, percentiles=[50])
    assert m["sent_rate"] == pytest.approx(2.0) and m["completion_rate"] == pytest.approx(0.5)
    # failures count as sent, not as completed; one request has no rate
    failed = rec(3, 1.5, [], 1.6, ok=False, error="http")
    m = compute(recs + [failed], duration=6.0, percentiles=[50])
    assert m["sent_rate"] == pytest.approx(2.0) and m["completion_rate"] == pytest.approx(2.0)
    assert compute(recs[:1], duration=5.0, percentiles=[50])["completion_rate"] is None


def test_too_few_samples_is_one_coded_warning_for_every_metric():
    # Before: one near-identical line per metric, every run under 100 requests.
    from infermeter.core.outcome import ClientStats
    from infermeter.metrics.findings import run_warnings

    recs = [rec(i, 0.0, [0.1, 0.15, 0.2], 0.2) for i in range(10)]
    m = compute(recs, duration=1.0)
    ws = run_warnings(m, ClientStats(0.0, 0.0, 0.0, 0, 0.0, 1.0, 0.0, 0.0), rate_mode=False, stopped_early=None,
                      ignore_eos=True, ignore_eos_method=None, length_checked=False)
    few = [w for w in ws if w.code == "too-few-samples"]
    assert len(few) == 1 and set(few[0].figures["metrics"]) == {"ttft", "tpot", "itl", "e2el"}
    assert "ttft p95, p99 (n = 10)" in few[0].message and "p99 needs 100" in few[0].message
    assert len({(w.code, w.message) for w in ws}) == len(ws)
