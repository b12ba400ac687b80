"""Shards, worker processes and the client self-check, end to end against the in-tree test server."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from infermeter.cli.main import main
from infermeter.runner.execute import execute_run
from infermeter.runner.spec import RunSpec
from infermeter.storage.files import read_records

pytestmark = pytest.mark.integration


def _argv(server, tokenizer_dir, out_dir, *extra):
    return ["run", "--backend", "vllm", "--base-url", server.base_url, "--model", "test-model",
            "--tokenizer", str(tokenizer_dir), "--dataset-name", "random", "--random-input-len", "16",
            "--random-output-len", "8", "--ignore-eos", "--disable-tqdm", "--save-result", "--result-dir", str(out_dir), *extra]


CLI = [sys.executable, "-c", "import sys; from infermeter.cli.main import main; sys.exit(main())"]


def _cli(args, timeout=180):
    return subprocess.run([*CLI, *args], capture_output=True, text=True,
                          timeout=timeout)


def test_two_shards_merged_equal_the_unsharded_run(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=20, itl_ms=2)
    load = ["--num-prompts", "40", "--request-rate", "40", "--arrival", "constant", "--seed", "3",
            "--percentile-metrics", "ttft,tpot,itl,e2el"]
    start = time.time() + 8.0  # both processes prepare (tokenizer, prompts) before this
    shards = [subprocess.Popen([*CLI, *_argv(server, tokenizer_dir, tmp_path / "shards", *load, "--shard", f"{i}/2",
                                       "--start-at", f"{start:.3f}", "--result-filename", f"s{i}.json")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=180) for p in shards]
    assert [p.returncode for p in shards] == [0, 0], [o[1][-2000:] for o in outs]
    s0 = json.loads((tmp_path / "shards" / "s0.json").read_text())
    assert s0["infermeter"]["shard"]["index"] == 0 and s0["completed"] == 20
    assert s0["infermeter"]["start_epoch"] == pytest.approx(start, abs=1e-3)

    merged = _cli(["merge", str(tmp_path / "shards"), "-o", str(tmp_path / "merged.json")])
    assert merged.returncode == 0, merged.stderr
    m = json.loads((tmp_path / "merged.json").read_text())
    whole = execute_run(RunSpec.from_flat(dict(backend="vllm", base_url=server.base_url, model="test-model",
                                tokenizer=str(tokenizer_dir), random_input_len=16, random_output_len=8,
                                ignore_eos=True, num_prompts=40, request_rate=40.0, arrival="constant", seed=3,
                                result_dir=str(tmp_path / "whole"), progress=False)))
    w = whole.result
    assert m["completed"] == w["completed"] == 40 and m["failed"] == 0
    assert m["total_output_tokens"] == w["total_output_tokens"] == 320
    assert m["input_lens"] == w["input_lens"]  # the same prompts, request by request
    assert m["infermeter"]["load"] == w["infermeter"]["load"]
    assert m["num_prompts"] == 40 and m["request_rate"] == 40.0
    # the union of the shards' schedules is the unsharded schedule
    mrecs = list(read_records(tmp_path / m["infermeter"]["records_file"]))
    wrecs = [r for r in read_records(whole.records_path) if not r.warmup]
    assert [r.index for r in mrecs] == list(range(40))
    assert np.allclose([r.scheduled for r in mrecs], [r.scheduled for r in sorted(wrecs, key=lambda r: r.index)],
                       atol=1e-6)
    # both sent on the one schedule: 39 gaps of 25 ms, then the last request's latency
    assert m["duration"] == pytest.approx(w["duration"], abs=0.05)
    assert m["request_throughput"] == pytest.approx(w["request_throughput"], rel=0.05)
    for key in ("mean_ttft_ms", "mean_itl_ms", "mean_e2el_ms"):
        assert m[key] == pytest.approx(w[key], rel=0.25), key
    assert m["mean_ttft_ms"] >= 19.0
    assert m["infermeter"]["client"]["processes"] == 2
    # the merged samples are judged as one run's
    assert m["infermeter"]["validity"]["label"] in ("VALID", "INVALID")
    assert m["infermeter"]["validity"]["confidence"]["ttft"]["n"] == 40


def test_workers_split_a_closed_loop_and_merge(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=10, itl_ms=1)
    code = main(_argv(server, tokenizer_dir, tmp_path, "--num-prompts", "30", "--max-concurrency", "5",
                      "--workers", "2", "--result-filename", "w.json"))
    assert code == 0
    r = json.loads((tmp_path / "w.json").read_text())
    assert r["completed"] == 30 and r["total_output_tokens"] == 240
    assert r["max_concurrency"] == 5 and r["infermeter"]["load"]["mode"] == "concurrency"
    assert r["infermeter"]["workers"] == 2
    shards = sorted(s["shard"] for s in r["infermeter"]["merged_from"])
    assert shards == ["0/2", "1/2"]
    recs = list(read_records(tmp_path / r["infermeter"]["records_file"]))
    assert sorted(x.index for x in recs) == list(range(30))
    # the server saw every request exactly once
    assert server.stats()["count"] == 30
    # one label for the merged run, and telemetry sampled once, by the parent, over the common window
    assert r["infermeter"]["validity"]["confidence"]["ttft"]["n"] == 30
    tel = r["infermeter"]["telemetry"]
    assert tel["enabled"] and [p["name"] for p in tel["phases"]][:2] == ["ready", "load"]
    assert tel["window"]["start_epoch"] == pytest.approx(r["infermeter"]["start_epoch"])
    assert tel["output_tokens"] == 240
    shard_results = [json.loads(p.read_text()) for p in (tmp_path / r["infermeter"]["shards_dir"]).glob("shard*.json")]
    assert len(shard_results) == 2 and all(not s["infermeter"]["telemetry"]["enabled"] for s in shard_results)


def test_start_at_in_the_past_is_a_usage_error(test_server, tokenizer_dir, tmp_path, capsys):
    server = test_server()
    code = main(_argv(server, tokenizer_dir, tmp_path, "--num-prompts", "2", "--shard", "0/2",
                      "--start-at", str(time.time() - 30)))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "in the past" in err and len(err.splitlines()) == 1
    code = main(_argv(server, tokenizer_dir, tmp_path, "--num-prompts", "2", "--shard", "2/2"))
    assert code == 2 and "--shard" in capsys.readouterr().err


def test_an_overloaded_client_is_flagged_client_bound(test_server, tokenizer_dir, tmp_path, monkeypatch):
    server = test_server(ttft_ms=20, itl_ms=2)
    monkeypatch.setenv("INFERMETER_TEST_BURN", "3:4")  # the loop is busy 3 ms of every 4
    r = execute_run(RunSpec.from_flat(dict(backend="vllm", base_url=server.base_url, model="test-model",
                            tokenizer=str(tokenizer_dir), random_input_len=16, random_output_len=32,
                            ignore_eos=True, num_prompts=24, max_concurrency=8, result_dir=str(tmp_path),
                            progress=False))).result
    client = r["infermeter"]["client"]
    assert client["client_bound"] is True
    assert client["loop_lag_mean_ms"] > 0.5
    assert any(w["code"] == "client-bound" and w["message"].startswith("CLIENT-BOUND") and "lag mean" in w["message"]
               for w in r["infermeter"]["warnings"])
    bound = client["client_error_bound_pct"]  # the possible error is stated, and over the tolerance
    assert max(bound["ttft"], bound["itl"]) > client["client_error_tolerance_pct"] == 5.0
    assert "client-bound" in [x["code"] for x in r["infermeter"]["validity"]["reasons"]]
