"""infermeter lint: each defect of the write-up's dstack files, and each listed pitfall, is caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from infermeter.cli.main import main
from infermeter.servers.lint import has_errors, lint_file, lint_text

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dstack"


def errors(path: str, use_dstack: bool = False) -> list[tuple[int | None, str, str]]:
    return [(f.line, f.key, f.problem) for f in lint_file(FIXTURES / path, use_dstack=use_dstack)
            if f.severity == "error"]


def has(found, key: str, *words: str, line: int | None = None) -> bool:
    return any(k == key and all(w in p for w in words) and (line is None or ln == line) for ln, k, p in found)


def test_writeup_tgi_task_every_defect():
    found = errors("writeup-tgi-mi300x.dstack.yml")
    assert has(found, "image", "floating tag 'latest'", line=9)
    assert has(found, "image", "MI300X", "not a ROCm build", "CUDA", line=9)
    assert has(found, "env[6]", "'MAX-INPUT-TOKEN' is not a valid environment variable name", line=18)
    assert has(found, "commands[0]", "$MAX-INPUT-TOKEN", "expands $MAX followed by the text '-INPUT-TOKEN'", line=21)
    # what is right in it is not reported: 8 shards on MI300X:8, port 8000 exposed
    assert not any(k.startswith("resources") or k.startswith("ports") for _, k, _ in found)


def test_writeup_tgi_task_is_rejected_by_dstack_itself():
    pytest.importorskip("dstack")
    found = errors("writeup-tgi-mi300x.dstack.yml", use_dstack=True)
    assert has(found, "env[6]", "dstack", "rejects it", "pattern", line=18)


def test_writeup_vllm_task_every_defect():
    found = errors("writeup-vllm-mi300x.dstack.yml")
    assert has(found, "image", "the commands start vLLM but", "is the TGI image")
    assert has(found, "image", "floating tag 'latest'")
    assert has(found, "resources", "vLLM needs GPUs but the file declares none")


def test_clean_file_passes_with_and_without_dstack():
    assert lint_file(FIXTURES / "clean-vllm-mi300x.dstack.yml", use_dstack=False) == []
    assert not has_errors(lint_file(FIXTURES / "clean-vllm-mi300x.dstack.yml"))


@pytest.mark.parametrize("path,key,words", [
    ("port-mismatch.dstack.yml", "port", ("exposes port 8080", "listens on 8000 (--port 8000)")),
    ("gpu-count-mismatch.dstack.yml", "resources.gpu", ("8 GPU(s) requested", "--tp-size 4")),
    ("env-dict-invalid-name.dstack.yml", "env.MAX-MODEL-LEN", ("not a valid environment variable name",)),
    ("env-dict-invalid-name.dstack.yml", "env.HF_TOKEN", ("secret value",)),
    ("env-dict-invalid-name.dstack.yml", "commands[0]", ("${MAX-MODEL-LEN}", "if that is unset, the text")),
    ("unclosed-brace.dstack.yml", "commands[0]", ("never closed",)),
    ("untagged-image.dstack.yml", "image", ("has no tag",)),
    ("rocm-on-nvidia.dstack.yml", "image", ("H100", "ROCm image")),
])
def test_each_defect_fixture(path, key, words):
    found = errors(path)
    assert has(found, key, *words), found


def test_dstack_does_not_check_env_mapping_names_but_lint_does():
    pytest.importorskip("dstack")
    found = errors("env-dict-invalid-name.dstack.yml", use_dstack=True)
    assert not any("rejects it" in p for _, k, p in found if k.startswith("env"))
    assert has(found, "env.MAX-MODEL-LEN", "not a valid environment variable name")


BASE = """\
type: task
name: t
image: vllm/vllm-openai:v0.11.2
env:
  - HF_TOKEN
  - LEN=8192
commands:
  - {command}
ports: [8000]
resources:
  gpu: H100:1
"""


@pytest.mark.parametrize("command,severity,words", [
    ("vllm serve m --port 8000 --max-model-len $LEN", None, ()),
    ("vllm serve m --port 8000 --max-model-len ${LEN}", None, ()),
    ("vllm serve m --port 8000 --max-model-len ${LEN}-x --name ${{ run.args }}", None, ()),
    ("vllm serve m --port 8000 --max-model-len $LEN-TOKENS", "error", ("expands $LEN followed by the text '-TOKENS'",)),
    ("vllm serve m --port 8000 --max-model-len ${LEN-TOKENS}", "error", ("the text 'TOKENS'",)),
    ("vllm serve m --port 8000 --max-model-len ${LEN", "error", ("never closed",)),
    ("vllm serve m --port 8000 --max-model-len $UNSET", "warning", ("not declared in env",)),
    ("vllm serve /models/$LEN.gguf --port 8000", None, ()),  # $NAME.ext is ordinary shell
    ("vllm serve m --port 8000 --hf-token hf_abcdefghijklmnopqrstuvwxyz", "error", ("access token",)),
    ("vllm serve m --port 8001", "error", ("exposes port 8000",)),
    ("vllm serve m", None, ()),  # vLLM's default port is 8000
    ("vllm serve m --port 8000 --tensor-parallel-size 2", "error", ("1 GPU(s) requested",)),
    ("vllm serve m --port 8000 -tp $LEN", "error", ("8192",)),
])
def test_command_pitfalls(command, severity, words):
    findings = lint_text(BASE.format(command=command), "t.yml", use_dstack=False)
    if severity is None:
        assert findings == [], [f.format() for f in findings]
    else:
        assert any(f.severity == severity and all(w in f.problem for w in words) for f in findings), \
            [f.format() for f in findings]


def test_dotted_name_declared_in_env_is_an_expansion_pitfall():
    text = BASE.replace("  - LEN=8192", "  - MAX.LEN=8192").format(command="vllm serve m --port 8000 -tp 1 "
                                                                     "--max-model-len $MAX.LEN")
    found = [(f.severity, f.key, f.problem) for f in lint_text(text, "t.yml", use_dstack=False)]
    assert ("error", "commands[0]", "'$MAX.LEN' expands $MAX followed by the text '.LEN', not the variable "
            "'MAX.LEN' declared in env") in found
    assert any(k == "env[1]" and "not a valid environment variable name" in p for _, k, p in found)


def test_secret_values_and_tgi_default_port():
    text = """\
type: service
name: s
image: ghcr.io/huggingface/text-generation-inference:3.3.5
env:
  - HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz
commands:
  - text-generation-launcher --model-id m --num-shard 2
port: 8000
resources:
  gpu: A100:2
"""
    found = [(f.key, f.problem) for f in lint_text(text, "s.yml", use_dstack=False)]
    assert ("env[0]", "HF_TOKEN holds a secret value in the file") in found
    # the TGI image listens on 80 (PORT=80 in its Dockerfile) unless --port says otherwise
    assert any(k == "port" and "exposes port 8000" in p and "default 80" in p for k, p in found)


def test_lint_cli_exit_codes_and_one_line_per_finding(capsys):
    assert main(["lint", "--no-dstack", str(FIXTURES / "clean-vllm-mi300x.dstack.yml")]) == 0
    capsys.readouterr()
    assert main(["lint", "--no-dstack", str(FIXTURES / "writeup-tgi-mi300x.dstack.yml"),
                 str(FIXTURES / "writeup-vllm-mi300x.dstack.yml")]) == 1
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 7
    for line in lines:
        head, _, rest = line.partition(": error: ")
        assert rest and " — " in rest and head.split(":")[-1].isdigit(), line
    assert "2 file(s): 7 error(s)" in out.err


def test_lint_reports_unreadable_and_non_yaml_files(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("type: task\n  commands: [\n")
    assert has_errors(lint_file(bad, use_dstack=False))
    assert lint_file(tmp_path / "missing.yml")[0].problem.startswith("cannot read it")


# -- secrets: credentials by name, settings by value -------------------------------------------------


def test_the_writeups_own_task_files_report_no_secret_where_there_is_none():
    # the files exactly as published (tests/fixtures/dstack/writeup-original-*.dstack.yml)
    tgi = lint_file(FIXTURES / "writeup-original-tgi.dstack.yml", use_dstack=False)
    assert not [f.format() for f in tgi if "secret" in f.problem or "MAX_TOTAL_TOKEN" in f.problem]
    # its real defects are still each reported
    found = [(f.line, f.key, f.problem) for f in tgi if f.severity == "error"]
    assert has(found, "image", "floating tag 'latest'", line=4)
    assert has(found, "env[6]", "'MAX-INPUT-TOKEN' is not a valid environment variable name", line=13)
    assert has(found, "commands[2]", "expands $MAX followed by the text '-INPUT-TOKEN'", line=18)
    assert has(found, "resources", "TGI needs GPUs but the file declares none")
    vllm = lint_file(FIXTURES / "writeup-original-vllm.dstack.yml", use_dstack=False)
    assert not any("secret" in f.problem for f in vllm)  # HUGGING_FACE_HUB_TOKEN is listed by name


def test_a_token_count_is_a_setting_and_a_token_value_a_secret():
    text = """\
type: task
image: vllm/vllm-openai:v0.11.2
env:
  - MAX_TOTAL_TOKEN=130000
  - MAX_INPUT_TOKEN=125000
  - TOKEN_LIMIT=4096
  - HUGGING_FACE_HUB_TOKEN=abcdef
  - DB_PASSWORD=123456
  - OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwxyz
commands:
  - vllm serve m
ports: [8000]
resources:
  gpu: H100:1
"""
    flagged = {f.key for f in lint_text(text, use_dstack=False) if "secret" in f.problem}
    assert flagged == {"env[3]", "env[4]", "env[5]"}


@pytest.mark.parametrize("name,value,secret", [
    ("HF_TOKEN", "hf_abcdefghijklmnopqrstuvwxyz", True),
    ("HUGGING_FACE_HUB_TOKEN", None, True),
    ("GITHUB_TOKEN", "ghp_x", True),
    ("MAX_TOTAL_TOKEN", "130000", False),
    ("MAX_TOTAL_TOKEN", None, False),  # a count of text tokens, by its name
    ("NUM_TOKEN", "8", False),
    ("HF_TOKEN", "130000", False),  # a credential is never a plain number
    ("HF_TOKEN", "true", False),
    ("DB_PASSWORD", "123456", True),  # a password may be digits
    ("WANDB_API_KEY", "1234", True),
    ("TRUST_REMOTE_CODE", "true", False),
    ("MODEL_ID", "meta-llama/Llama-3.1-405B-Instruct", False),
])
def test_is_secret(name, value, secret):
    from infermeter.secrets import is_secret

    assert is_secret(name, value) is secret


def test_server_settings_take_token_counts_in_env_and_refuse_credentials():
    from infermeter.servers import ServerSettings

    assert ServerSettings(model="m", env={"MAX_TOTAL_TOKEN": "130000"}).env == {"MAX_TOTAL_TOKEN": "130000"}
    with pytest.raises(ValueError, match="HF_TOKEN.*looks like a secret"):
        ServerSettings(model="m", env={"HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz"})


def test_lint_install_hint_shows_the_extra(capsys, monkeypatch):
    import infermeter.servers.dstack_schema as schema

    monkeypatch.setattr(schema, "dstack_version", lambda: None)
    main(["lint", str(FIXTURES / "clean-vllm-mi300x.dstack.yml")])
    err = capsys.readouterr().err
    assert "dstack package is not installed" in err and "infermeter[dstack]" in err
