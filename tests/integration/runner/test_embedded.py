"""`infermeter run` against the real embedded engine: llama.cpp's llama-server with the tiny model."""

from __future__ import annotations

import json
import math

import pytest

from infermeter.cli.main import main
from infermeter.runner.execute import execute_run
from infermeter.runner.spec import RunSpec
from infermeter.storage.files import read_records

pytestmark = pytest.mark.integration


def spec(llama, tmp_path, **kw) -> RunSpec:
    server, model = llama
    base = dict(backend="llama.cpp", base_url=server.base_url, tokenizer=str(model.tokenizer_dir),
                dataset_name="random", random_input_len=48, random_output_len=12, ignore_eos=True,
                num_prompts=12, result_dir=str(tmp_path), progress=False)
    base.update(kw)
    return RunSpec.from_flat(base)


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("load", [
    {"request_rate": math.inf},
    {"max_concurrency": 3},
    {"request_rate": 20.0, "max_concurrency": 4},
], ids=["burst", "concurrency", "rate"])
def test_every_load_mode_on_both_endpoints(llama, tmp_path, endpoint, load):
    report = execute_run(spec(llama, tmp_path, endpoint=endpoint, **load))
    r = report.result
    assert r["completed"] == 12, r["errors"]
    # ignore_eos + max_tokens: exact lengths, counted by the server's usage
    assert r["output_lens"] == [12] * 12
    assert r["infermeter"]["work"]["exact"] and r["infermeter"]["work"]["count_source"] == {"server": 12}
    assert r["mean_ttft_ms"] > 0 and r["mean_itl_ms"] > 0
    assert r["model_id"] == llama[1].model_id
    assert r["infermeter"]["target"]["server_version"]  # llama-server's /props build info
    recs = list(read_records(report.records_path))
    assert len(recs) == 12 and all(len(x.token_times) >= 1 for x in recs)


def test_client_token_counts_match_the_server(llama, tmp_path):
    """The random workload's exact input lengths are the server's prompt token counts."""
    report = execute_run(spec(llama, tmp_path, max_concurrency=4, random_range_ratio=0.5))
    recs = [r for r in read_records(report.records_path)]
    assert all(r.prompt_tokens_server == r.input_len for r in recs), [
        (r.input_len, r.prompt_tokens_server) for r in recs]


def test_sonnet_workload_against_the_engine(llama, tmp_path):
    report = execute_run(spec(llama, tmp_path, dataset_name="sonnet", sonnet_input_len=200,
                              sonnet_prefix_len=50, sonnet_output_len=8, max_concurrency=4, num_prompts=8))
    assert report.result["completed"] == 8
    recs = list(read_records(report.records_path))
    assert all(r.prompt_tokens_server == r.input_len for r in recs)


def test_without_ignore_eos_the_result_says_work_may_differ(llama, tmp_path):
    r = execute_run(spec(llama, tmp_path, ignore_eos=False, max_concurrency=4)).result
    assert any(w["code"] == "output-length-not-fixed" and "output length not fixed" in w["message"]
               for w in r["infermeter"]["warnings"])


def test_cli_default_target_is_the_embedded_engine(tmp_path, capsys):
    """No URL: infermeter builds/starts llama-server itself, runs, stops it, and says where results are."""
    code = main(["run", "--num-prompts", "6", "--random-input-len", "32", "--random-output-len", "8",
                 "--ignore-eos", "--max-concurrency", "3", "--save-result", "--result-dir", str(tmp_path),
                 "--result-filename", "embedded.json", "--disable-tqdm", "--engine-parallel", "3"])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads((tmp_path / "embedded.json").read_text())
    assert data["completed"] == 6 and data["total_output_tokens"] == 48
    assert data["backend"] == "llama.cpp"
    engine = data["infermeter"]["target"]["embedded_engine"]
    assert engine["command"][0].endswith("llama-server") and "--parallel" in engine["command"]
    assert "Results:" in out and "embedded.json" in out


def _allowed_cpus(pid: int) -> str:
    with open(f"/proc/{pid}/status") as fh:
        return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("Cpus_allowed_list"))


def test_engine_and_client_get_their_own_cores(monkeypatch, tmp_path, capsys):
    import os

    from infermeter.embedded.placement import choose, usable_cpus
    from infermeter.embedded.target import EmbeddedEngine

    before = os.sched_getaffinity(0)
    cpus = usable_cpus()
    if len(cpus) < 2:
        pytest.skip("needs two usable cores")
    with EmbeddedEngine("tiny", parallel=2, cpus=str(cpus[0])) as engine:  # the engine on the first core
        assert _allowed_cpus(engine._server.pid) == str(cpus[0])  # every llama-server thread inherits it
        assert os.sched_getaffinity(0) == set(cpus[1:])  # the client's event loop: the other cores
        assert "--threads" in engine.describe()["command"] and engine.describe()["threads"] == 1
    assert os.sched_getaffinity(0) == before  # given back when the engine stops
    code = main(["run", "--num-prompts", "4", "--random-input-len", "16", "--random-output-len", "4",
                 "--ignore-eos", "--save-result", "--result-dir", str(tmp_path), "--result-filename", "p.json",
                 "--disable-tqdm", "--engine-parallel", "2"])
    assert code in (0, 5)
    placement = json.loads((tmp_path / "p.json").read_text())["infermeter"]["target"]["embedded_engine"]["placement"]
    assert placement == choose(cpus, None).to_dict()  # the default for this machine, recorded
    if placement["pinned"]:
        assert "Cores (engine / client)" in capsys.readouterr().out
