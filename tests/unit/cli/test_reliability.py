"""Reliability without a server: bad input, settings fuzzing, secrets, terminal safety,
crash-safe files, open-file limits (docs/reliability.md lists what each test covers)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from infermeter.cli.main import main
from infermeter.core.exchange import ErrorClass, RawExchange
from infermeter.clients.protocols import OpenAIProtocol, TGIProtocol
from infermeter.core.protocol import RequestOptions
from infermeter.clients.sse import MAX_EVENT_BYTES
from infermeter.cli.options import worded_for_cli
from infermeter.errors import FieldError, UserError, safe_text, user_error_from_validation
from infermeter.core.records import RequestRecord
from infermeter.runner.plan import resolve
from infermeter.runner.spec import FIELD_SECTION, SECTIONS, RunSpec
from infermeter.secrets import api_key_from, check_headers, parse_headers, redact_argv, redact_headers
from infermeter.storage.files import RecordWriter, read_records, write_json_atomic


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# --------------------------------------------------------------------------- bad input, one line, before load
BAD = [
    (["--num-promts", "5"], "unrecognized arguments: --num-promts"),
    (["--num-prompts", "0"], "--num-prompts 0 must be at least 1"),
    (["--num-prompts", "-5"], "--num-prompts -5 must be at least 1"),
    (["--num-prompts", "1000000000000"], "--num-prompts 1000000000000 is out of range"),
    (["--request-rate", "-1"], "--request-rate -1 must be positive"),
    (["--request-rate", "nan"], "--request-rate nan must be positive"),
    (["--max-concurrency", "0"], "--max-concurrency 0 must be at least 1"),
    (["--max-concurrency", "many"], "argument --max-concurrency: invalid int value: 'many'"),
    (["--burstiness", "0"], "--burstiness 0 must be positive"),
    (["--warmup-requests", "-1"], "--warmup-requests -1 is negative"),
    (["--request-timeout", "0"], "--request-timeout 0 must be positive"),
    (["--stall-timeout", "-1"], "--stall-timeout -1 must be positive"),
    (["--max-errors", "-1"], "--max-errors -1 is negative"),
    (["--max-error-rate", "1.5"], "--max-error-rate 1.5 must be between 0 and 1"),
    (["--metric-percentiles", "50,100"], "--metric-percentiles '50,100' must be numbers between 0 and 100"),
    (["--metric-percentiles", "p99"], "is not a list of numbers"),
    (["--percentile-metrics", "ttft,foo"], "names unknown metrics"),
    (["--goodput", "ttft"], "--goodput 'ttft' is not NAME:MS"),
    (["--goodput", "ttft:-5"], "must be positive"),
    (["--goodput", "speed:5"], "--goodput metric 'speed' is not supported"),
    (["--metadata", "novalue"], "--metadata 'novalue' is not KEY=VALUE"),
    (["--extra-body", "{bad"], "argument --extra-body: invalid JSON value"),
    (["--extra-body", "[1]"], "--extra-body must be a JSON object"),
    (["--header", "no-separator"], "--header 'no-separator' is not KEY=VALUE"),
    (["--header", "X-A: b\r\nX-Injected: 1"], "has a value with control characters"),
    (["--header", "Bad Name: v"], "is not a valid HTTP header name"),
    (["--engine-parallel", "0"], "--engine-parallel 0 must be at least 1"),
    (["--port", "70000"], "--port 70000 is not a TCP port"),
    (["--temperature", "-1"], "--temperature -1 must be 0 or more"),
    (["--top-p", "1.5"], "--top-p 1.5 must be in (0, 1]"),
    (["--seed", "-1"], "--seed -1 must be a whole number >= 0"),
    (["--random-input-len", "-3"], "--random-input-len -3 must be at least 0"),
    (["--random-output-len", "0"], "--random-output-len 0 must be at least 1"),
    (["--dataset-name", "imagenet"], "--dataset-name 'imagenet' is not a choice"),
    (["--dataset-name", "sharegpt"], "--dataset-name sharegpt needs --dataset-path"),
    (["--backend", "nope"], "--backend 'nope' is not known"),
    (["--arrival", "weibull", "--request-rate", "5"], "argument --arrival: invalid choice: 'weibull'"),
    (["--tokenizer", "/nonexistent/tokenizer"], "tokenizer '/nonexistent/tokenizer' is not a local folder"),
    (["--base-url", "localhost:8000"], "has no http:// or https:// scheme"),
    (["--base-url", "http://"], "has no host"),
]


@pytest.mark.parametrize("args,text", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_before_any_server_is_contacted(tokenizer_dir, tmp_path, capsys, args, text):
    argv = ["run", "--base-url", closed_url(), "--tokenizer", str(tokenizer_dir), "--disable-tqdm",
            "--result-dir", str(tmp_path / "out"), *args]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err  # a usage error, not 3: nothing tried to reach the (closed) server
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("infermeter: error: ") and " — " in lines[0]
    assert text in lines[0]
    assert not (tmp_path / "out").exists()


def test_unreachable_url_is_a_target_error(tokenizer_dir, capsys):
    code = main(["run", "--base-url", closed_url(), "--tokenizer", str(tokenizer_dir), "--num-prompts", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 3 and "cannot reach" in err and len(err.splitlines()) == 1


def test_a_validation_error_from_runspec_is_one_line(monkeypatch, capsys):
    import infermeter.cli.run_cmd as run_cmd

    def bad_spec(**kw):
        return RunSpec.from_flat({**kw, "num_prompts": "many"})

    monkeypatch.setattr(run_cmd, "runspec_from_flags", lambda fields: bad_spec(**fields))
    code = main(["run", "--base-url", "http://127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("infermeter: error: --num-prompts 'many': Input should be a valid integer")


def test_an_internal_error_is_one_line_exit_1(monkeypatch, capsys):
    import infermeter.runner.execute as session

    def boom(*a, **kw):
        raise RuntimeError("kaput\n\x1b[31mred")

    monkeypatch.setattr(session, "execute_run", boom)
    code = main(["run", "--base-url", "http://127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "\x1b" not in err
    assert "internal error: RuntimeError: kaput ?[31mred" in err and "INFERMETER_DEBUG=1" in err


def test_a_wrong_type_names_the_field_and_the_cli_names_the_flag():
    from infermeter.cli.options import worded_for_cli

    with pytest.raises(FieldError) as info:
        RunSpec.from_flat({"save_generated_text": "perhaps", "telemetry": "maybe"})
    assert info.value.field == "output.save_generated_text"
    assert str(info.value).startswith("output.save_generated_text 'perhaps': Input should be a valid boolean")
    err = worded_for_cli(info.value)
    assert str(err).startswith("--save-detailed 'perhaps': Input should be a valid boolean")
    assert "(and 1 more problem)" in str(err) and err.exit_code == 2
    with pytest.raises(FieldError) as info:
        RunSpec.from_flat({"bogus": 1})
    assert str(worded_for_cli(info.value)).startswith("unknown setting 'bogus'") and info.value.field == "bogus"


def test_user_error_from_validation_names_the_field():
    from pydantic import BaseModel, ConfigDict

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        max_model_len: int = 1

    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"max_model_len": "long", "bogus": 1})
    err = user_error_from_validation(info.value)
    assert str(err).startswith("--max-model-len 'long': Input should be a valid integer")
    assert "(and 1 more problem)" in str(err) and err.exit_code == 2
    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"bogus": 1})
    assert str(user_error_from_validation(info.value)).startswith("unknown setting 'bogus'")


# --------------------------------------------------------------------------- RunSpec fuzz
FIELDS = list(FIELD_SECTION)
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(["inf", "nan", "-1", "0", "1e400", "http://x", "10000000000000000000000"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
INTS = st.integers(-3, 70000) | st.integers() | st.sampled_from([0, 1, -1, 2**63, 10**9])
FLOATS = st.floats() | st.floats(-2, 10) | st.sampled_from([0.0, 1.0, -1.0, math.inf, math.nan])
TEXTS = {
    "backend": st.sampled_from(["vllm", "tgi", "openai-chat", "llama.cpp", "nope"]),
    "base_url": st.sampled_from(["http://127.0.0.1:8000", "https://h/v1", "localhost:8000", "http://", "ftp://x"]),
    "dataset_name": st.sampled_from(["random", "sonnet", "sharegpt", "jsonl", "custom", "imagenet"]),
    "arrival": st.sampled_from(["poisson", "gamma", "constant", "weibull"]),
    "percentile_metrics": st.sampled_from(["ttft,tpot,itl,e2el", "ttft", "", "foo", "ttft,,e2el"]),
    "metric_percentiles": st.sampled_from(["50,90,99", "99.9", "0", "100", "abc", "", "1e400", "nan"]),
}


def _field_values(name: str, annotation) -> st.SearchStrategy:
    text = str(annotation)
    if name in TEXTS:
        typed = TEXTS[name] | st.text(max_size=12)
    elif name in ("goodput",):
        typed = st.lists(st.sampled_from(["ttft:500", "tpot:-1", "e2el", "speed:5", "ttft:nan", "x:1,y:2"]))
    elif name in ("headers", "metadata"):
        typed = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
    elif name == "extra_body":
        typed = st.dictionaries(st.text(max_size=8), JUNK, max_size=3)
    elif "bool" in text:
        typed = st.booleans()
    elif "int" in text:
        typed = INTS
    elif "float" in text:
        typed = FLOATS
    else:
        typed = st.text(max_size=12)
    return typed | st.none() if "None" in text else typed


SPEC_DICTS = st.fixed_dictionaries(
    {}, optional={name: _field_values(name, f.annotation) for section in SECTIONS.values()
                  for name, f in section.model_fields.items()}
) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), JUNK, max_size=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SPEC_DICTS)
def test_runspec_validation_never_fails_any_other_way(data):
    try:
        plan = resolve(RunSpec.from_flat(data))
    except UserError as exc:
        str(exc)  # and the message itself can be built
        if isinstance(exc, FieldError):
            str(worded_for_cli(exc))
        return
    ld = plan.spec.load
    assert ld.num_prompts >= 1 and (ld.max_concurrency is None or ld.max_concurrency >= 1)
    assert not math.isnan(ld.request_rate) and ld.request_rate > 0


# --------------------------------------------------------------------------- terminal safety
def test_safe_text_neutralises_control_characters():
    s = safe_text("a\x1b[31mb\x07c\r\nd\te\u202ef\x00g\x9bh")
    assert s == "a?[31mb?c d e?f?g?h"
    assert safe_text("x" * 50, limit=10) == "x" * 10 + "..."


def test_summary_escapes_markup_and_controls():
    from infermeter.cli.summary import _safe

    assert _safe("[red]x[/red]\x1b") == "\\[red]x\\[/red]?"


# --------------------------------------------------------------------------- secrets
def test_api_key_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("IM_KEY", "  sk-abc \n")
    assert api_key_from("IM_KEY") == "sk-abc"
    monkeypatch.setenv("IM_KEY", "")
    assert api_key_from("IM_KEY") is None
    f = tmp_path / "k"
    f.write_text("sk-file\n")
    assert api_key_from("IM_KEY", str(f)) == "sk-file"  # the file wins
    with pytest.raises(UserError, match="cannot read --api-key-file"):
        api_key_from(None, str(tmp_path / "missing"))


def test_a_malformed_key_is_refused_without_showing_it(tmp_path, monkeypatch):
    monkeypatch.setenv("IM_KEY", "sk-one\nsk-two")
    with pytest.raises(UserError) as info:
        api_key_from("IM_KEY")
    assert "sk-one" not in str(info.value) and "$IM_KEY" in str(info.value)
    f = tmp_path / "k"
    f.write_text("sk-a sk-b")
    with pytest.raises(UserError) as info:
        api_key_from(None, str(f))
    assert "sk-a" not in str(info.value)


def test_headers_are_checked_and_redacted():
    assert parse_headers(["X-Team: infra", "X-Other=1"]) == {"X-Team": "infra", "X-Other": "1"}
    with pytest.raises(UserError):
        check_headers({"X-A": "v\nX-B: w"})
    with pytest.raises(UserError):
        check_headers({"X A": "v"})
    assert redact_headers({"Authorization": "Bearer s", "X-Auth-Token": "s", "X-Goog-Api-Key": "s",
                           "Cookie": "s", "X-Team": "infra"}) == {
        "Authorization": "<redacted>", "X-Auth-Token": "<redacted>", "X-Goog-Api-Key": "<redacted>",
        "Cookie": "<redacted>", "X-Team": "infra"}


def test_redact_argv_drops_every_header_value_and_url_password():
    argv = ["infermeter", "run", "--header", "Authorization: Bearer s1", "-HX-Key=s2", "--header=X: s3",
            "-H", "a=s4", "--base-url=http://u:s5@h:1/x", "http://u:s6@h", "-H", "noseparator-s7"]
    out = " ".join(redact_argv(argv))
    for i in range(1, 8):
        assert f"s{i}" not in out
    assert "Authorization: <redacted>" in out and "-HX-Key: <redacted>" in out and "http://h:1/x" in out


# --------------------------------------------------------------------------- crash-safe files
def test_write_json_atomic_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"v": 1})

    def fail(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_json_atomic(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_records_are_whole_lines_and_a_torn_tail_is_skipped(tmp_path):
    path = tmp_path / "r.records.jsonl"
    with RecordWriter(path) as w:
        for i in range(3):
            w(RequestRecord(index=i, warmup=False, scheduled=0.0, input_len=4, requested_output_len=2,
                            ok=True, error_detail="x" * 100_000))
    assert path.read_bytes().count(b"\n") == 3
    with open(path, "ab") as fh:
        fh.write(b'{"index": 3, "warmup": fal')  # what a power cut could leave
    assert [r.index for r in read_records(path)] == [0, 1, 2]


def test_a_short_write_still_ends_as_a_whole_line(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))  # 7 bytes per call
    path = tmp_path / "r.records.jsonl"
    with RecordWriter(path) as w:
        for i in range(2):
            w(RequestRecord(index=i, warmup=False, scheduled=0.0, input_len=4, requested_output_len=2))
    monkeypatch.undo()
    assert [r.index for r in read_records(path)] == [0, 1]


# --------------------------------------------------------------------------- protocol details
def _rec() -> RequestRecord:
    return RequestRecord(index=0, warmup=False, scheduled=0.0, input_len=4, requested_output_len=4)


def test_retry_after_is_recorded():
    raw = RawExchange(status=429, sent=1.0, headers=1.1, end=1.2, error=ErrorClass.HTTP_429, retry_after="7",
                      chunks=[b'{"error": {"message": "slow down"}}'], times=[1.2])
    rec = _rec()
    OpenAIProtocol(chat=False).interpret(raw, rec, RequestOptions(model="m"))
    assert rec.error == "http_429" and rec.retry_after == "7" and rec.error_detail == "slow down"
    assert RequestRecord.from_json(rec.to_json()).retry_after == "7"


@pytest.mark.parametrize("proto,token", [
    (OpenAIProtocol(chat=False), b'data: {"choices": [{"text": " a"}]}\n\n'),
    (TGIProtocol(), b'data:{"token": {"text": " a", "special": false}}\n\n'),
])
def test_an_oversized_event_keeps_the_timings_before_it(proto, token):
    big = b"data: " + b"x" * (MAX_EVENT_BYTES + 1) + b"\n\n"
    raw = RawExchange(status=200, sent=1.0, headers=1.1, end=2.0, times=[1.2, 1.3, 1.4],
                      chunks=[token, token, big])
    rec = _rec()
    proto.interpret(raw, rec, RequestOptions(model="m"))
    assert rec.error == "oversized" and not rec.ok
    assert rec.token_times == [1.2, 1.3] and rec.first_token == 1.2 and rec.output_events == 2


# --------------------------------------------------------------------------- open-file limit
def _in_child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_open_file_limit_is_raised_when_the_load_needs_it():
    proc = _in_child(
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from infermeter.runner.limits import ensure_open_files\n"
        "assert ensure_open_files(64) is None\n"
        "note = ensure_open_files(1000)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], note)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("1128 open-file limit raised from 256 to 1128")


def test_too_low_a_hard_limit_is_a_one_line_error_naming_ulimit(tokenizer_dir):
    proc = _in_child(
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))\n"
        "from infermeter.cli.main import main\n"
        f"sys.exit(main(['run', '--base-url', '{closed_url()}', '--tokenizer', {str(tokenizer_dir)!r},\n"
        "                '--num-prompts', '5000', '--max-concurrency', '5000']))\n")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--max-concurrency 5000 need about 5128 open files" in lines[0]
    assert "ulimit -n 5128" in lines[0]
