"""Result files on disk: names unique per run, no path outside the result folder, a full disk
that keeps every written line whole, one file-mode policy (docs/reliability.md, "Files")."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import time

import pytest

from infermeter.cli.main import main
from infermeter.clients.protocols import OpenAIProtocol
from infermeter.core.prompt import Prompt
from infermeter.core.protocol import RequestOptions
from infermeter.core.outcome import Counters, StopPolicy
from infermeter.core.records import RequestRecord
from infermeter.errors import FieldError, StorageError, UserError
from infermeter.load.generator import LoadRunner
from infermeter.load.schedule import make_plan
from infermeter.reports.markdown import md_text
from infermeter.runner.spec import RunSpec
from infermeter.storage.files import RecordWriter, read_records, write_json_atomic
from infermeter.storage.names import check_result_place, claim, slug, storage_error


def _rec(i: int) -> RequestRecord:
    return RequestRecord(index=i, warmup=False, scheduled=0.0, input_len=4, requested_output_len=2, ok=True)


def _open(path, replace):
    return RecordWriter(path, replace=replace)


# --------------------------------------------------------------------------- unique names
def test_two_runs_with_the_same_generated_name_get_their_own_files(tmp_path):
    first, w1 = claim(tmp_path, "vllm-inf-m-20250101-000000.json", "next", _open)
    w1(_rec(1))
    w1.close()
    second, w2 = claim(tmp_path, "vllm-inf-m-20250101-000000.json", "next", _open)
    w2.close()
    assert first.name == "vllm-inf-m-20250101-000000.json"
    assert second.name == "vllm-inf-m-20250101-000000-2.json"
    assert [r.index for r in read_records(w1.path)] == [1]  # the first run's records are untouched
    assert w2.path.name == "vllm-inf-m-20250101-000000-2.records.jsonl"


def test_a_name_with_only_a_result_file_or_telemetry_is_taken_too(tmp_path):
    (tmp_path / "r.json").write_text("{}")
    (tmp_path / "r-2.telemetry.jsonl").write_text("")
    path, w = claim(tmp_path, "r.json", "next", _open)
    w.close()
    assert path.name == "r-3.json" and (tmp_path / "r.json").read_text() == "{}"


def test_an_explicit_name_that_exists_is_refused_unless_overwrite(tmp_path):
    (tmp_path / "r.json").write_text('{"old": 1}')
    with pytest.raises(UserError, match="--overwrite"):
        check_result_place(tmp_path, "r.json", "refuse")
    with pytest.raises(UserError, match="already there"):
        claim(tmp_path, "r.json", "refuse", _open)
    assert (tmp_path / "r.json").read_text() == '{"old": 1}'
    (tmp_path / "r.records.jsonl").write_text("old line\n")
    path, w = claim(tmp_path, "r.json", "overwrite", _open)
    w.close()
    assert path.name == "r.json" and (tmp_path / "r.records.jsonl").read_bytes() == b""


def test_records_writer_never_opens_an_existing_file_by_default(tmp_path):
    (tmp_path / "x.records.jsonl").write_text("another run's line\n")
    with pytest.raises(FileExistsError):
        RecordWriter(tmp_path / "x.records.jsonl")
    assert (tmp_path / "x.records.jsonl").read_text() == "another run's line\n"


# --------------------------------------------------------------------------- where files go
@pytest.mark.parametrize("name", ["../../x.json", "/tmp/x.json", "sub/x.json", "..", ""])
def test_result_filename_must_be_a_plain_name_inside_the_result_dir(name):
    from infermeter.runner.plan import resolve

    with pytest.raises(FieldError, match="plain file name") as info:
        resolve(RunSpec.from_flat(dict(result_filename=name)))
    assert "output.result_dir" in info.value.fix and info.value.field == "output.result_filename"


def test_result_filename_with_a_path_is_one_line_before_any_server(tmp_path, capsys):
    code = main(["run", "--base-url", "http://127.0.0.1:9", "--model", "m", "--save-result",
                 "--result-dir", str(tmp_path), "--result-filename", "../../escape.json"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "plain file name" in err and "--result-dir" in err
    assert not (tmp_path.parent.parent / "escape.json").exists()


def test_overwrite_with_append_result_is_refused(capsys):
    code = main(["run", "--base-url", "http://127.0.0.1:9", "--model", "m", "--append-result", "--overwrite"])
    assert code == 2 and "contradict" in capsys.readouterr().err


def test_a_result_dir_that_is_a_file_is_a_user_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match="is a file") as info:
        check_result_place(tmp_path / "f" / "deeper", None, "next")
    assert type(info.value) is UserError


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_result_dir_is_a_user_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(UserError, match="not writable"):
        check_result_place(ro, None, "next")


def test_a_read_only_file_system_is_a_user_error_not_a_bug(tmp_path, monkeypatch):
    real = os.open

    def refuse(path, flags, *a, **k):
        if str(path).endswith(".records.jsonl"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(UserError, match="read-only file system") as info:
        claim(tmp_path, "r.json", "next", _open)
    assert "--result-dir" in info.value.fix


def test_storage_errors_name_the_file_and_the_fix(tmp_path):
    err = storage_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path / "r.json")
    assert isinstance(err, StorageError) and err.exit_code == 9
    assert "no space left on device" in str(err) and "r.json" in str(err)
    assert type(storage_error(OSError(errno.EACCES, "x"), tmp_path)) is UserError


# --------------------------------------------------------------------------- server strings in names
def test_slug_is_safe_and_bounded():
    assert slug("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama_Llama-3.1-8B-Instruct"
    evil = slug("\x1b[31mred\x07/../../etc")
    assert evil.isprintable() and "/" not in evil and not evil.startswith(".")
    long_a, long_b = slug("m" * 303 + "a"), slug("m" * 303 + "b")
    assert len(long_a) <= 64 and long_a != long_b  # bounded, and two long names stay apart
    assert slug("") == "model" and slug("..") == "model"


# --------------------------------------------------------------------------- a full disk
def _enospc_after(monkeypatch, lines: int, partial: int = 5):
    """os.write writes ``lines`` whole calls, then ``partial`` bytes of the next, then ENOSPC."""
    real = os.write
    calls = {"n": 0}

    def write(fd, data):
        calls["n"] += 1
        if calls["n"] <= lines:
            return real(fd, data)
        if calls["n"] == lines + 1 and partial:
            return real(fd, bytes(data[:partial]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write)


def test_disk_full_mid_line_cuts_back_to_the_last_whole_line(tmp_path, monkeypatch):
    path = tmp_path / "r.records.jsonl"
    w = RecordWriter(path)
    _enospc_after(monkeypatch, 3)
    for i in range(3):
        w(_rec(i))
    with pytest.raises(OSError) as info:
        w(_rec(3))
    assert info.value.errno == errno.ENOSPC and w.error is info.value
    with pytest.raises(OSError):  # nothing more is written after the error
        w(_rec(4))
    w.close()
    monkeypatch.undo()
    data = path.read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 3  # no torn line
    assert [r.index for r in read_records(path)] == [0, 1, 2] and w.count == 3


class _OneTokenServer:
    """Answers every POST at once with a one-token stream (enough for a LoadRunner)."""

    notes: list = []
    request_id_header = None  # the Transport contract: no request tagging

    async def post(self, path, body, raw):
        raw.sent = raw.headers = time.perf_counter()
        raw.status = 200
        await asyncio.sleep(0.001)
        raw.times.append(time.perf_counter())
        raw.chunks.append(b'data: {"choices":[{"text":" a","finish_reason":"length"}]}\n\ndata: [DONE]\n\n')
        raw.end = time.perf_counter()
        return raw


def test_a_sink_that_fails_stops_the_run_instead_of_hanging():
    """Before: the sink's OSError escaped a loop callback and the drain waited forever."""
    written = []

    def sink(rec):
        if len(written) >= 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(rec.index)

    prompts = [Prompt(text="hi", input_len=1, output_len=1) for _ in range(200)]
    runner = LoadRunner(_OneTokenServer(), OpenAIProtocol(chat=False), RequestOptions(model="m"),
                        make_plan(200, max_concurrency=4), prompts, sink=sink, counters=Counters(),
                        stop_policy=StopPolicy(None, None))

    async def bounded():
        return await asyncio.wait_for(runner.run(), timeout=20)

    outcome = asyncio.run(bounded())
    assert outcome.stopped_early.startswith("records could not be written (No space left on device")
    assert isinstance(runner.sink_error, OSError) and len(written) == 5
    assert sum(1 for r in outcome.records if r.sent is not None) < 200  # it stopped sending


# --------------------------------------------------------------------------- file modes
def test_result_and_records_get_the_same_ordinary_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "r.json", {"a": 1})
        RecordWriter(tmp_path / "r.records.jsonl").close()
        os.umask(0o077)
        write_json_atomic(tmp_path / "private.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "r.records.jsonl").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600  # the umask is respected


# --------------------------------------------------------------------------- Markdown
def test_markdown_text_neutralises_control_characters_like_the_terminal():
    out = md_text("model\x1b]0;pwned\x07\x1b[31m\u202eevil|x")
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert out.startswith("model?]0;pwned??[31m?evil\\|x")
