"""Multi-node scale-out without a fleet: N local processes see the variables a multi-node dstack
task sets (master on 127.0.0.1) and run ``infermeter node`` against the in-tree test server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from infermeter.metrics.compute import compute
from infermeter.core.recordstore import run_duration
from infermeter.runner.execute import execute_run
from infermeter.runner.nodes import result_from_log
from infermeter.runner.spec import RunSpec
from infermeter.storage.files import read_records

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-c", "import sys; from infermeter.cli.main import main; sys.exit(main())"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes(server, tokenizer_dir, tmp_path, n, load):
    port = _port()
    procs = []
    for rank in range(n):
        env = dict(os.environ, DSTACK_MASTER_NODE_IP="127.0.0.1", DSTACK_NODE_RANK=str(rank),
                   DSTACK_NODES_NUM=str(n), INFERMETER_BARRIER_PORT=str(port))
        argv = ["node", "--backend", "vllm", "--base-url", server.base_url, "--model", "test-model",
                "--tokenizer", str(tokenizer_dir), "--dataset-name", "random", "--random-input-len", "16",
                "--random-output-len", "8", "--ignore-eos", "--disable-tqdm", "--save-result",
                "--result-dir", str(tmp_path / f"host{rank}"), *load]
        procs.append(subprocess.Popen([*CLI, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    return procs


def test_three_nodes_meet_run_from_one_instant_and_merge_exactly(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=20, itl_ms=2)
    load = ["--num-prompts", "45", "--request-rate", "30", "--arrival", "poisson", "--seed", "5",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99"]
    procs = _nodes(server, tokenizer_dir, tmp_path, 3, load)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-2000:] for o in outs]
    m = json.loads((tmp_path / "host0" / "merged.json").read_text())
    assert result_from_log(outs[0][0])["completed"] == m["completed"] == 45  # what a log reader gets
    nodes = m["infermeter"]["nodes"]
    assert [(x["rank"], x["status"]) for x in nodes] == [(0, "done"), (1, "done"), (2, "done")]
    for x in nodes:  # offsets were measured (same host: near zero) and each node recorded its own
        assert abs(x["clock_offset_s"]) < 0.05 and 0 < x["offset_rtt_s"] < 0.5
        assert x["barrier"]["clock_offset_s"] == x["clock_offset_s"]
        assert x["barrier"]["master_start_at"] == pytest.approx(m["infermeter"]["start_epoch"], abs=0.05)
    assert len(m["infermeter"]["client"]["per_shard"]) == 3  # each node's client self-check
    # every node started its window at one instant (the shift the merge applied is the offset only)
    assert max(abs(s["offset_s"]) for s in m["infermeter"]["merged_from"]) < 0.05
    # the merge is exact: its percentiles are those of the pooled records computed as one run
    recs = list(read_records(tmp_path / "host0" / m["infermeter"]["records_file"]))
    assert sorted(r.index for r in recs) == list(range(45))
    again = compute(recs, run_duration(recs), [50, 90, 99], None)
    for key in ("median_ttft_ms", "p99_ttft_ms", "p90_itl_ms", "median_e2el_ms", "mean_tpot_ms"):
        if again[key] is None:  # p99 of 45 samples: unsupported, null in both (pytest >= 9.2 rejects approx(None))
            assert m[key] is None, key
        else:
            assert m[key] == pytest.approx(again[key], rel=1e-9), key
    # and the same schedule run by one process gives the same requests at the same offsets
    whole = execute_run(RunSpec.from_flat(dict(
        backend="vllm", base_url=server.base_url, model="test-model", tokenizer=str(tokenizer_dir),
        random_input_len=16, random_output_len=8, ignore_eos=True, num_prompts=45, request_rate=30.0,
        arrival="poisson", seed=5, result_dir=str(tmp_path / "whole"), progress=False))).result
    wrecs = sorted((r for r in read_records(tmp_path / "whole" / whole["infermeter"]["records_file"])
                    if not r.warmup), key=lambda r: r.index)
    assert m["input_lens"] == whole["input_lens"]
    assert np.allclose([r.scheduled for r in sorted(recs, key=lambda r: r.index)], [r.scheduled for r in wrecs],
                       atol=1e-6)
    assert m["median_ttft_ms"] == pytest.approx(whole["median_ttft_ms"], abs=8.0)  # 20 ms injected, within 8 ms
    assert m["total_output_tokens"] == whole["total_output_tokens"] == 360


def test_a_node_killed_mid_run_is_named_and_its_share_missing(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=20, itl_ms=2)
    load = ["--num-prompts", "90", "--request-rate", "20", "--arrival", "constant", "--seed", "1"]
    procs = _nodes(server, tokenizer_dir, tmp_path, 3, load)
    records = tmp_path / "host2" / "node2" / "shard2of3.records.jsonl"
    deadline = time.monotonic() + 120
    while not (records.exists() and records.stat().st_size > 0):  # node 2 is sending
        assert time.monotonic() < deadline and procs[2].poll() is None, procs[2].communicate()[1][-2000:]
        time.sleep(0.05)
    procs[2].send_signal(signal.SIGKILL)
    outs = [p.communicate(timeout=300) for p in procs]
    assert procs[0].returncode == 5, outs[0][1][-2000:]  # incomplete
    assert procs[1].returncode == 0 and procs[2].returncode == -signal.SIGKILL
    m = json.loads((tmp_path / "host0" / "merged.json").read_text())
    assert m["infermeter"]["incomplete"] is True
    assert [x["status"] for x in m["infermeter"]["nodes"]] == ["done", "done", "missing"]
    codes = {w["code"]: w for w in m["infermeter"]["warnings"]}
    assert "node 2" in codes["node-missing"]["message"] and "2/3" in codes["node-missing"]["message"]
    assert codes["merge-incomplete"]["figures"]["missing"] == ["2/3"]
    assert m["completed"] == 60  # the two surviving shares, whole
    assert "MISSING: node 2" in outs[0][0]  # the summary says so
