"""``--progress-interval``: plain progress lines on stderr during a real run, without a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infermeter.cli.main import main

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-c", "import sys; from infermeter.cli.main import main; sys.exit(main())"]
SRC = str(Path(__file__).resolve().parents[3] / "src")


def _args(base_url, tokenizer_dir, tmp_path, *extra) -> list[str]:
    return ["run", "--base-url", base_url, "--model", "test-model", "--tokenizer", str(tokenizer_dir),
            "--random-input-len", "16", "--random-output-len", "8", "--ignore-eos", "--num-prompts", "40",
            "--request-rate", "25", "--no-telemetry", "--save-result", "--result-dir", str(tmp_path),
            "--result-filename", "r.json", *extra]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=120, env=env)


def _fields(line: str) -> dict[str, str]:
    head, *pairs = line.split()
    assert head == "progress"
    return dict(p.split("=", 1) for p in pairs)


def test_progress_lines_on_stderr_with_plausible_figures(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=30, itl_ms=10)
    proc = _run(_args(server.base_url, tokenizer_dir, tmp_path, "--progress-interval", "0.2"))
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("progress ")]
    assert len(lines) >= 4, proc.stderr  # 40 requests at 25/s: about 1.6 s of load, a line per 0.2 s
    rows = [_fields(ln) for ln in lines]
    last = rows[-1]
    assert last["done"] == "40" and last["total"] == "40" and last["failed"] == "0"
    assert last["error_rate"] == "0.0000" and last["in_flight"] == "0"
    assert 25 <= float(last["ttft_p50_ms"]) < 1000  # the server waits 30 ms before the first token
    assert 5 <= float(last["itl_p50_ms"]) < 200 and float(last["itl_p99_ms"]) >= float(last["itl_p50_ms"])
    assert float(last["e2el_p50_ms"]) >= float(last["ttft_p50_ms"]) + 5 * 7  # 7 gaps of ~10 ms
    assert 5 <= float(last["req_s"]) <= 40 and float(last["out_tok_s"]) > 0
    assert float(last["rss_mib"]) > 10 and last["stats_rel_error"] == "0.01"
    done = [int(r["done"]) for r in rows if r["phase"] == "measuring"]
    assert done == sorted(done) and done[0] < 40  # lines came during the load, not only at its end
    assert any(r["req_s_recent"] != "-" for r in rows)


def test_no_terminal_and_no_interval_prints_no_progress(test_server, tokenizer_dir, tmp_path):
    server = test_server(ttft_ms=5, itl_ms=2)
    proc = _run(_args(server.base_url, tokenizer_dir, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "progress " not in proc.stderr and "█" not in proc.stderr


@pytest.mark.parametrize("value", ["0", "-2", "nan"])
def test_a_bad_interval_is_a_one_line_error(value, capsys):
    code = main(["run", "--base-url", "http://127.0.0.1:9", "--progress-interval", value])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "--progress-interval" in err and "Traceback" not in err


def test_sweep_cells_write_progress_lines(test_server, tokenizer_dir, tmp_path, capsys):
    import yaml

    server = test_server(ttft_ms=20, itl_ms=5)
    spec = {"name": "prog", "output_dir": str(tmp_path / "exp"),
            "targets": {"t": {"url": server.base_url, "model": "test-model", "tokenizer": str(tokenizer_dir)}},
            "workloads": {"rnd": {"dataset": "random", "random_input_len": 16, "random_output_len": 4}},
            "load": {"rate_steps": [[20]], "step_hold_s": 1.0},
            "options": {"ignore_eos": True}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["sweep", str(path), "--disable-tqdm", "--progress-interval", "0.2"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("progress ")]
    assert len(lines) >= 3
    last = _fields(lines[-1])
    assert last["done"] == "20" and last["failed"] == "0" and float(last["ttft_p50_ms"]) >= 15


def test_sweep_refuses_a_bad_interval(capsys):
    assert main(["sweep", "--recipe", "x", "--progress-interval", "0"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--progress-interval 0 is not a positive number" in err
