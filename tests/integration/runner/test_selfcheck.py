"""``infermeter selfcheck``: the client against the test server's ground truth."""

from __future__ import annotations

import json

import pytest

from infermeter.cli.main import main
from infermeter.runner.selfcheck import envelope, run_grid

pytestmark = pytest.mark.integration


def test_grid_points_are_joined_with_server_truth(tokenizer_dir, tmp_path):
    points = run_grid([(1, 5.0), (8, 2.0)], ttft_ms=20.0, output_len=12, tokenizer_dir=str(tokenizer_dir),
                      result_dir=tmp_path)
    assert [(p.concurrency, p.itl_ms) for p in points] == [(1, 5.0), (8, 2.0)]
    for p in points:
        assert p.completed == p.requests and p.failed == 0
        assert p.joined_by == "request id"  # every client request found in the server's records
        # The server never writes before its schedule, so the truth is at least the injected TTFT,
        # and the client cannot see a token before the server wrote it.
        assert p.truth_mean_ttft_ms >= 20.0 - 0.1
        assert p.mean_ttft_ms >= p.truth_mean_ttft_ms - 0.05
        assert p.truth_p99_ttft_ms >= 20.0 - 0.1
        assert p.truth_mean_itl_ms == pytest.approx(p.itl_ms, rel=0.5)
        assert p.ttft_error is not None and p.ttft_error >= -0.005
        assert abs(p.itl_error) < 0.5
        assert p.client_cpu_s > 0 and p.output_tok_s > 0
    env = envelope(points)
    assert set(env["by_itl"]) == {5.0, 2.0}
    assert env["max_output_tok_s"] == max(p.output_tok_s for p in points)


def test_selfcheck_cli_prints_the_envelope(tmp_path, capsys):
    out = tmp_path / "sc.json"
    code = main(["selfcheck", "--grid", "2:2", "--output-len", "8", "--ttft-ms", "10", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "envelope at ITL 2 ms" in text and "capacity:" in text and "load average" in text
    data = json.loads(out.read_text())
    assert len(data["points"]) == 1 and data["points"][0]["concurrency"] == 2
    assert main(["selfcheck", "--grid", "x"]) == 2
