"""The regression gate: significance statistics, verdicts, --fail-if, exit codes, baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from infermeter.cli.main import main
from infermeter.errors import UserError
from infermeter.metrics.significance import (MIN_RESAMPLES, average_ranks, bootstrap_compare, mann_whitney,
                                             resamples_for, welch_compare)
from infermeter.reports.compare import compare_groups
from infermeter.reports.compare_sides import Group, load_runs
from infermeter.reports.gate import EXIT_NO_VERDICT, EXIT_REGRESSION, exit_code, parse_fail_if


# ---------------------------------------------------------------------- statistics
def test_a_shifted_sample_is_detected_and_an_identical_one_is_not():
    rng = np.random.default_rng(3)
    a = rng.gamma(4.0, 25.0, 800)  # ~100 ms, skewed like latencies
    b = rng.gamma(4.0, 25.0, 800) * 1.25
    d = bootstrap_compare(a, b, ["mean", "median", "p99"], seed=1)
    assert d["mean"].significant and d["mean"].low > 0 and d["mean"].rel == pytest.approx(b.mean() / a.mean() - 1)
    assert d["median"].significant and d["median"].rel_low > 0
    same = bootstrap_compare(a, a.copy(), ["mean", "median", "p99"], seed=1)
    for s in ("mean", "median", "p99"):
        assert not same[s].significant and same[s].low <= 0 <= same[s].high
    assert mann_whitney(a, b).p_value < 1e-4 and mann_whitney(a, b).prob_b_lower < 0.5
    assert mann_whitney(a, a.copy()).p_value == pytest.approx(1.0)


def test_bootstrap_interval_covers_the_true_difference_at_the_stated_rate():
    """200 simulated comparisons with a known difference of means (and of medians):
    a 90 % interval should cover it about 90 % of the time."""
    rng = np.random.default_rng(20261203)
    trials, n, shift = 200, 150, 5.0
    covered = {"mean": 0, "median": 0}
    for t in range(trials):
        a = rng.exponential(50.0, n)
        b = rng.exponential(50.0, n) + shift  # true mean and median differences are both `shift`
        d = bootstrap_compare(a, b, ["mean", "median"], confidence=0.90, n_boot=400, seed=t)
        for s in covered:
            covered[s] += d[s].low <= shift <= d[s].high
    # binomial sd at 200 trials is 2.1 points: 0.84-0.96 is about +-3 sd
    assert 0.84 <= covered["mean"] / trials <= 0.96, covered
    assert 0.84 <= covered["median"] / trials <= 0.97, covered


def test_values_of_one_request_are_resampled_together():
    """Gaps of one request that move together are one piece of evidence, not 50."""
    rng = np.random.default_rng(5)
    per_req = rng.normal(20.0, 3.0, 200)
    values = np.repeat(per_req, 50)  # 50 identical gaps per request
    owner = np.repeat(np.arange(200), 50)
    naive = bootstrap_compare(values, values + 0.3, ["mean"], seed=2)["mean"]
    clustered = bootstrap_compare(values, values + 0.3, ["mean"], a_owner=owner, b_owner=owner, seed=2)["mean"]
    assert naive.significant and not clustered.significant
    assert (clustered.high - clustered.low) > 5 * (naive.high - naive.low)  # ~sqrt(50) = 7x wider
    assert "by request" in clustered.method and "by value" in naive.method


def test_blocks_of_consecutive_requests_keep_drift_from_raising_false_alarms():
    """Two runs of the same server whose latency drifts with the machine's load (every block of
    50 consecutive requests shares an offset): resampled by request, the test would call one pair
    in three different; resampled by block, about one in twenty."""
    rng = np.random.default_rng(8)
    blocks = np.repeat(np.arange(20), 50)
    alarms = {"request": 0, "block": 0, "rank": 0, "rank-blocks": 0}
    trials = 80
    for t in range(trials):
        a = rng.normal(100, 20, 1000) + np.repeat(rng.normal(0, 5, 20), 50)
        b = rng.normal(100, 20, 1000) + np.repeat(rng.normal(0, 5, 20), 50)
        alarms["request"] += bootstrap_compare(a, b, ["mean"], n_boot=200, seed=t)["mean"].significant
        alarms["block"] += bootstrap_compare(a, b, ["mean"], a_owner=blocks, b_owner=blocks, n_boot=200,
                                             seed=t)["mean"].significant
        alarms["rank"] += mann_whitney(a, b).p_value < 0.05
        alarms["rank-blocks"] += mann_whitney(a, b, blocks, blocks).p_value < 0.05
    assert alarms["request"] / trials > 0.2 and alarms["rank"] / trials > 0.2, alarms
    assert alarms["block"] / trials <= 0.12 and alarms["rank-blocks"] / trials <= 0.12, alarms


def test_the_work_is_bounded():
    assert resamples_for(10 ** 7, 10) == MIN_RESAMPLES
    assert resamples_for(500, 500) == 1000
    d = bootstrap_compare(np.arange(5.0), np.arange(5.0), ["p99"], n_boot=10 ** 6, budget=10 ** 4)
    assert "2000 resamples" in d["p99"].method
    one = bootstrap_compare([1.0], [2.0], ["mean"])["mean"]
    assert one.low is None and not one.significant and one.diff == 1.0
    empty = bootstrap_compare([], [2.0, 3.0], ["median"])["median"]
    assert empty.a is None and empty.diff is None  # never a 0 for a missing sample


def test_mann_whitney_matches_the_textbook():
    # no overlap: U of A is 0; z from the tie-free variance n1*n2*(n+1)/12 with continuity correction
    r = mann_whitney([1, 2, 3, 4], [5, 6, 7, 8])
    assert r.u == 0 and r.prob_b_lower == 0.0
    assert r.z == pytest.approx(-(8 - 0.5) / np.sqrt(16 * 9 / 12))
    ranks, ties = average_ranks(np.array([3.0, 1.0, 3.0, 2.0]))
    assert list(ranks) == [3.5, 1.0, 3.5, 2.0] and sorted(ties.tolist()) == [1, 1, 2]
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    a, b = np.round(rng.exponential(10, 300)), np.round(rng.exponential(11, 250))  # many ties
    ours = mann_whitney(a, b)
    ref = scipy_stats.mannwhitneyu(a, b, method="asymptotic")
    assert ours.u == pytest.approx(ref.statistic) and ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_welch_interval_over_repeats():
    d = welch_compare([100.0, 102.0, 101.0], [95.0, 96.0, 94.0])
    assert d.diff == pytest.approx(-6.0) and d.significant and d.high < 0
    # se = sqrt(1/3 + 1/3), df = 4: t(0.975, 4) = 2.776
    assert d.high - d.diff == pytest.approx(2.776 * np.sqrt(2 / 3), rel=2e-3)
    assert not welch_compare([100.0], [90.0, 91.0]).significant


# ---------------------------------------------------------------------- --fail-if and exit codes
def test_fail_if_parser():
    t = parse_fail_if("p99_ttft_ms>+5%")
    assert (t.key, t.op, t.value, t.relative) == ("p99_ttft_ms", ">", 0.05, True)
    t = parse_fail_if(" output_throughput <= -3.5% ")
    assert (t.op, t.value, t.relative) == ("<=", -0.035, True)
    t = parse_fail_if("mean_itl_ms>0.5")
    assert (t.value, t.relative) == (0.5, False) and t.crossed(0.6) and not t.crossed(0.5)
    assert parse_fail_if("p99.9_e2el_ms>+10%").key == "p99.9_e2el_ms"
    for bad, words in [("p99_ttft_ms", "is not an expression"), ("p99_ttft_ms>>5%", "is not an expression"),
                       ("p99_ttft_ms>five%", "is not an expression"), ("p99_ttft>+5%", "unknown metric key"),
                       ("goodput>+5%", "unknown metric key"), ("ttft_distribution>+5%", "rank test"),
                       ("p100_ttft_ms>+1%", "outside 0-100")]:
        with pytest.raises(UserError) as err:
            parse_fail_if(bad)
        assert words in str(err.value) and "\n" not in str(err.value), bad


def _result(ttft_ms, itl_ms=None, *, label="VALID", reasons=(), exact=True, out_tok=8, tput=1000.0, name="r"):
    n = len(ttft_ms)
    itl_ms = itl_ms if itl_ms is not None else [[10.0] * (out_tok - 1)] * n
    return {"completed": n, "failed": 0, "num_prompts": n, "duration": 10.0, "total_output_tokens": out_tok * n,
            "request_throughput": n / 10, "output_throughput": tput, "total_token_throughput": 2 * tput,
            "mean_ttft_ms": float(np.mean(ttft_ms)), "backend": "vllm", "model_id": "m",
            "ttfts": [t / 1e3 for t in ttft_ms], "itls": [[g / 1e3 for g in gs] for gs in itl_ms], "errors": [""] * n,
            "infermeter": {"work": {"exact": exact, "produced_output_tokens": out_tok * n,
                                    "requested_output_tokens": 8 * n},
                           "validity": {"label": label, "reasons": list(reasons)},
                           "load": {"mode": "concurrency", "value": 8}, "target": {"server_version": name}}}


def _write(path: Path, result: dict) -> str:
    path.write_text(json.dumps(result))
    return str(path)


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(11)
    base = lambda: rng.normal(100.0, 20.0, 600)  # noqa: E731
    return {"a": _write(tmp_path / "a.json", _result(base(), name="0.9")),
            "same": _write(tmp_path / "same.json", _result(base(), name="0.9")),
            "slow": _write(tmp_path / "slow.json", _result(base() * 1.10, name="1.0")),
            "invalid": _write(tmp_path / "inv.json", _result(base() * 1.10, label="INVALID", reasons=[
                {"code": "client-bound", "message": "client-bound: event-loop lag 3 ms", "figures": {"lag_ms": 3}}])),
            "short": _write(tmp_path / "short.json", _result(base() * 1.10, exact=False, out_tok=6))}


def test_verdicts_and_no_verdict_reasons(runs):
    g = lambda k: Group((k,), load_runs(runs[k]))  # noqa: E731
    comp = compare_groups(g("a"), g("slow"))
    v = {x.key: x for x in comp.verdicts}
    assert v["mean_ttft_ms"].verdict == "worse" and v["mean_ttft_ms"].text.startswith("worse (95% CI +")
    assert "bootstrap" in v["mean_ttft_ms"].method and v["mean_ttft_ms"].confidence == 0.95
    assert v["ttft_distribution"].verdict == "worse" and "Mann-Whitney" in v["ttft_distribution"].method
    assert v["output_throughput"].verdict == "no verdict" and "2+ repeats" in v["output_throughput"].reason
    assert v["mean_e2el_ms"].verdict == "no verdict"  # vLLM arrays hold no per-request E2EL
    assert any("no records file" in n for n in comp.notes)
    same = {x.key: x.verdict for x in compare_groups(g("a"), g("same")).verdicts}
    assert same["mean_ttft_ms"] == "no significant difference" and same["median_ttft_ms"] == "no significant difference"
    inv = compare_groups(g("a"), g("invalid"))
    assert {x.verdict for x in inv.verdicts} == {"no verdict"}
    assert inv.reasons == ["B is INVALID (inv): client-bound: event-loop lag 3 ms"]
    short = compare_groups(g("a"), g("short"))
    assert {x.verdict for x in short.verdicts} == {"no verdict"} and any("unequal work" in r for r in short.reasons)


def test_throughput_verdict_over_repeats(tmp_path):
    rng = np.random.default_rng(2)
    a = [load_runs(_write(tmp_path / f"a{i}.json", _result(rng.normal(100, 5, 50), tput=t)))[0]
         for i, t in enumerate((1000.0, 1010.0, 995.0))]
    b = [load_runs(_write(tmp_path / f"b{i}.json", _result(rng.normal(100, 5, 50), tput=t)))[0]
         for i, t in enumerate((900.0, 905.0, 897.0))]
    comp = compare_groups(Group(("x",), a), Group(("x",), b), ["output_throughput", "mean_ttft_ms"])
    v = comp.verdict("output_throughput")
    assert v.verdict == "worse" and "Welch" in v.method and v.rel == pytest.approx(900.667 / 1001.667 - 1, rel=1e-3)
    assert any("Welch over the 3 vs 3 runs" in n for n in comp.notes)
    m = comp.verdict("mean_ttft_ms")
    assert "Welch" in m.method and m.n_a == 3 and m.verdict == "no significant difference"


def test_exit_codes_of_the_gate(runs, capsys):
    gate = ["--fail-if", "mean_ttft_ms>+5%", "--fail-if", "output_throughput<-3%"]
    assert main(["compare", runs["a"], runs["slow"], *gate]) == EXIT_REGRESSION == 7
    out = capsys.readouterr().out
    assert "gate: FAILED (exit 7)" in out and "mean_ttft_ms>+5%: FAIL" not in out  # the table says it per column
    assert main(["compare", runs["a"], runs["same"], *gate]) == 0
    assert "gate: passed (exit 0)" in capsys.readouterr().out
    # crossed but not significant: passes
    assert main(["compare", runs["a"], runs["same"], "--fail-if", "mean_ttft_ms>-50%"]) == 0
    # a gated metric without a verdict passes, unless asked otherwise
    assert main(["compare", runs["a"], runs["invalid"], *gate]) == 0
    assert main(["compare", runs["a"], runs["invalid"], *gate, "--fail-on-no-verdict"]) == EXIT_NO_VERDICT == 8
    assert exit_code([]) == 0
    capsys.readouterr()
    assert main(["compare", runs["a"], runs["slow"], "--fail-if", "p99_ttft_ms>>5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--fail-if 'p99_ttft_ms>>5' is not an expression" in err
    assert main(["compare", runs["a"]]) == 2 and "takes two runs" in capsys.readouterr().err
    assert main(["compare", runs["a"], "/nonexistent.json"]) == 2


def test_json_and_markdown_outputs(runs, tmp_path, capsys):
    md = tmp_path / "summary.md"
    rc = main(["compare", runs["a"], runs["slow"], "--json", "--markdown", str(md), "--fail-if", "mean_ttft_ms>+5%"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 7 and data["exit_code"] == 7 and data["gate_status"] == "FAILED"
    assert data["gate"][0]["status"] == "fail" and data["gate"][0]["threshold"] == "mean_ttft_ms>+5%"
    verdicts = {v["key"]: v for v in data["comparisons"][0]["verdicts"]}
    assert verdicts["mean_ttft_ms"]["verdict"] == "worse" and verdicts["mean_ttft_ms"]["significant"] is True
    assert data["provenance"]["a"]["engine version"] == "0.9" and data["provenance"]["b"]["engine version"] == "1.0"
    text = md.read_text()
    assert "**Gate: FAILED**" in text and "| mean TTFT (ms) |" in text and "| engine version | 0.9 | 1.0 | ≠ |" in text


def test_baseline_store_and_compare_against_it(runs, tmp_path, capsys, monkeypatch):
    store = tmp_path / "bl"
    assert main(["baseline", "save", "main", runs["a"], "--store", str(store)]) == 0
    assert (store / "main" / "baseline.json").is_file() and (store / "main" / "cells" / "a" / "result.json").is_file()
    assert main(["baseline", "save", "main", runs["slow"], "--store", str(store)]) == 2
    assert "pass --force" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["compare", "--baseline", "main", runs["slow"], "--store", str(store),
                 "--fail-if", "mean_ttft_ms>+5%"]) == 7
    assert "A: baseline main" in capsys.readouterr().out
    monkeypatch.setenv("INFERMETER_BASELINES", str(store))
    assert main(["compare", "--baseline", "main", runs["same"], "--fail-if", "mean_ttft_ms>+5%"]) == 0
    assert main(["baseline", "save", "main", runs["slow"], "--force"]) == 0
    assert main(["compare", "--baseline", "main", runs["slow"], "--fail-if", "mean_ttft_ms>+5%"]) == 0
    capsys.readouterr()
    assert main(["compare", "--baseline", "nope", runs["slow"]]) == 2
    err = capsys.readouterr().err
    assert "no baseline 'nope'" in err and "saved: main" in err and len(err.strip().splitlines()) == 1
    assert main(["baseline", "save", "../x", runs["a"]]) == 2
    assert main(["baseline", "ls"]) == 0 and "main  1 cell(s)" in capsys.readouterr().out
    assert main(["baseline", "rm", "main"]) == 0 and not (store / "main").exists()
