"""Cost and energy of a real run against the in-tree test server (docs/cost.md): a stated
node price gives dollars per million tokens at the measured throughput; with no GPU
sampled, energy is n/a with the reason, in the result, the summary and the store."""

from __future__ import annotations

import json

import pytest

from infermeter.cli.main import main
from infermeter.cli.summary import summary_lines
from infermeter.runner import analyse

pytestmark = pytest.mark.integration


@pytest.fixture
def calm_client(monkeypatch):
    monkeypatch.setattr(analyse, "judge_client",
                        lambda stats, *a, **k: setattr(stats, "client_error_bound_pct", {"ttft": 0.5, "itl": 1.5}))


def test_a_stated_price_gives_cost_per_token(test_server, tokenizer_dir, tmp_path, calm_client, capsys):
    server = test_server(ttft_ms=5, itl_ms=2)
    args = ["run", "--base-url", server.base_url, "--model", "test-model", "--tokenizer", str(tokenizer_dir),
            "--random-input-len", "16", "--random-output-len", "6", "--ignore-eos", "--save-result",
            "--result-dir", str(tmp_path), "--result-filename", "r.json", "--disable-tqdm", "--num-prompts", "12",
            "--telemetry-gpu", "none", "--gpu-price", "3.6", "--gpu-price-per", "node", "--gpu-count", "2"]
    assert main(args) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    eff = result["infermeter"]["efficiency"]
    # by hand: $3.60/h is $0.001/s; at T output tok/s a million tokens take 1e6/T s
    tps = result["output_throughput"]
    assert eff["usd_per_million_output_tokens"] == pytest.approx(1e3 / tps, rel=1e-5)
    assert eff["usd_per_million_total_tokens"] == pytest.approx(1e3 / result["total_token_throughput"], rel=1e-5)
    assert eff["price"] == {"per_hour": 3.6, "per": "node", "source": "--gpu-price"}
    assert eff["output_throughput_per_gpu"] == pytest.approx(tps / 2, rel=1e-5)
    assert eff["energy_j"] is None and "no GPU telemetry" in eff["reasons"]["energy"]
    lines = summary_lines(result)
    block = lines[:next(i for i, line in enumerate(lines) if line.startswith("Validity"))]
    assert max(len(line) for line in block) <= 80  # the rows read in an 80-column terminal
    assert any(line.startswith("Energy per output token (J)") and line.endswith("n/a") for line in lines)
    assert any(line.startswith("Cost per million output tokens ($)") and "$3.6/node-hour" in line for line in lines)
    assert "Cost per million output tokens" in capsys.readouterr().out


def test_a_price_without_its_basis_is_one_line(tmp_path, capsys):
    assert main(["run", "--base-url", "http://127.0.0.1:9", "--gpu-price", "2.5"]) == 2
    err = capsys.readouterr().err
    assert "--gpu-price-per gpu" in err and "Traceback" not in err
