"""`infermeter run` end to end against the in-tree test server (known TTFT/ITL/lengths)."""

from __future__ import annotations

import json
import math

import pytest

from infermeter.cli.main import main
from infermeter.runner.execute import execute_run
from infermeter.runner.spec import RunSpec
from infermeter.storage.files import read_records

pytestmark = pytest.mark.integration

VLLM_KEYS = ("date backend model_id tokenizer_id num_prompts request_rate burstiness max_concurrency duration "
             "completed total_input_tokens total_output_tokens request_throughput output_throughput "
             "total_token_throughput input_lens output_lens ttfts itls errors").split()


def spec(server, tokenizer_dir, tmp_path, **kw) -> RunSpec:
    base = dict(backend="vllm", base_url=server.base_url, model="test-model", tokenizer=str(tokenizer_dir),
                dataset_name="random", random_input_len=32, random_output_len=16, ignore_eos=True,
                num_prompts=24, result_dir=str(tmp_path), progress=False)
    base.update(kw)
    return RunSpec.from_flat(base)


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("load", [
    {"request_rate": math.inf},                       # burst
    {"max_concurrency": 4},                           # closed loop
    {"request_rate": 40.0},                           # Poisson
    {"request_rate": 40.0, "burstiness": 0.5, "max_concurrency": 3},  # gamma, capped
])
def test_every_load_mode_on_both_openai_endpoints(test_server, tokenizer_dir, tmp_path, endpoint, load):
    server = test_server(ttft_ms=20, itl_ms=2)
    report = execute_run(spec(server, tokenizer_dir, tmp_path, endpoint=endpoint, **load))
    r = report.result
    assert r["completed"] == 24 and r["failed"] == 0
    assert r["total_output_tokens"] == 24 * 16
    assert r["output_lens"] == [16] * 24
    assert r["infermeter"]["work"]["exact"] is True
    assert r["infermeter"]["work"]["count_source"] == {"server": 24}
    for key in VLLM_KEYS:
        assert key in r, key
    assert len(list(read_records(report.records_path))) == 24
    assert r["mean_ttft_ms"] >= 19.0  # never faster than the injected TTFT
    if "max_concurrency" in load and "request_rate" not in load:
        assert r["infermeter"]["load"]["mode"] == "concurrency"


def test_reported_latencies_match_injected_truth(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=60, itl_ms=10)
    r = execute_run(spec(server, tokenizer_dir, tmp_path, max_concurrency=4, num_prompts=32,
                         random_output_len=20)).result
    assert r["mean_ttft_ms"] == pytest.approx(60, rel=0.10)
    assert r["median_itl_ms"] == pytest.approx(10, rel=0.10)
    assert r["mean_tpot_ms"] == pytest.approx(10, rel=0.10)
    assert r["mean_e2el_ms"] == pytest.approx(60 + 19 * 10, rel=0.10)


def test_rate_mode_follows_the_absolute_schedule(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=5, itl_ms=1)
    report = execute_run(spec(server, tokenizer_dir, tmp_path, request_rate=100.0, arrival="constant",
                              num_prompts=100, random_output_len=4))
    recs = list(read_records(report.records_path))
    sched = sorted(r.scheduled for r in recs)
    # vLLM's schedule, 100 req/s constant: offsets .01, .02, ... 1.00 (the last at N / rate)
    assert sched[0] == pytest.approx(0.01, abs=1e-6) and sched[-1] == pytest.approx(1.0, abs=1e-6)
    assert report.result["infermeter"]["load"]["scheduled_offered_rate"] == pytest.approx(100.0, rel=1e-3)
    lags = sorted(r.sent - r.scheduled for r in recs)
    assert lags[len(lags) // 2] < 0.005  # median send lag under 5 ms on a busy 2-core box


def test_tgi_generate_stream(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=10, itl_ms=2)
    r = execute_run(spec(server, tokenizer_dir, tmp_path, backend="tgi", max_concurrency=4)).result
    assert r["completed"] == 24 and r["total_output_tokens"] == 24 * 16
    assert r["infermeter"]["target"]["protocol"] == "tgi"
    assert any(w["code"] == "ignore-eos-unsupported" and "TGI has no ignore_eos" in w["message"]
               for w in r["infermeter"]["warnings"])


def test_unequal_work_is_flagged_loudly(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=5, itl_ms=1, eos_after=5)  # stops early unless ignore_eos
    r = execute_run(spec(server, tokenizer_dir, tmp_path, ignore_eos=False, max_concurrency=4)).result
    work = r["infermeter"]["work"]
    assert work["exact"] is False and work["shorter_than_asked"] == 24
    assert r["infermeter"]["output_len_stats"] == {"min": 5, "mean": 5.0, "max": 5}
    assert any(w["code"] == "unequal-work" and w["message"].startswith("UNEQUAL WORK")
               for w in r["infermeter"]["warnings"])


def test_warmup_requests_are_excluded(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=5, itl_ms=1)
    report = execute_run(spec(server, tokenizer_dir, tmp_path, warmup_requests=5, max_concurrency=4))
    assert report.result["completed"] == 24 and report.result["infermeter"]["warmup_requests"] == 5
    recs = list(read_records(report.records_path))
    assert sum(r.warmup for r in recs) == 5 and sum(not r.warmup for r in recs) == 24


def test_server_errors_are_classified_and_nothing_completed_is_lost(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=5, itl_ms=1, faults=[{"mode": "http_500", "every": 4}])
    report = execute_run(spec(server, tokenizer_dir, tmp_path, max_concurrency=2))
    r = report.result
    assert r["failed"] == 6 and r["completed"] == 18
    assert r["infermeter"]["errors_by_class"] == {"http_5xx": 6}
    assert sum(1 for e in r["errors"] if e.startswith("http_5xx")) == 6
    assert len(list(read_records(report.records_path))) == 24


def test_cli_writes_result_file_and_exit_code(test_server, tokenizer_dir, tmp_path, capsys):
    server = test_server(ttft_ms=5, itl_ms=1)
    code = main(["run", "--backend", "vllm", "--base-url", server.base_url, "--endpoint", "/v1/completions",
                 "--model", "test-model", "--tokenizer", str(tokenizer_dir), "--dataset-name", "random",
                 "--random-input-len", "16", "--random-output-len", "8", "--ignore-eos", "--num-prompts", "10",
                 "--max-concurrency", "4", "--request-rate", "inf", "--save-result", "--result-dir",
                 str(tmp_path), "--result-filename", "r.json", "--metadata", "gpu=none", "--disable-tqdm"])
    assert code == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["completed"] == 10 and data["gpu"] == "none" and data["total_output_tokens"] == 80
    assert "Serving Benchmark Result" in capsys.readouterr().out


def test_unknown_model_is_refused_before_load(test_server, tokenizer_dir, tmp_path, capsys):
    server = test_server()
    code = main(["run", "--base-url", server.base_url, "--model", "nope", "--tokenizer", str(tokenizer_dir),
                 "--num-prompts", "2", "--save-result", "--result-dir", str(tmp_path), "--disable-tqdm"])
    err = capsys.readouterr().err.strip()
    assert code == 3 and "model 'nope' is not served" in err and "test-model" in err
    assert len(err.splitlines()) == 1
