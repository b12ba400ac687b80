"""Daily use against the in-tree test server: the run summary, warnings, per-request records
of a sweep, and their export to Parquet and CSV read back with pandas and DuckDB."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from infermeter.cli.main import main
from infermeter.cli.summary import summary_lines, validity_reason
from infermeter.runner import analyse
from infermeter.testserver.helper import run_test_server

pytestmark = pytest.mark.integration


@pytest.fixture
def calm_client(monkeypatch):
    """Busy shared cores make the real client check fire; these runs test the rest."""
    monkeypatch.setattr(analyse, "judge_client",
                        lambda stats, *a, **k: setattr(stats, "client_error_bound_pct", {"ttft": 0.5, "itl": 1.5}))


def run_args(server, tokenizer_dir, tmp_path, *extra: str) -> list[str]:
    return ["run", "--base-url", server.base_url, "--model", "test-model", "--tokenizer", str(tokenizer_dir),
            "--random-input-len", "16", "--random-output-len", "6", "--ignore-eos", "--save-result",
            "--result-dir", str(tmp_path), "--result-filename", "r.json", "--disable-tqdm", *extra]


def test_summary_is_compact_and_ends_with_why_it_is_valid(test_server, tokenizer_dir, tmp_path, calm_client,
                                                          capsys):
    server = test_server(ttft_ms=5, itl_ms=2)
    assert main(run_args(server, tokenizer_dir, tmp_path, "--num-prompts", "20", "--max-concurrency", "4")) == 0
    out = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(out) if "Serving Benchmark Result" in line)
    end = next(i for i, line in enumerate(out) if line.startswith("Validity"))
    block = out[start:end + 1]
    assert len(block[0]) == 50 and block[0].startswith("=") and block[0].endswith("=")
    assert max(len(line) for line in block) <= 80  # readable in an 80-column terminal
    rows = {line[:40].strip(): line[41:] for line in block if len(line) > 41 and line[40] == " "}
    assert rows["Successful requests"] == "20" and rows["Failed requests"] == "0"
    assert block[-1].split() == ["Validity", "VALID"]  # the label at the end, then its reason
    reason = " ".join(" ".join(out[end + 1:]).split())
    assert reason.startswith("(equal work: every request produced the output length asked; no request failed; "
                             "the client's possible error (TTFT 0.5%, ITL 1.5%) is within the tolerance")
    result = json.loads((tmp_path / "r.json").read_text())
    # an embedded engine's placement is part of the summary and of the reason it is VALID
    result["infermeter"]["target"]["embedded_engine"] = {"placement": {
        "engine_cpus": [0], "client_cpus": [1], "threads": 1, "pinned": True, "why": "2 usable cores"}}
    assert "Cores (engine / client)                  0 / 1" in summary_lines(result)
    assert validity_reason(result).endswith("engine and client on their own cores (0 / 1)")


def test_a_small_custom_file_warns_in_one_clean_line(test_server, tokenizer_dir, tmp_path, calm_client, capsys):
    server = test_server(ttft_ms=1, itl_ms=1)
    data = tmp_path / "mine.jsonl"
    data.write_text('{"prompt": "hello there"}\n{"prompt": "a second prompt"}\n')
    assert main(run_args(server, tokenizer_dir, tmp_path, "--dataset-name", "jsonl", "--dataset-path", str(data),
                         "--num-prompts", "5")) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "qualify" in line]
    assert warned == ["infermeter: warning: only 2 JSONL records qualify for 5 prompts: cycling through them, "
                      "so some prompts repeat"]
    assert "UserWarning" not in err and ".py:" not in err


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, tokenizer_dir):
    """A finished sweep: two targets, a burst and a concurrency cell each; one warm-up request per target and
    workload, sent in its first cell (the burst)."""
    tmp = tmp_path_factory.mktemp("exp")
    servers = [run_test_server(ttft_ms=5, itl_ms=1), run_test_server(ttft_ms=15, itl_ms=1)]
    try:
        target = lambda s: {"url": s.base_url, "backend": "vllm", "model": "test-model",  # noqa: E731
                            "tokenizer": str(tokenizer_dir)}
        spec = {"name": "x", "output_dir": str(tmp / "exp"),
                "targets": {"fast": target(servers[0]), "slow": target(servers[1])},
                "workloads": {"rnd": {"dataset": "random", "random_input_len": 16, "random_output_len": 4}},
                "load": {"burst": [3], "concurrency": [2], "concurrency_num_prompts": 5},
                "options": {"ignore_eos": True, "warmup_requests": 1}, "stop": {"request_timeout": 30}}
        path = tmp / "spec.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(["sweep", str(path), "--disable-tqdm"]) == 0
    finally:
        for s in servers:
            s.stop()
    return tmp / "exp", err.getvalue()


EXPECTED_CELLS = {"fast.rnd.burst-3.r0": 3, "fast.rnd.concurrency-2.r0": 5,
                  "slow.rnd.burst-3.r0": 3, "slow.rnd.concurrency-2.r0": 5}
WARMED_CELLS = ("fast.rnd.burst-3.r0", "slow.rnd.burst-3.r0")  # warmed up once per target and workload


def test_sweep_records_name_their_cell_and_the_tokenizer_is_named_once(experiment):
    root, err = experiment
    assert sum(1 for line in err.splitlines() if line.startswith("tokenizer:")) == 1, err
    lines = [json.loads(x) for x in (root / "cells" / "slow.rnd.burst-3.r0" / "result.records.jsonl")
             .read_text().splitlines()]
    assert {(x["target"], x["cell_id"]) for x in lines} == {("slow", "slow.rnd.burst-3.r0")}
    assert sorted(x["warmup"] for x in lines) == [False, False, False, True]
    assert all(x["ttft_ms"] > 14 for x in lines if not x["warmup"])


def _check_export(df, root: Path) -> None:
    """One row per request of every cell (warm-up rows marked), typed columns, the store's numbers."""
    measured = df[~df["warmup"]]
    assert measured.groupby("cell_id").size().to_dict() == EXPECTED_CELLS
    assert df[df["warmup"]].groupby("cell_id").size().to_dict() == {c: 1 for c in WARMED_CELLS}
    assert set(df["target"]) == {"fast", "slow"} and set(df["workload"]) == {"rnd"}
    assert set(zip(df["load_mode"], df["load_value"])) == {("burst", 3.0), ("concurrency", 2.0)}
    for name in ("error", "error_detail", "cell_id", "target", "anomalies"):
        assert df[name].dtype.kind in "OUT", (name, df[name].dtype)  # text, not float NaN
    assert (df["error"].fillna("") == "").all() and df["ok"].all()
    rows = {r["cell_id"]: r for r in _store_rows(root)}
    for cell, mean in measured.groupby("cell_id")["ttft_ms"].mean().items():
        assert mean == pytest.approx(rows[cell]["mean_ttft_ms"], rel=1e-6)


def _store_rows(root: Path) -> list[dict]:
    from infermeter.experiments.store import Store

    return Store(root).rows()


def test_export_parquet_reads_in_pandas_and_duckdb(experiment, tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    root, _ = experiment
    out = tmp_path / "requests.parquet"
    assert main(["export", str(root), "--format", "parquet", "-o", str(out)]) == 0
    assert "wrote 18 requests of 4 runs" in capsys.readouterr().out
    _check_export(pd.read_parquet(out), root)
    duckdb = pytest.importorskip("duckdb")
    got = duckdb.sql(f"SELECT target, count(*) AS n, avg(ttft_ms) AS ttft FROM '{out}' "
                     "WHERE NOT warmup GROUP BY target ORDER BY target").fetchall()
    assert [(t, n) for t, n, _ in got] == [("fast", 8), ("slow", 8)]
    assert got[0][2] < got[1][2]  # the slow target's injected TTFT shows through
    types = {r[0]: r[1] for r in duckdb.sql(f"DESCRIBE SELECT * FROM '{out}'").fetchall()}
    assert types["error"] == "VARCHAR" and types["warmup"] == "BOOLEAN" and types["status"] == "BIGINT"


def test_export_csv_reads_in_pandas_and_duckdb(experiment, tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    root, _ = experiment
    out = tmp_path / "requests.csv"
    assert main(["export", str(root), "--format", "csv", "-o", str(out)]) == 0
    capsys.readouterr()
    _check_export(pd.read_csv(out, dtype={"error": str, "error_detail": str, "anomalies": str}), root)
    duckdb = pytest.importorskip("duckdb")
    (n, warm), = duckdb.sql(f"SELECT count(*), sum(CAST(warmup AS INTEGER)) FROM read_csv_auto('{out}')").fetchall()
    assert (n, warm) == (18, 2)


def test_export_of_one_run_and_its_errors(test_server, tokenizer_dir, tmp_path, calm_client, capsys):
    pd = pytest.importorskip("pandas")
    server = test_server(ttft_ms=1, itl_ms=1)
    assert main(run_args(server, tokenizer_dir, tmp_path, "--num-prompts", "6", "--max-concurrency", "2",
                         "--label", "mine")) == 0
    out = tmp_path / "one.parquet"
    assert main(["export", str(tmp_path / "r.json"), "-o", str(out)]) == 0
    df = pd.read_parquet(out)
    assert len(df) == 6 and set(df["target"]) == {"mine"} and set(df["cell_id"]) == {""}
    assert set(df["load_mode"]) == {"concurrency"} and set(df["load_value"]) == {2.0}
    assert not math.isnan(df["e2el_ms"].mean())
    capsys.readouterr()
    assert main(["export", str(tmp_path / "r.json"), "--format", "xlsx", "-o", str(out)]) == 2
    assert "pass --format parquet or --format csv" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.json"), "-o", str(out)]) == 2
