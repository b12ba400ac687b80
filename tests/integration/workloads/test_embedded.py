"""The workloads' exact token counts, checked against the embedded llama-server's own count."""

from __future__ import annotations

from pathlib import Path

import pytest

from infermeter.runner.execute import execute_run
from infermeter.runner.spec import RunSpec
from infermeter.storage.files import read_records

pytestmark = pytest.mark.integration

CONVS = Path(__file__).resolve().parents[2] / "fixtures" / "conversations.jsonl"


def spec(llama, tmp_path, **kw) -> RunSpec:
    server, model = llama
    base = dict(backend="llama.cpp", base_url=server.base_url, tokenizer=str(model.tokenizer_dir),
                ignore_eos=True, max_concurrency=4, result_dir=str(tmp_path), progress=False)
    base.update(kw)
    return RunSpec.from_flat(base)


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
def test_shared_prefix_counts_match_the_server(llama, tmp_path, endpoint):
    report = execute_run(spec(llama, tmp_path, endpoint=endpoint, dataset_name="shared-prefix", prefix_groups=2,
                              prefix_len=64, question_len=16, prefix_output_len=4, num_prompts=8))
    recs = list(read_records(report.records_path))
    assert len(recs) == 8 and all(r.ok for r in recs)
    assert all(r.prompt_tokens_server == r.input_len for r in recs), [(r.input_len, r.prompt_tokens_server)
                                                                      for r in recs]
    if endpoint == "/v1/completions":
        assert {r.input_len for r in recs} == {80}
    cache = report.result["infermeter"]["workload_metrics"]["prefix_cache"]
    assert cache.get("hit_rate") is not None or cache.get("why")
    if cache.get("hit_rate") is not None:  # llama.cpp's prompt cache reuses the groups' prefixes
        assert 0 < cache["hit_rate"] <= 1


def test_trace_counts_match_the_server(llama, tmp_path):
    report = execute_run(spec(llama, tmp_path, dataset_name="trace", dataset_path="infermeter:mooncake-small",
                              num_prompts=10, trace_speed=20.0, trace_output_len=4, max_concurrency=None))
    recs = list(read_records(report.records_path))
    assert len(recs) == 10 and all(r.ok for r in recs)
    assert all(r.prompt_tokens_server == r.input_len for r in recs), [(r.input_len, r.prompt_tokens_server)
                                                                      for r in recs]


def test_multi_turn_counts_match_the_server(llama, tmp_path):
    report = execute_run(spec(llama, tmp_path, endpoint="/v1/chat/completions", dataset_name="multi-turn",
                              dataset_path=str(CONVS), num_prompts=3, multi_turn_output_len=6, max_concurrency=2))
    recs = list(read_records(report.records_path))
    assert len(recs) == 8 and all(r.ok for r in recs)
    # later turns carry the server's own answers, counted at send time
    assert all(r.prompt_tokens_server == r.input_len for r in recs), [(r.turn, r.input_len, r.prompt_tokens_server)
                                                                      for r in recs]
