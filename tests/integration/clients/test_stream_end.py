"""The end of a request is the end of its stream, not of the HTTP body: a server holding
the body open after [DONE], or sending the usage chunk late, does not lengthen E2EL or TPOT."""

from __future__ import annotations

import pytest

from infermeter.runner.execute import execute_run
from infermeter.runner.spec import RunSpec
from infermeter.storage.files import read_records

pytestmark = pytest.mark.integration

TTFT_MS, ITL_MS, OUT = 20.0, 20.0, 8


def _run(test_server, tokenizer_dir, tmp_path, fault, backend="vllm"):
    server = test_server(ttft_ms=TTFT_MS, itl_ms=ITL_MS, faults=[fault])
    spec = RunSpec.from_flat(dict(
        backend=backend, base_url=server.base_url, model="test-model", tokenizer=str(tokenizer_dir),
        dataset_name="random", random_input_len=16, random_output_len=OUT, ignore_eos=True,
        num_prompts=6, max_concurrency=3, result_dir=str(tmp_path), progress=False))
    report = execute_run(spec)
    assert server.stats()["faults"] == {fault["mode"]: 6}  # the fault did fire on every request
    return report.result, list(read_records(report.records_path))


@pytest.mark.parametrize("fault", [{"mode": "hold_open", "seconds": 0.3}, {"mode": "late_usage", "seconds": 0.3}],
                         ids=["hold-open-300ms", "late-usage-300ms"])
def test_a_late_body_end_or_usage_does_not_lengthen_tpot_or_e2el(test_server, tokenizer_dir, tmp_path, fault):
    result, recs = _run(test_server, tokenizer_dir, tmp_path, fault)
    assert result["completed"] == 6 and result["failed"] == 0
    tpot = result["median_tpot_ms"]
    assert abs(tpot - ITL_MS) / ITL_MS < 0.05, tpot  # was 35.9 ms against a true 20.0 ms
    true_e2el = TTFT_MS + (OUT - 1) * ITL_MS
    assert result["median_e2el_ms"] < true_e2el * 1.15, result["median_e2el_ms"]
    for r in recs:
        assert r.end == r.token_times[-1]  # the last content token
        assert r.body_end - r.end >= 0.25  # the transport figure keeps the wait
        assert r.done_time is not None and r.usage_time is not None
        if fault["mode"] == "late_usage":
            assert r.usage_time - r.end >= 0.25 and r.done_time >= r.usage_time
            assert any("usage chunk came" in a for a in r.anomalies)
        else:
            assert r.usage_time - r.end < 0.05
            assert any("HTTP body ended" in a for a in r.anomalies)


def test_tgi_held_open_after_its_final_event(test_server, tokenizer_dir, tmp_path):
    result, recs = _run(test_server, tokenizer_dir, tmp_path, {"mode": "hold_open", "seconds": 0.3}, backend="tgi")
    assert abs(result["median_tpot_ms"] - ITL_MS) / ITL_MS < 0.05
    assert all(r.end == r.done_time == r.token_times[-1] and r.body_end - r.end >= 0.25 for r in recs)


def test_warmup_records_are_on_the_measured_windows_origin(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=20, itl_ms=20)
    spec = RunSpec.from_flat(dict(
        backend="vllm", base_url=server.base_url, model="test-model", tokenizer=str(tokenizer_dir),
        dataset_name="random", random_input_len=16, random_output_len=OUT, ignore_eos=True,
        num_prompts=4, max_concurrency=2, warmup_requests=2, result_dir=str(tmp_path), progress=False))
    report = execute_run(spec)
    recs = list(read_records(report.records_path))
    warm = [r for r in recs if r.warmup]
    measured = [r for r in recs if not r.warmup]
    assert len(warm) == 2 and len(measured) == 4
    first_send = min(r.sent for r in measured)
    for r in warm:  # they ran before the window: every time negative, in the order they happened
        assert -5.0 < r.scheduled <= r.queued <= r.sent < r.first_token < r.end <= r.body_end < 0, r
        assert r.end - r.sent > 0.1  # TTFT 20 ms + 7 gaps of 20 ms, on the same clock as the send
        assert r.sent - r.scheduled < 0.1
    assert max(r.body_end for r in warm) <= first_send
