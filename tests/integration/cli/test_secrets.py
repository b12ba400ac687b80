"""URL credentials (user:password, ?token= and other secret-like query parameters) never reach a
file or the terminal: run results, the experiment store, sweep output."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infermeter.cli.main import main

pytestmark = pytest.mark.integration

PW, TOKEN = "pw-S3KRET-1", "tok-S3KRET-2"


def _files_holding(root: Path, *secrets: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file()
            and any(s.encode() in p.read_bytes() for s in secrets)]


def test_run_with_a_token_in_the_url_writes_and_prints_no_token(test_server, tokenizer_dir, tmp_path, capsys):
    server = test_server(ttft_ms=5, itl_ms=1)
    url = server.base_url.replace("http://", f"http://user:{PW}@") + f"?token={TOKEN}&api_key={TOKEN}"
    code = main(["run", "--base-url", url, "--model", "test-model", "--tokenizer", str(tokenizer_dir),
                 "--random-input-len", "8", "--random-output-len", "4", "--num-prompts", "3", "--disable-tqdm",
                 "--save-result", "--save-detailed", "--result-dir", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert list(tmp_path.glob("*.json"))  # something was written, and none of it holds the secret
    assert _files_holding(tmp_path, PW, TOKEN) == []
    assert PW not in out.out + out.err and TOKEN not in out.out + out.err
    assert "token=<redacted>" in out.out  # the parameter's name is kept, its value is not


def test_sweep_store_and_output_hold_no_url_credentials(test_server, tokenizer_dir, tmp_path, capsys):
    a, b = test_server(ttft_ms=5, itl_ms=1), test_server(ttft_ms=5, itl_ms=1)
    targets = {
        "userinfo": {"url": a.base_url.replace("http://", f"http://user:{PW}@"), "backend": "vllm",
                     "model": "test-model", "tokenizer": str(tokenizer_dir)},
        "query": {"url": b.base_url + f"?access_token={TOKEN}", "backend": "vllm", "model": "test-model",
                  "tokenizer": str(tokenizer_dir)},
    }
    data = {"name": "s", "output_dir": str(tmp_path / "exp"), "targets": targets,
            "workloads": {"rnd": {"dataset": "random", "random_input_len": 8, "random_output_len": 4}},
            "load": {"burst": [2]}, "options": {"ignore_eos": True}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert main(["sweep", str(path), "--disable-tqdm"]) == 0
    out = capsys.readouterr()
    root = tmp_path / "exp"
    assert (root / "plan.json").exists() and list(root.glob("cells/*/cell.json"))
    assert _files_holding(root, PW, TOKEN) == []
    assert PW not in out.out + out.err and TOKEN not in out.out + out.err

