"""Importing vllm bench serve results: JSON files and console summaries, problems reported line by line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from infermeter.cli.main import main
from infermeter.experiments.importers import import_vllm, load_of, parse_vllm_file, parse_vllm_log
from infermeter.experiments.store import Store

FIX = Path(__file__).parents[2] / "fixtures" / "vllm"


def test_console_log_with_two_blocks_and_their_context():
    runs, problems = parse_vllm_file(FIX / "serve_console.log")
    assert problems == []
    assert [r.line for r in runs] == [12, 51]
    a, b = (r.result for r in runs)
    assert (a["completed"], a["failed"], a["num_prompts"], a["duration"]) == (64, 0, 64, 12.29)
    assert (a["request_rate"], a["max_concurrency"]) == ("inf", None)
    assert a["mean_ttft_ms"] == 120.5 and a["p90_ttft_ms"] == 279.68 and a["p99_e2el_ms"] == 3300.0
    assert a["total_token_throughput"] == 5999.02 and a["max_output_tokens_per_s"] == 933.18
    assert a["model_id"] == "meta-llama/Llama-3.1-8B-Instruct" and a["backend"] == "vllm"
    assert load_of(a) == ("burst", 64.0)
    assert (b["completed"], b["failed"], b["max_concurrency"], b["num_prompts"]) == (158, 2, 16, 160)
    assert load_of(b) == ("concurrency", 16.0)
    assert runs[0].context["random_input_len"] == 1024


def test_older_benchmark_serving_output_pasted_with_a_prefix():
    runs, problems = parse_vllm_file(FIX / "benchmark_serving_old.log")
    assert problems == []
    [run] = runs
    r = run.result
    assert r["completed"] == 200 and "failed" not in r and r["num_prompts"] is None  # not stated: not guessed
    assert r["total_token_throughput"] == 2506.36  # "Total Token throughput" (old capitalisation)
    assert "p99_e2el_ms" not in r and r["p99_itl_ms"] == 40.1
    assert load_of(r) == ("rate", 4.0)


def test_garbled_and_truncated_blocks_are_reported_line_by_line():
    runs, problems = parse_vllm_file(FIX / "garbled_console.log")
    f = str(FIX / "garbled_console.log")
    assert [str(p) for p in problems] == [
        f"{f}:8: label 'Cache hit rate (%):' is not one vLLM prints; line not imported",
        f"{f}:16: value 'n/a' of 'Mean TTFT (ms):' is not a number",
        f"{f}:31: section 'Accuracy' is not one vLLM prints; its lines are not imported",
        f"{f}:32: 'Accuracy Rate (%):                       81.00' not understood (in section 'Accuracy')",
        f"{f}:36: result block has no closing '=====' line (the input ends); not imported",
    ]
    [run] = runs  # the complete block is imported without the lines it did not understand
    assert run.result["completed"] == 40 and "mean_ttft_ms" not in run.result
    assert run.result["median_ttft_ms"] == 110.25
    assert run.notes == ["concurrency cap not stated (no 'Maximum request concurrency:' line)"]


def test_block_problems_found_without_fixture_files():
    text = "\n".join([
        "=" * 12 + " Serving Benchmark Result " + "=" * 12,
        "Successful requests:                     3",
        "Successful requests:                     4",
        "Benchmark duration (s):                  1.5",
        "Total input tokens:                      2.5",
        "just words here",
        "=" * 50,
        "=" * 12 + " Serving Benchmark Result " + "=" * 12,
        "Total input tokens:                      7",
        "=" * 50,
    ])
    runs, problems = parse_vllm_log(text, "x.log")
    assert [str(p) for p in problems] == [
        "x.log:3: 'Successful requests:' appears again (first on line 2); this one is ignored",
        "x.log:5: value '2.5' of 'Total input tokens:' is not a whole number",
        "x.log:6: 'just words here' not understood (no 'Label: value')",
        "x.log:8: result block lacks 'Successful requests:' and 'Benchmark duration (s):'; not imported",
    ]
    assert len(runs) == 1 and runs[0].result["completed"] == 3
    assert runs[0].result["request_rate"] is None and load_of(runs[0].result) == (None, None)


def test_json_results_single_and_appended():
    [run], problems = parse_vllm_file(FIX / "serve_result.json")
    assert problems == []
    assert run.kind == "vllm-json" and run.result["gpu"] == "H100" and run.result["itls"][0] == [0.02, 0.021]
    assert load_of(run.result) == ("concurrency", 2.0)
    runs, problems = parse_vllm_file(FIX / "appended_results.json")
    f = str(FIX / "appended_results.json")
    assert [r.line for r in runs] == [1, 3]
    assert [str(p) for p in problems] == [
        f"{f}:2: object lacks numeric 'duration'; not a vllm bench serve result; not imported",
        f"{f}:3: 'mean_tpot_ms' is 'fast', not a number; left out",
        f"{f}:3: key 'gpu_count' is not one vLLM writes (and not --metadata text); kept as is",
    ]
    assert "mean_tpot_ms" not in runs[1].result and load_of(runs[1].result) == ("rate", 32.0)


def test_not_a_result(tmp_path):
    (tmp_path / "list.json").write_text('[{"a": 1}]')
    (tmp_path / "bad.json").write_text('{"completed": 1,\n "duration": }')
    (tmp_path / "empty.log").write_text("nothing here\n")
    assert "a JSON list, not a vllm bench serve result" in str(parse_vllm_file(tmp_path / "list.json")[1][0])
    assert str(parse_vllm_file(tmp_path / "bad.json")[1][0]).startswith(f"{tmp_path / 'bad.json'}:2: not valid JSON")
    assert "no '===== Serving Benchmark Result =====' block" in str(parse_vllm_file(tmp_path / "empty.log")[1][0])


def test_import_into_a_store_readable_without_infermeter(tmp_path):
    into = tmp_path / "store"
    files = [FIX / "serve_console.log", FIX / "serve_result.json", FIX / "garbled_console.log"]
    report = import_vllm(files, into)
    assert report.imported == ["imported.serve_console.1", "imported.serve_console.2", "imported.serve_result.1",
                               "imported.garbled_console.1"]
    assert len(report.problems) == 5
    conn = sqlite3.connect(into / "index.sqlite")
    rows = conn.execute("SELECT cell_id, status, source, load_mode, load_value, completed, p99_ttft_ms, "
                        "result_path, input_len FROM cells ORDER BY seq").fetchall()
    kind = conn.execute("SELECT kind FROM experiment").fetchone()[0]
    conn.close()
    assert kind == "imported"
    assert rows[0] == ("imported.serve_console.1", "done", "vllm-log", "burst", 64.0, 64, 310.75,
                       "cells/imported.serve_console.1/result.json", 1024)
    assert rows[2][2:6] == ("vllm-json", "concurrency", 2.0, 4)
    result = json.loads((into / rows[2][7]).read_text())
    assert result["infermeter"]["imported"]["format"] == "vllm-json" and result["gpu"] == "H100"
    # importing the same input again adds nothing
    again = import_vllm([FIX / "serve_result.json"], into)
    assert again.imported == [] and again.duplicates[0][1] == "imported.serve_result.1"
    assert len(Store(into).rows()) == 4


def test_import_cli_reports_problems_and_exit_code(tmp_path, capsys):
    into = tmp_path / "s"
    code = main(["import", "vllm", str(FIX / "garbled_console.log"), str(FIX / "benchmark_serving_old.log"),
                 "--into", str(into), "--target", "old-vllm"])
    out, err = capsys.readouterr()
    assert code == 5
    assert "imported 2 run(s)" in out and "5 problem(s)" in out
    lines = err.strip().splitlines()
    assert len(lines) == 5 and all(line.startswith(str(FIX / "garbled_console.log") + ":") for line in lines)
    assert main(["ls", str(into)]) == 0
    out = capsys.readouterr().out
    assert "imported.garbled_console.1" in out and "rate 4" in out and "imported" in out
    assert main(["show", str(into), "imported.benchmark"]) == 0
    out = capsys.readouterr().out
    assert "target:" in out and "old-vllm" in out and "P99 ITL (ms):" in out and "40.10" in out
    assert main(["import", "vllm", str(tmp_path / "nope.json"), "--into", str(into)]) == 2
    empty = tmp_path / "empty.log"
    empty.write_text("no blocks\n")
    assert main(["import", "vllm", str(empty), "--into", str(tmp_path / "t")]) == 2
    assert "nothing was imported" in capsys.readouterr().err



WRITEUP = Path(__file__).parents[2] / "fixtures" / "dstack_writeup"


def _points(root):
    from infermeter.reports.data import load_experiments, points_of, single_prompt_workloads

    cells = load_experiments([root])[0].cells
    return cells, points_of(cells), single_prompt_workloads(cells)


def test_writeup_raw_logs_use_their_context_lines():
    runs, problems = parse_vllm_file(WRITEUP / "vllm_raw.txt")
    assert problems == [] and len(runs) == 23
    assert [r.result["num_prompts"] for r in runs[:12]] == [2 ** k for k in range(12)]
    assert {r.context["seq_length"] for r in runs[:12]} == {80}
    assert [r.result["num_prompts"] for r in runs[12:19]] == [2 ** k for k in range(7)]
    assert {r.context["seq_length"] for r in runs[12:19]} == {10000}
    assert all(r.context["server_name"] == "vllm" for r in runs)
    tgi, problems = parse_vllm_file(WRITEUP / "tgi_raw.txt")
    assert problems == [] and len(tgi) == 27
    assert [r.context["seq_length"] for r in tgi[19:]] == [128000, 64000, 32000, 16000, 8000, 4000, 2000, 1000]


def test_unknown_loads_are_never_pooled_as_repeats(tmp_path):
    report = import_vllm([WRITEUP / "vllm_raw.txt", WRITEUP / "tgi_raw.txt"], tmp_path / "s")
    assert len(report.imported) == 50
    cells, points, _ = _points(tmp_path / "s")
    assert {c.load_mode for c in cells} == {None}
    assert len(points) == 50  # each run its own point: bursts, lengths and single prompts are not averaged


def test_writeup_raw_logs_import_into_the_writeups_charts(tmp_path, capsys):
    code = main(["import", "vllm", str(WRITEUP / "vllm_raw.txt"), str(WRITEUP / "tgi_raw.txt"),
                 "--into", str(tmp_path / "s"), "--load", "burst"])
    assert code == 0
    cells, points, singles = _points(tmp_path / "s")
    assert {c.target for c in cells} == {"vllm", "tgi"} and {c.load_mode for c in cells} == {"burst"}
    by = {(p.target, p.workload, p.load_value): p for p in points}
    assert len(by) == 50 and all(len(p.cells) == 1 for p in points)
    for target in ("vllm", "tgi"):  # throughput and TTFT against batch size, for 80- and 10k-token prompts
        assert sorted(v for t, w, v in by if t == target and w == "in80") == [2.0 ** k for k in range(12)]
        assert sorted(v for t, w, v in by if t == target and w == "in10000") == [2.0 ** k for k in range(7)]
    assert by[("tgi", "in80", 2048.0)].cells[0].metrics["output_throughput"] == 852.79
    # single prompts by length: one workload per length, each a burst of 1
    assert singles == {f"in{n}" for n in (128000, 64000, 32000, 16000, 8000, 4000, 2000, 1000)}
    assert {p.input_len for p in points if p.workload in singles and p.target == "vllm"} == \
        {128000, 64000, 32000, 16000}


def test_bad_load_is_one_line(tmp_path, capsys):
    code = main(["import", "vllm", str(WRITEUP / "vllm_raw.txt"), "--into", str(tmp_path / "s"), "--load", "steady"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--load 'steady' is not a load" in err and len(err.splitlines()) == 1
