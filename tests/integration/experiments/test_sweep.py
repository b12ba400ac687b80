"""Experiment sweeps end to end: the in-tree test server, the embedded engine, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from infermeter.cli.main import main
from infermeter.experiments.cells import build_plan
from infermeter.experiments.recipes import recipe_data
from infermeter.experiments.specfile import spec_from_data
from infermeter.experiments.store import Store
from infermeter.experiments.sweep import run_sweep
from infermeter.errors import UserError
from infermeter.storage.files import read_records

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-c", "import sys; from infermeter.cli.main import main; sys.exit(main())"]


def spec_dict(tmp_path: Path, targets: dict, **over) -> dict:
    data = {
        "name": "t",
        "output_dir": str(tmp_path / "exp"),
        "targets": targets,
        "workloads": {"rnd": {"dataset": "random", "random_input_len": 24, "random_output_len": 6}},
        "load": {"burst": [1, 4], "concurrency": [2], "concurrency_num_prompts": 6},
        "options": {"ignore_eos": True},
        "stop": {"request_timeout": 30},
    }
    data.update(over)
    return data


def url_target(server, tokenizer_dir, **kw) -> dict:
    return {"url": server.base_url, "backend": "vllm", "model": "test-model", "tokenizer": str(tokenizer_dir), **kw}


def write_spec(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def index_rows(root: Path) -> list[dict]:
    conn = sqlite3.connect(root / "index.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM cells ORDER BY seq")]
    finally:
        conn.close()


def test_small_spec_end_to_end_against_the_test_server(test_server, tokenizer_dir, tmp_path, capsys):
    a = test_server(ttft_ms=20, itl_ms=2)
    b = test_server(ttft_ms=60, itl_ms=2)
    data = spec_dict(tmp_path, {"fast": url_target(a, tokenizer_dir), "slow": url_target(b, tokenizer_dir)})
    path = write_spec(tmp_path, data)
    assert main(["sweep", str(path), "--disable-tqdm"]) == 0
    root = tmp_path / "exp"
    rows = index_rows(root)
    assert [r["cell_id"] for r in rows] == [
        "fast.rnd.burst-1.r0", "fast.rnd.burst-4.r0", "fast.rnd.concurrency-2.r0",
        "slow.rnd.burst-1.r0", "slow.rnd.burst-4.r0", "slow.rnd.concurrency-2.r0"]
    assert all(r["status"] == "done" and r["failed"] == 0 for r in rows)
    assert [r["completed"] for r in rows] == [1, 4, 6, 1, 4, 6]
    by_id = {r["cell_id"]: r for r in rows}
    # each target's injected TTFT shows through, and the columns are the result JSON's numbers
    assert 19 <= by_id["fast.rnd.burst-4.r0"]["mean_ttft_ms"] < 55
    assert by_id["slow.rnd.burst-4.r0"]["mean_ttft_ms"] >= 59
    for r in rows:
        result = json.loads((root / r["result_path"]).read_text())
        assert result["completed"] == r["completed"] and result["mean_ttft_ms"] == r["mean_ttft_ms"]
        assert result["experiment_cell"] == r["cell_id"]  # self-describing results
        assert r["work_exact"] == 1 and result["total_output_tokens"] == 6 * r["completed"]
        assert len(list(read_records(root / r["records_path"]))) == r["completed"]
        assert r["load_mode"] == r["cell_id"].split(".")[2].split("-")[0]
    conc = json.loads((root / by_id["fast.rnd.concurrency-2.r0"]["result_path"]).read_text())
    assert conc["max_concurrency"] == 2 and conc["infermeter"]["load"]["mode"] == "concurrency"
    # same prompts for both targets in the same cell, different prompts in different cells
    seeds = {r["cell_id"]: json.loads((root / r["result_path"]).read_text())["infermeter"]["workload"]["seed"]
             for r in rows}
    assert seeds["fast.rnd.burst-4.r0"] == seeds["slow.rnd.burst-4.r0"] != seeds["fast.rnd.burst-1.r0"]
    assert (root / "spec.yaml").exists() and yaml.safe_load((root / "spec.yaml").read_text())["name"] == "t"
    capsys.readouterr()

    # ls / show read the store
    assert main(["ls", str(root)]) == 0
    out = capsys.readouterr().out
    assert "6 cells (6 done)" in out and "slow.rnd.concurrency-2.r0" in out and "concurrency 2" in out
    assert main(["show", str(root), "slow.rnd.burst-4"]) == 0
    out = capsys.readouterr().out
    assert "Successful requests:" in out and "slow.rnd.burst-4.r0" in out
    ttft_line = next(line for line in out.splitlines() if line.startswith("Mean TTFT (ms):"))
    assert float(ttft_line.split()[-1]) == pytest.approx(by_id["slow.rnd.burst-4.r0"]["mean_ttft_ms"], abs=0.01)

    # the index is derived: deleting it loses nothing
    (root / "index.sqlite").unlink()
    assert main(["ls", str(root), "--rebuild"]) == 0
    assert [r["completed"] for r in index_rows(root)] == [1, 4, 6, 1, 4, 6]

    # a finished experiment: a second run without --resume is refused, with --resume runs nothing
    assert main(["sweep", str(path), "--disable-tqdm"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["sweep", str(path), "--resume", "--disable-tqdm"]) == 0
    assert "0 cells run now, 6 done before" in capsys.readouterr().out
    # an edited spec that changes finished cells is refused
    data["workloads"]["rnd"]["random_output_len"] = 7
    write_spec(tmp_path, data)
    assert main(["sweep", str(path), "--resume", "--disable-tqdm"]) == 2
    err = capsys.readouterr().err
    assert "was run with other settings" in err and len(err.strip().splitlines()) == 1


def test_unreachable_target_fails_its_cell_and_the_rest_still_run(test_server, tokenizer_dir, tmp_path):
    good = test_server(ttft_ms=5, itl_ms=1)
    dead = {"url": "http://127.0.0.1:9", "model": "m", "tokenizer": str(tokenizer_dir)}
    spec = spec_from_data(spec_dict(tmp_path, {"dead": dead, "good": url_target(good, tokenizer_dir)}))
    outcome = run_sweep(spec)
    assert outcome.failed == ["dead.rnd.burst-1.r0"]
    assert outcome.skipped == ["dead.rnd.burst-4.r0", "dead.rnd.concurrency-2.r0"]
    assert len(outcome.done) == 3 and not outcome.complete
    rows = {r["cell_id"]: r for r in index_rows(tmp_path / "exp")}
    assert rows["dead.rnd.burst-1.r0"]["status"] == "failed" and rows["dead.rnd.burst-1.r0"]["error"]
    assert rows["dead.rnd.burst-4.r0"]["status"] == "pending"
    # once the server is back (here: pointed elsewhere), resume retries the failed cell and runs the rest
    data = spec_dict(tmp_path, {"dead": url_target(good, tokenizer_dir), "good": url_target(good, tokenizer_dir)})
    outcome = run_sweep(spec_from_data(data), resume=True)
    assert sorted(outcome.done) == ["dead.rnd.burst-1.r0", "dead.rnd.burst-4.r0", "dead.rnd.concurrency-2.r0"]
    assert (tmp_path / "exp/cells/dead.rnd.burst-1.r0/.partial-1/cell.json").exists()  # the failed attempt
    assert all(r["status"] == "done" for r in index_rows(tmp_path / "exp"))


def test_cell_time_limit_stops_a_cell_and_keeps_its_result(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=5, itl_ms=400)
    data = spec_dict(tmp_path, {"s": url_target(server, tokenizer_dir)},
                     load={"concurrency": [2], "concurrency_num_prompts": 50},
                     stop={"cell_timeout_s": 1.5, "request_timeout": 30})
    t0 = time.monotonic()
    outcome = run_sweep(spec_from_data(data))
    assert time.monotonic() - t0 < 15
    assert outcome.done == ["s.rnd.concurrency-2.r0"]
    row = index_rows(tmp_path / "exp")[0]
    assert row["status"] == "done" and row["stopped_early"].startswith("cell time limit")
    assert row["completed"] < 50


def test_quick_recipe_shrunk_against_the_embedded_engine(tmp_path):
    data = recipe_data("quick")
    data["output_dir"] = str(tmp_path / "quick")
    data["workloads"]["random64"].update(random_input_len=16, random_output_len=4)
    data["load"] = {"burst": [2], "concurrency": [2], "concurrency_num_prompts": 4}
    data["targets"]["embedded"]["embedded"]["parallel"] = 2
    spec = spec_from_data(data, "quick")
    t0 = time.monotonic()
    outcome = run_sweep(spec)
    wall = time.monotonic() - t0
    assert outcome.complete and outcome.done == ["embedded.random64.burst-2.r0", "embedded.random64.concurrency-2.r0"]
    root = tmp_path / "quick"
    rows = index_rows(root)
    assert [r["completed"] for r in rows] == [2, 4]
    assert all(r["backend"] == "llama.cpp" and r["model"] == "infermeter-tiny" for r in rows)
    assert all(r["total_output_tokens"] == 4 * r["completed"] for r in rows)
    # one engine for the target: both cells hit the same base URL, and each cell has its log slice
    urls = {json.loads((root / r["result_path"]).read_text())["infermeter"]["target"]["base_url"] for r in rows}
    assert len(urls) == 1
    assert all((root / "cells" / r["cell_id"] / "server.log").stat().st_size > 0 for r in rows)
    assert len(list((root / "servers").glob("embedded-*.log"))) == 1
    print(f"shrunk quick recipe: {wall:.1f}s")


def test_launch_target_starts_a_server_from_its_profile(tmp_path):
    """A `launch:` target: the sweep starts llama-server through the llama.cpp launch
    profile with explicit settings, runs the target's cells against it, and stops it."""
    from infermeter.embedded.build import ensure_llama_server
    from infermeter.embedded.models import ensure_model

    model = ensure_model("tiny")
    data = {
        "name": "launched",
        "output_dir": str(tmp_path / "launched"),
        "targets": {"llamacpp": {"launch": {
            "profile": "llama.cpp", "executable": str(ensure_llama_server()),
            "settings": {"model": str(model.gguf), "served_model_name": model.model_id,
                         "tokenizer": str(model.tokenizer_dir), "max_model_len": 512, "max_batch": 2}}}},
        "workloads": {"tiny": {"dataset": "random", "random_input_len": 16, "random_output_len": 4}},
        "load": {"burst": [3]},
        "options": {"ignore_eos": True},
    }
    outcome = run_sweep(spec_from_data(data, "launched"))
    assert outcome.complete and outcome.done == ["llamacpp.tiny.burst-3.r0"]
    root = tmp_path / "launched"
    (row,) = index_rows(root)
    assert row["backend"] == "llama.cpp" and row["completed"] == 3 and row["total_output_tokens"] == 12
    logs = list((root / "servers").glob("llamacpp-*.log"))
    assert len(logs) == 1 and logs[0].stat().st_size > 0
    # the server's start, with telemetry from before the launch until it answered
    startup = json.loads(logs[0].with_suffix(".json").read_text())
    assert startup["target"] == "llamacpp" and 0 < startup["startup_s"] < 120
    assert startup["ready_epoch"] - startup["started_epoch"] == pytest.approx(startup["startup_s"], abs=1e-3)
    assert startup["provenance"]["backend"] == "llama.cpp" and "--parallel" in startup["provenance"]["command"]
    phases = [p["name"] for p in startup["telemetry"]["phases"]]
    assert phases[:3] == ["idle", "loading", "ready"]


def test_launch_settings_are_validated_before_anything_runs(tmp_path):
    data = {"name": "bad", "output_dir": str(tmp_path / "bad"),
            "targets": {"v": {"launch": {"profile": "vllm", "settings": {"model": "m", "max_batchh": 4}}}},
            "workloads": {"w": {"dataset": "random"}}, "load": {"burst": [1]}}
    with pytest.raises(UserError) as err:
        spec_from_data(data, "bad")
    assert "max_batchh" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "bad").exists()


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _records(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


@pytest.mark.parametrize("how", ["sigkill", "sigint"])
def test_a_sweep_killed_mid_cell_resumes_without_duplicates_or_losses(test_server, tokenizer_dir, tmp_path, how):
    server = test_server(ttft_ms=120, itl_ms=40)
    data = spec_dict(tmp_path, {"s": url_target(server, tokenizer_dir)},
                     workloads={"rnd": {"dataset": "random", "random_input_len": 16, "random_output_len": 4}},
                     load={"burst": [1], "concurrency": [1], "concurrency_num_prompts": 8})
    path = write_spec(tmp_path, data)
    root = tmp_path / "exp"
    killed = "s.rnd.concurrency-1.r0"
    records = root / "cells" / killed / "result.records.jsonl"
    proc = subprocess.Popen([*CLI, "sweep", str(path), "--disable-tqdm"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(lambda: _records(records) >= 2 or proc.poll() is not None, 60, "the second cell to be mid-run")
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL if how == "sigkill" else signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = Store(root)
    first = store.read_cell("s.rnd.burst-1.r0")
    assert first["status"] == "done"
    partial_records = _records(records)
    if how == "sigkill":
        assert proc.returncode == -signal.SIGKILL
        assert store.read_cell(killed)["status"] == "running"  # as the kill left it
        assert 2 <= partial_records < 8
    else:  # Ctrl-C: the runner stops gracefully, the sweep sets the cell aside at once and exits 130
        assert proc.returncode == 130, err
        assert not records.exists()
        assert (root / "cells" / killed / ".partial-1" / "result.json").exists()
        assert [r["status"] for r in index_rows(root)] == ["done", "pending"]

    outcome = run_sweep(spec_from_data(data), resume=True)
    assert outcome.done == [killed]  # only the unfinished cell ran; the finished one was kept
    assert store.read_cell("s.rnd.burst-1.r0") == first
    aside = root / "cells" / killed / ".partial-1"
    assert (aside / "cell.json").exists() and _records(aside / "result.records.jsonl") >= 2
    cell = store.read_cell(killed)
    assert cell["status"] == "done" and cell["attempt"] == 2
    rows = index_rows(root)
    assert [r["cell_id"] for r in rows] == ["s.rnd.burst-1.r0", killed]  # no duplicates, none lost
    assert [r["status"] for r in rows] == ["done", "done"]
    assert rows[1]["completed"] == 8 and _records(records) == 8  # re-run from scratch, whole
    assert len(build_plan(spec_from_data(data))) == 2
