"""The server's token counts against what was received (metrics.tokens)."""

from __future__ import annotations

import pytest

from infermeter.core.records import RequestRecord
from infermeter.metrics.compute import compute
from infermeter.metrics.tokens import crosscheck_counts, disagrees, merge_checks, received_counts
from infermeter.metrics.validity import assess


class WordTokenizer:
    def encode(self, text: str) -> list[int]:
        return list(range(len(text.split())))


def rec(i: int, events: int, server: int | None, text: str | None = None, asked: int = 8) -> RequestRecord:
    times = [0.1 + 0.01 * k for k in range(events)]
    return RequestRecord(index=i, warmup=False, scheduled=0.0, input_len=4, requested_output_len=asked, queued=0.0,
                         sent=0.0, first_token=times[0], end=times[-1], token_times=times, ok=True,
                         output_tokens_server=server, output_events=events, generated_text=text)


def test_tolerance():
    assert not disagrees(8, 6) and disagrees(8, 5) and disagrees(8, 2)
    assert not disagrees(1000, 1040) and disagrees(1000, 1060)  # 5 % of large counts


def test_a_server_that_counts_tokens_it_never_streamed_is_caught():
    # --ignore-eos: 2 of 8 tokens streamed, usage says 8.  Before, counted as 8, work exact, no warning.
    short = [rec(i, 2, 8, "w1 w2") for i in range(10)]
    honest = [rec(10 + i, 8, 8, " ".join(["w"] * 8)) for i in range(10)]
    check = crosscheck_counts(short + honest, WordTokenizer())
    assert check["checked"] == 20 and check["mismatched"] == 10 and check["by_tokenizer"] == 10
    assert check["server_output_tokens"] == 160 and check["used_output_tokens"] == 100
    assert received_counts(check) == {i: 2 for i in range(10)}
    m = compute(short + honest, duration=1.0, percentiles=[50], received=received_counts(check))
    assert m["total_output_tokens"] == 100 and m["output_throughput"] == pytest.approx(100.0)
    assert m["work"]["exact"] is False and m["work"]["shorter_than_asked"] == 10
    assert m["work"]["count_source"] == {"received": 10, "server": 10}
    m["work"]["token_count_crosscheck"] = check
    result = {"completed": 20, "failed": 0, "infermeter": {"work": m["work"]}}
    v = assess(result)
    assert v["label"] == "INVALID"
    assert {r["code"] for r in v["reasons"]} == {"unequal-work", "server-count-mismatch"}
    mismatch = next(r for r in v["reasons"] if r["code"] == "server-count-mismatch")
    assert mismatch["figures"]["used_output_tokens"] == 100 and "received were used" in mismatch["message"]


def test_more_events_than_counted_is_an_undercount_and_needs_no_tokenizer():
    check = crosscheck_counts([rec(0, 20, 8)], None)
    assert check["mismatched"] == 1 and check["by_events"] == 1 and received_counts(check) == {0: 20}


def test_multi_token_chunks_within_tolerance_and_unverifiable_requests():
    # 4 chunks carrying 8 tokens of text: the tokenizer agrees with usage (one token off is re-encoding)
    ok = rec(0, 4, 8, " ".join(["w"] * 7))
    no_text = rec(1, 4, 8, None)  # text not kept: cannot be checked, said
    check = crosscheck_counts([ok, no_text], WordTokenizer())
    assert check["mismatched"] == 0 and check["by_tokenizer"] == 1 and check["unverified"] == 1
    assert check["count_used"] == "server"


def test_a_longer_reencoding_is_not_evidence_but_a_shorter_one_is():
    # The embedded engine's tiny model: 64 tokens in 62 chunks re-encode to 70 (byte-level pieces).
    # Before, every such request was a "server-count-mismatch" and the first run was INVALID.
    long_text = rec(0, 62, 64, " ".join(["w"] * 70), asked=64)
    check = crosscheck_counts([long_text], WordTokenizer())
    assert check["mismatched"] == 0 and check["longer_by_tokenizer"] == 1 and check["count_used"] == "server"
    # Fewer chunks and less text than claimed: a mismatch, counted as the larger of the two (each chunk >= 1).
    short = rec(1, 5, 64, " ".join(["w"] * 3), asked=64)
    check = crosscheck_counts([short], WordTokenizer())
    assert check["mismatched"] == 1 and received_counts(check) == {1: 5}


def test_shard_checks_merge():
    a = crosscheck_counts([rec(0, 2, 8, "a b")], WordTokenizer())
    b = crosscheck_counts([rec(1, 8, 8)], WordTokenizer())
    merged = merge_checks([a, b, {"checked": 0}])
    assert merged["checked"] == 2 and merged["mismatched"] == 1 and received_counts(merged) == {0: 2}
