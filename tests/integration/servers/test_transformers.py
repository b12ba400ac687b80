"""The ``transformers serve`` launch profile as a local process, on CPU, with a tiny
randomly initialised Llama saved in Hugging Face format (the project's own tokenizer).

Runs only where ``transformers serve`` is installed with torch: the ``transformers`` CLI
on PATH, or ``INFERMETER_TRANSFORMERS_BIN=/path/to/venv/bin/transformers`` (its sibling
``python`` builds the model).  For example::

    python -m venv --system-site-packages /tmp/tfserve
    /tmp/tfserve/bin/pip install torch==2.13.0 'transformers[serving]'
    INFERMETER_TRANSFORMERS_BIN=/tmp/tfserve/bin/transformers pytest tests/integration/servers/test_transformers.py
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from infermeter.runner.execute import execute_run
from infermeter.runner.spec import RunSpec
from infermeter.servers import LocalServer, ServerSettings

pytestmark = pytest.mark.integration

MAKE_MODEL = textwrap.dedent("""\
    import sys, torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast.from_pretrained(sys.argv[1])
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(sys.argv[2])
    tok.save_pretrained(sys.argv[2])
""")


def transformers_bin() -> tuple[str, str]:
    exe = os.environ.get("INFERMETER_TRANSFORMERS_BIN") or shutil.which("transformers")
    if not exe or not Path(exe).exists():
        pytest.skip("transformers serve is not installed (set INFERMETER_TRANSFORMERS_BIN)")
    python = Path(exe).with_name("python")
    python_s = str(python) if python.exists() else sys.executable
    probe = subprocess.run([python_s, "-c", "import torch, transformers, fastapi, uvicorn"], capture_output=True,
                           timeout=300)
    if probe.returncode != 0:
        pytest.skip("transformers serve needs torch, fastapi and uvicorn: pip install torch 'transformers[serving]'")
    return exe, python_s


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory, tokenizer_dir):
    exe, python = transformers_bin()
    out = tmp_path_factory.mktemp("tiny-hf")
    subprocess.run([python, "-c", MAKE_MODEL, str(tokenizer_dir), str(out)], check=True, capture_output=True,
                   timeout=600)
    return exe, out


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_transformers_serve_profile(tiny_hf, tmp_path):
    exe, model_dir = tiny_hf
    settings = ServerSettings(model=str(model_dir), max_batched_tokens=256, port=free_port(), secrets=[])
    server = LocalServer("transformers", settings, vendor="cpu", executable=exe, startup_timeout=600,
                         log_path=tmp_path / "tf.log")
    with server:
        fields = server.run_fields()
        assert fields["ignore_eos"] is False and fields["endpoint"] == "/v1/chat/completions"
        assert fields["model"] == str(model_dir)
        chat = server.base_url + fields["endpoint"]
        msg = {"model": fields["model"], "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        status, body = post(chat, msg)
        assert status == 200 and body["usage"]["completion_tokens"] <= 4
        # why the profile never sends ignore_eos: the server refuses unknown fields
        status, body = post(chat, {**msg, "ignore_eos": True})
        assert status == 422 and "ignore_eos" in json.dumps(body)
        report = execute_run(RunSpec.from_flat(dict(
            **fields, tokenizer=str(model_dir), random_input_len=16, random_output_len=4,
            num_prompts=3, max_concurrency=2, result_dir=str(tmp_path), progress=False)))
        assert report.result["completed"] == 3, report.result["errors"]
        prov = server.provenance()
    assert not server.running
    assert prov["backend"] == "transformers" and prov["server_version"] not in (None, "unknown")
    assert "--continuous-batching" in prov["command"] and "--device" in prov["command"]
    assert prov["applied_settings"]["max_batched_tokens"] == "--cb-max-batch-tokens 256"
    assert prov["fixed_output_length"].startswith("none")
