"""Every option docs/cli.md calls "same" as vLLM's, run against the in-tree test server: the request
bodies (and headers) it sends, and the result keys it writes, are what vLLM's definitions say
(vllm/benchmarks/serve.py and lib/endpoint_request_func.py; version in cli/vllm_table.py)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from infermeter.cli.main import main
from infermeter.cli.options import parse_run_args
from infermeter.cli.vllm_table import VLLM_OPTIONS
from infermeter.testserver.helper import run_test_server

pytestmark = pytest.mark.integration

SAMPLING = {"--temperature": ("temperature", "0.7", 0.7), "--top-p": ("top_p", "0.9", 0.9),
            "--top-k": ("top_k", "5", 5), "--min-p": ("min_p", "0.05", 0.05),
            "--frequency-penalty": ("frequency_penalty", "0.5", 0.5),
            "--presence-penalty": ("presence_penalty", "0.25", 0.25),
            "--repetition-penalty": ("repetition_penalty", "1.1", 1.1)}


@pytest.fixture(scope="module")
def server():
    with run_test_server(ttft_ms=2, itl_ms=1, keep_bodies=10_000) as srv:
        yield srv


def run(server, tokenizer_dir, out: Path, *argv: str, n: int = 3) -> tuple[list[dict], dict | None]:
    """One `infermeter run` (vLLM spelling); the bodies it sent and its saved result (if saved)."""
    before = len(_bodies(server))
    base = ["run", "--base-url", server.base_url, "--tokenizer", str(tokenizer_dir), "--disable-tqdm",
            "--no-telemetry", "--random-input-len", "16", "--random-output-len", "6"]
    if "--num-prompts" not in argv:
        base += ["--num-prompts", str(n)]
    if "--model" not in argv:
        base += ["--model", "test-model"]
    if not any(a.startswith(("--save-result", "--append-result")) for a in argv):
        base += ["--save-result"]
    if "--result-dir" not in argv:
        base += ["--result-dir", str(out)]
    if "--result-filename" not in argv:
        base += ["--result-filename", "r.json"]
    assert main([*base, *argv]) == 0
    files = sorted(out.glob("*.json"), key=lambda p: p.stat().st_mtime)
    result = None
    if files:
        text = files[-1].read_text()
        result = json.loads(text.splitlines()[-1] if "--append-result" in argv else text)
    return _bodies(server)[before:], result


def _bodies(server) -> list[dict]:
    with urllib.request.urlopen(server.base_url + "/stats?bodies=1") as r:
        return json.load(r)["bodies"]


def _baseline_body(b: dict) -> None:
    """vLLM's completions body without sampling flags: no temperature or other sampling parameter."""
    body = b["body"]
    assert b["path"] == "/v1/completions"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    for key in ("temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty"):
        assert key not in body, key


CASES: dict[str, tuple] = {}


def case(*flags: str):
    def deco(fn):
        for f in flags:
            CASES[f] = fn
        return fn
    return deco


@case("--base-url", "--tokenizer", "--num-prompts", "--random-input-len", "--random-output-len",
      "--disable-tqdm", "--save-result", "--result-dir", "--result-filename", "--trust-remote-code",
      "--use-beam-search", "--no-stream", "--ignore-eos")
def _plain(server, tok, tmp):
    bodies, r = run(server, tok, tmp, "--num-prompts", "5", "--trust-remote-code", "--use-beam-search",
                    "--no-stream")
    assert len(bodies) == 5 and (tmp / "r.json").exists()
    for b in bodies:
        _baseline_body(b)
        assert b["body"]["max_tokens"] == 6 and b["body"]["model"] == "test-model"
        assert b["body"]["ignore_eos"] is True  # random dataset: vLLM forces ignore_eos
    assert r["input_lens"] == [16] * 5 and r["num_prompts"] == 5
    # sharegpt-like data does not force it; --ignore-eos sets it
    data = tmp / "d.jsonl"
    data.write_text('{"prompt": "one two three"}\n{"prompt": "four five"}\n')
    bodies, _ = run(server, tok, tmp / "c", "--dataset-name", "custom", "--dataset-path", str(data), n=2)
    assert all("ignore_eos" not in b["body"] for b in bodies)
    bodies, _ = run(server, tok, tmp / "c2", "--dataset-name", "custom", "--dataset-path", str(data),
                    "--ignore-eos", n=2)
    assert all(b["body"]["ignore_eos"] is True for b in bodies)


@case("--dataset-name", "--dataset-path", "--custom-output-len", "--skip-chat-template", "--output-len")
def _custom(server, tok, tmp):
    data = tmp / "d.jsonl"
    data.write_text('{"prompt": "What is the capital of India?"}\n')
    bodies, _ = run(server, tok, tmp / "a", "--dataset-name", "custom", "--dataset-path", str(data), n=2)
    assert [b["body"]["max_tokens"] for b in bodies] == [256, 256]  # vLLM's custom default
    bodies, _ = run(server, tok, tmp / "b", "--dataset-name", "custom", "--dataset-path", str(data),
                    "--custom-output-len", "9", "--skip-chat-template", n=1)
    assert bodies[0]["body"]["max_tokens"] == 9
    assert bodies[0]["body"]["prompt"] == "What is the capital of India?"  # sent as written
    bodies, _ = run(server, tok, tmp / "c", "--dataset-name", "custom", "--dataset-path", str(data),
                    "--output-len", "4", n=1)
    assert bodies[0]["body"]["max_tokens"] == 4


@case("--sonnet-input-len", "--sonnet-output-len", "--sonnet-prefix-len")
def _sonnet(server, tok, tmp):
    lines = tmp / "lines.txt"
    lines.write_text("".join(f"zebra line number {i} of the user's own file\n" for i in range(60)))
    bodies, r = run(server, tok, tmp / "s", "--dataset-name", "sonnet", "--dataset-path", str(lines),
                    "--sonnet-input-len", "120", "--sonnet-output-len", "7", "--sonnet-prefix-len", "40",
                    "--backend", "openai-chat", n=3)
    assert all(b["body"]["max_tokens"] == 7 for b in bodies)
    text = json.dumps(bodies[0]["body"]["messages"])
    assert "zebra line number" in text  # --dataset-path is used, not the bundled sonnets
    assert max(r["input_lens"]) <= 120


@case("--random-range-ratio", "--random-prefix-len", "--input-len", "--seed")
def _random(server, tok, tmp):
    bodies, r = run(server, tok, tmp, "--random-range-ratio", "0.5", "--random-prefix-len", "8",
                    "--input-len", "20", "--seed", "4", n=12)
    outs = [b["body"]["max_tokens"] for b in bodies]
    assert min(outs) >= 3 and max(outs) <= 9 and len(set(outs)) > 1  # [6*(1-r), 6*(1+r)]
    assert all(8 + 10 <= n <= 8 + 30 for n in r["input_lens"])
    prompts = [b["body"]["prompt"] for b in bodies]
    assert len({p[:8] for p in prompts}) == 1  # a shared prefix


@case(*SAMPLING, "--extra-body", "--logprobs")
def _sampling(server, tok, tmp):
    argv = [x for flag, (_, value, _) in SAMPLING.items() for x in (flag, value)]
    bodies, _ = run(server, tok, tmp, *argv, "--logprobs", "1", "--extra-body", '{"top_k": 3, "seed": 11}', n=1)
    body = bodies[0]["body"]
    for flag, (key, _, value) in SAMPLING.items():
        assert body[key] == (3 if key == "top_k" else value), key  # --extra-body wins, as in vLLM
    assert body["seed"] == 11 and body["logprobs"] == 1


@case("--model", "--served-model-name", "--label", "--backend", "--endpoint")
def _model(server, tok, tmp):
    bodies, r = run(server, tok, tmp, "--model", "org/Base-Model", "--served-model-name", "test-model",
                    "--label", "mylabel", "--result-filename", "x.json", n=1)
    assert bodies[0]["body"]["model"] == "test-model"
    assert r["model_id"] == "org/Base-Model" and r["label"] == "mylabel"
    assert r["backend"] == "openai" and r["endpoint_type"] == "openai"  # vLLM's default backend
    bodies, r = run(server, tok, tmp / "chat", "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
                    n=1)
    assert bodies[0]["path"] == "/v1/chat/completions" and "messages" in bodies[0]["body"]


@case("--header")
def _header(server, tok, tmp):
    bodies, _ = run(server, tok, tmp, "--header", "x-a=1", "x-b=two", n=1)
    headers = {k.lower(): v for k, v in bodies[0]["headers"].items()}
    assert headers["x-a"] == "1" and headers["x-b"] == "two"


@case("--request-rate", "--burstiness", "--max-concurrency")
def _load(server, tok, tmp):
    _, r = run(server, tok, tmp, "--request-rate", "50", "--burstiness", "inf", "--max-concurrency", "2", n=10)
    load = r["infermeter"]["load"]
    assert r["request_rate"] == 50.0 and r["burstiness"] == "inf" and r["max_concurrency"] == 2
    assert load["arrival"] == "constant" and load["schedule"] == "vllm"
    assert load["scheduled_offered_rate"] == pytest.approx(50.0, rel=1e-3)


@case("--ramp-up-strategy", "--ramp-up-start-rps", "--ramp-up-end-rps")
def _ramp(server, tok, tmp):
    _, r = run(server, tok, tmp, "--ramp-up-strategy", "linear", "--ramp-up-start-rps", "20",
               "--ramp-up-end-rps", "80", n=8)
    assert r["ramp_up_strategy"] == "linear" and r["ramp_up_start_rps"] == 20.0 and r["request_rate"] == "inf"


@case("--percentile-metrics", "--metric-percentiles", "--goodput", "--metadata")
def _metrics(server, tok, tmp):
    _, r = run(server, tok, tmp, n=4)
    assert "p99_ttft_ms" in r and "mean_e2el_ms" not in r and "p50_ttft_ms" not in r  # vLLM's defaults
    assert r["request_goodput"] is None
    _, r = run(server, tok, tmp / "b", "--percentile-metrics", "e2el,ttft", "--metric-percentiles", "50,90",
               "--goodput", "ttft:1000", "e2el:1000", "--metadata", "version=0.3.3", "tp=1", n=4)
    assert {"p50_e2el_ms", "p90_ttft_ms", "std_e2el_ms"} <= set(r) and "mean_itl_ms" not in r
    assert r["request_goodput"] > 0 and r["version"] == "0.3.3" and r["tp"] == "1"
    assert "generated_texts" not in r and len(r["latencies"]) == len(r["start_times"]) == 4
    assert r["max_concurrent_requests"] >= 1 and r["max_output_tokens_per_s"] >= 6
    _, r = run(server, tok, tmp / "c", "--save-detailed", n=3)  # vLLM's generated_texts
    assert len(r["generated_texts"]) == 3 and all(isinstance(t, str) and t for t in r["generated_texts"])


@case("--append-result")
def _append(server, tok, tmp):
    for _ in range(2):
        run(server, tok, tmp, "--append-result", n=1)
    lines = (tmp / "r.json").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(ln)["completed"] == 1 for ln in lines)


@case("--sharegpt-output-len")
def _sharegpt(server, tok, tmp):
    data = tmp / "sg.json"
    conv = [{"from": "human", "value": "tell me about the sea " * 3}, {"from": "gpt", "value": "it is wide " * 5}]
    data.write_text(json.dumps([{"conversations": conv}] * 3))
    bodies, _ = run(server, tok, tmp / "o", "--dataset-name", "sharegpt", "--dataset-path", str(data),
                    "--sharegpt-output-len", "5", n=2)
    assert [b["body"]["max_tokens"] for b in bodies] == [5, 5]


def test_every_same_option_has_a_case():
    same = {o.flag for o in VLLM_OPTIONS if o.status == "same"}
    assert same <= set(CASES), sorted(same - set(CASES))


@pytest.mark.parametrize("name", sorted({fn.__name__ for fn in CASES.values()}))
def test_same_options_send_what_vllm_sends(name, server, tokenizer_dir, tmp_path):
    fn = next(f for f in CASES.values() if f.__name__ == name)
    fn(server, tokenizer_dir, tmp_path)


CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "vllm_cli" / "corpus.txt"


def _runnable_corpus() -> list[tuple[str, list[str]]]:
    import shlex

    out = []
    for block in CORPUS.read_text().split("\n\n"):
        body = [ln for ln in block.splitlines() if not ln.startswith("#")]
        if not body or "# expect: rejected" in block:
            continue
        argv = shlex.split(" ".join(ln.rstrip("\\").strip() for ln in body))
        argv = argv[3:] if argv[:3] == ["vllm", "bench", "serve"] else argv[2:]
        out.append((" ".join(argv), argv))
    return out


@pytest.mark.parametrize("line, argv", _runnable_corpus(), ids=[a[0][:60] for a in _runnable_corpus()])
def test_corpus_runs_unchanged_against_the_test_server(line, argv, test_server, tokenizer_dir, tmp_path,
                                                        monkeypatch):
    """Each command line runs as written; only the target (--base-url, last, so it wins over
    --host/--port as in vLLM) and a local --tokenizer are added, and its data files exist."""
    from infermeter.workloads.sonnet import sonnet_lines

    model = argv[argv.index("--model") + 1]
    server = test_server(ttft_ms=2, itl_ms=1, model=model, keep_bodies=1000)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sonnet.txt").write_text("".join(sonnet_lines()))
    (tmp_path / "data.jsonl").write_text('{"prompt": "What is the capital of India?"}\n' * 3)
    conv = [{"from": "human", "value": "tell me about the sea"}, {"from": "gpt", "value": "it is wide " * 8}]
    (tmp_path / "ShareGPT_V3_unfiltered_cleaned_split.json").write_text(json.dumps([{"conversations": conv}] * 4))
    code = main(["run", *argv, "--disable-tqdm", "--no-telemetry", "--base-url", server.base_url,
                 "--tokenizer", str(tokenizer_dir)])
    assert code == 0
    bodies = _bodies(server)
    assert len(bodies) == parse_run_args(argv)[0]["num_prompts"]
    if "tgi" in argv:
        assert {b["path"] for b in bodies} == {"/generate_stream"}
        assert bodies[0]["body"]["parameters"]["max_new_tokens"] == 150  # vLLM's --sonnet-output-len default
        assert "Pick as many lines" in bodies[0]["body"]["inputs"]
    else:
        assert all(b["body"]["model"] == model and b["path"] == "/v1/completions" for b in bodies)
    if "--temperature=0.3" in argv:
        assert all(b["body"]["temperature"] == 0.3 and b["body"]["top_p"] == 0.75 for b in bodies)
        assert all(b["body"]["max_tokens"] == 256 for b in bodies)  # --dataset-name custom: vLLM's 256
        assert list((tmp_path / "log").glob("*.json"))  # --save-result --result-dir "./log/"
    else:
        assert all("temperature" not in (b["body"].get("parameters") or b["body"]) for b in bodies)
