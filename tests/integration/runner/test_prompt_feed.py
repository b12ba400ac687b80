"""Runs whose prompts stream from the builder process (load/feed.py, load/feed_child.py) send the
same prompts as a run that builds them all first, in every load shape that uses the feed."""

from __future__ import annotations

import pytest

from infermeter.load import feed as feed_mod
from infermeter.runner.execute import execute_run
from infermeter.runner.spec import RunSpec
from infermeter.storage.files import read_records
from infermeter.workloads import make_prompts
from infermeter.workloads.specs import RandomSpec
from infermeter.workloads.tokenizer import load_tokenizer

pytestmark = pytest.mark.integration


@pytest.fixture
def streamed(monkeypatch):
    """The head stops at its first chunk: the rest comes from the builder process."""
    monkeypatch.setattr(feed_mod, "HEAD_S", 0.0)
    monkeypatch.setattr(feed_mod, "READY_MAX_S", 0.0)
    monkeypatch.setenv("INFERMETER_FEED_HEAD_S", "0")  # the same in --workers children
    monkeypatch.setenv("INFERMETER_FEED_READY_MAX_S", "0")


def spec(server, tokenizer_dir, tmp_path, **kw) -> RunSpec:
    base = dict(backend="vllm", base_url=server.base_url, model="test-model", tokenizer=str(tokenizer_dir),
                dataset_name="random", random_input_len=24, random_output_len=4, random_range_ratio=0.5,
                ignore_eos=True, num_prompts=700, request_rate=2000.0, result_dir=str(tmp_path), progress=False,
                telemetry=False, seed=7)
    base.update(kw)
    return RunSpec.from_flat(base)


def input_lens(tokenizer_dir, n: int) -> list[int]:
    tok = load_tokenizer(str(tokenizer_dir))
    spec = RandomSpec(input_len=24, output_len=4, range_ratio=0.5)
    return [p.input_len for p in make_prompts(spec, tok, n, 7, False)]


def sent(report) -> list:
    return sorted((r for r in read_records(report.records_path) if not r.warmup), key=lambda r: r.index)


def test_a_streamed_run_sends_the_prompts_built_up_front(test_server, tokenizer_dir, tmp_path, streamed):
    # The parent's tokenizer has run its thread pool (the head) before the builder starts: a forked
    # builder blocked for good there; the builder process must not.
    server = test_server(ttft_ms=2, itl_ms=1)
    report = execute_run(spec(server, tokenizer_dir, tmp_path))
    r = report.result
    assert r["completed"] == 700
    client = r["infermeter"]["client"]
    assert 0 < client["prompts_built_ahead"] < 700
    startup = r["infermeter"]["startup"]
    assert all(startup[k] is not None for k in ("process_s", "tokenizer_s", "server_s", "probe_s", "prompts_s"))
    assert startup["prompts_s"] < 5 and startup["first_request_s"] > startup["process_s"] + startup["prompts_s"]
    assert [x.input_len for x in sent(report)] == input_lens(tokenizer_dir, 700)


def test_a_timed_closed_loop_cycles_its_prompts(test_server, tokenizer_dir, tmp_path, streamed):
    server = test_server(ttft_ms=2, itl_ms=1)
    report = execute_run(spec(server, tokenizer_dir, tmp_path, num_prompts=40, request_rate=float("inf"),
                              max_concurrency=4, duration=1.5))
    recs = sent(report)
    assert len(recs) > 40  # more requests than prompts: the pool of 40 went round
    pool = input_lens(tokenizer_dir, 40)
    assert [x.input_len for x in recs] == [pool[i % 40] for i in range(len(recs))]


def test_two_workers_send_the_same_prompts_between_them(test_server, tokenizer_dir, tmp_path, streamed):
    server = test_server(ttft_ms=2, itl_ms=1)
    report = execute_run(spec(server, tokenizer_dir, tmp_path, workers=2))
    assert report.result["completed"] == 700
    assert [x.input_len for x in sent(report)] == input_lens(tokenizer_dir, 700)


def test_a_prompt_past_the_context_stops_the_run_with_its_message(test_server, tokenizer_dir, tmp_path, streamed):
    # seed 3: the first 16 prompts (the head) have at most 35 tokens, prompt 60 has 36 (built by the
    # builder process): with 4 output tokens it needs 40 of a 39-token context
    lens = [p.input_len for p in make_prompts(RandomSpec(input_len=24, output_len=4, range_ratio=0.5),
                                              load_tokenizer(str(tokenizer_dir)), 700, 3, False)]
    assert max(lens[:16]) == 35 and lens.index(36) == 60
    server = test_server(ttft_ms=2, itl_ms=1, max_model_len=39)
    report = execute_run(spec(server, tokenizer_dir, tmp_path, seed=3))
    r = report.result
    assert "exceeds the server's context of 39 tokens" in (r["infermeter"]["stopped_early"] or "")
    assert 16 <= r["completed"] <= 60 and r["failed"] == 0


def test_ten_million_prompts_start_as_fast_as_ten_thousand(tokenizer_dir):
    # The default head (HEAD_S) and the builder process's start: the first send does not wait for
    # the request count.
    import time

    from infermeter.clients.protocols import make_protocol
    from infermeter.core.protocol import RequestOptions
    from infermeter.load.feed import ChildFeed, open_feed
    from infermeter.workloads import prompt_builder

    tok = load_tokenizer(str(tokenizer_dir))
    protocol = make_protocol("openai-completions", "/v1/completions")
    options = RequestOptions(model="test-model", ignore_eos=True)
    took = {}
    for n in (10_000, 10_000_000):
        builder = prompt_builder(RandomSpec(input_len=64, output_len=8), tok, n, 0, False)
        t = time.perf_counter()
        feed = open_feed(builder, range(n), protocol, options)
        took[n] = time.perf_counter() - t
        try:
            if n == 10_000_000:
                assert isinstance(feed, ChildFeed) and feed.head < 1_000_000
        finally:
            feed.close()
    limit = feed_mod.HEAD_S + feed_mod.READY_MAX_S + 0.5
    assert took[10_000_000] < limit, took
