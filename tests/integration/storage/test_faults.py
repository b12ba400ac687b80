"""Result files end to end against the in-tree test server: no run replaces another's files,
a full disk neither hangs nor tears a line, user mistakes about the result folder are one line,
and server-supplied model names cannot break file names (docs/reliability.md, "Files")."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from infermeter.cli import options
from infermeter.cli.main import main
from infermeter.runner import session
from infermeter.storage.files import read_records

pytestmark = pytest.mark.integration

N = 12


def args(base_url, tokenizer_dir, *extra, model: str | None = "test-model") -> list[str]:
    return ["run", "--base-url", base_url, *(["--model", model] if model else []), "--tokenizer",
            str(tokenizer_dir), "--random-input-len", "16", "--random-output-len", "4", "--ignore-eos",
            "--num-prompts", str(N), "--max-concurrency", "4", "--disable-tqdm", "--no-telemetry", *extra]


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("infermeter:")]
    assert len(lines) == 1, err
    assert "internal error" not in err and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def same_second(monkeypatch):
    """Every generated name gets the same date: two runs "started in the same second"."""
    monkeypatch.setattr(options, "date_stamp", lambda: "20250101-000000")


# --------------------------------------------------------------------------- no run replaces another's files
def test_two_identical_runs_in_the_same_second_keep_both_runs_files(test_server, tokenizer_dir, tmp_path,
                                                                     same_second, capsys):
    server = test_server(ttft_ms=2, itl_ms=1)
    for _ in range(2):
        assert main(args(server.base_url, tokenizer_dir, "--save-result", "--result-dir", str(tmp_path))) == 0
    out = capsys.readouterr().out.replace("\n", "")  # long paths are wrapped
    results = sorted(p.name for p in tmp_path.glob("*.json"))
    assert results == ["openai-infqps-concurrency4-test-model-20250101-000000-2.json",
                       "openai-infqps-concurrency4-test-model-20250101-000000.json"]
    for name in results:  # each run printed its own path, and each kept all its records
        assert name in out
        assert len(list(read_records(tmp_path / name.replace(".json", ".records.jsonl")))) == N


def test_unsaved_runs_in_the_same_second_never_overwrite(test_server, tokenizer_dir, tmp_path, same_second,
                                                         monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    server = test_server(ttft_ms=2, itl_ms=1)
    for _ in range(2):  # the second with the same explicit name, which without --save-result is not refused
        assert main(args(server.base_url, tokenizer_dir, "--result-filename", "r.json")) == 0
    unsaved = tmp_path / "cache" / "infermeter" / "unsaved-runs"
    assert sorted(p.name for p in unsaved.glob("*.records.jsonl")) == ["r-2.records.jsonl", "r.records.jsonl"]
    assert all(len(list(read_records(p))) == N for p in unsaved.glob("*.records.jsonl"))


def test_an_existing_result_filename_is_refused_unless_overwrite(test_server, tokenizer_dir, tmp_path, capsys):
    server = test_server(ttft_ms=2, itl_ms=1)
    flags = ("--save-result", "--result-dir", str(tmp_path), "--result-filename", "r.json")
    assert main(args(server.base_url, tokenizer_dir, *flags)) == 0
    first = (tmp_path / "r.json").read_text()
    served = server.stats()["count"]
    capsys.readouterr()
    assert main(args(server.base_url, tokenizer_dir, *flags)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "r.json is already there" in line and "--overwrite" in line
    assert (tmp_path / "r.json").read_text() == first and server.stats()["count"] == served  # nothing sent
    assert main(args(server.base_url, tokenizer_dir, *flags, "--overwrite")) == 0
    assert (tmp_path / "r.json").read_text() != first
    assert len(list(read_records(tmp_path / "r.records.jsonl"))) == N  # replaced, not appended


def test_append_result_appends_a_line_per_run_as_vllm_does(test_server, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    server = test_server(ttft_ms=2, itl_ms=1)
    flags = ("--append-result", "--result-dir", str(tmp_path / "out"), "--result-filename", "r.json")
    for _ in range(2):
        assert main(args(server.base_url, tokenizer_dir, *flags)) == 0
    lines = (tmp_path / "out" / "r.json").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["completed"] == N for line in lines)


# --------------------------------------------------------------------------- a full disk
# os.write fails with ENOSPC on the records file after 3 lines (the 4th half written): what a
# small tmpfs does, without root.
DISK_FULL = """
import errno, os, sys
real, n = os.write, [0]
def write(fd, data):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        target = ""
    if target.endswith(".records.jsonl"):
        n[0] += 1
        if n[0] == 4:
            return real(fd, bytes(data[:5]))
        if n[0] > 4:
            raise OSError(errno.ENOSPC, "No space left on device")
    return real(fd, data)
os.write = write
from infermeter.cli.main import main
sys.exit(main())
"""


def test_disk_full_mid_run_stops_within_seconds_with_one_line_and_whole_lines(test_server, tokenizer_dir,
                                                                            tmp_path):
    server = test_server(ttft_ms=5, itl_ms=5)
    cli = [sys.executable, "-c", DISK_FULL,
           *args(server.base_url, tokenizer_dir, "--save-result", "--result-dir", str(tmp_path),
                 "--result-filename", "r.json")]
    cli[cli.index("--num-prompts") + 1] = "2000"  # about 10 s of load: the run must stop long before
    t0 = time.monotonic()
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 9, proc.stderr
    line = one_error_line(proc.stderr)
    assert "no space left on device writing" in line and "r.records.jsonl" in line
    data = (tmp_path / "r.records.jsonl").read_bytes()
    assert data.count(b"\n") == 3 and data.endswith(b"\n")  # every line written is whole
    assert [json.loads(x)["index"] for x in data.splitlines()] == [r.index for r in
                                                                   read_records(tmp_path / "r.records.jsonl")]
    result = json.loads((tmp_path / "r.json").read_text())  # here the disk took the result itself
    assert result["infermeter"]["stopped_early"].startswith("records could not be written")
    assert result["infermeter"]["records_incomplete"]["written"] == 3
    assert server.stats()["count"] < 2000


def test_disk_full_at_the_result_write_prints_the_summary_and_keeps_the_records(test_server, tokenizer_dir,
                                                                              tmp_path, monkeypatch, capsys):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(session, "write_json_atomic", full)
    server = test_server(ttft_ms=2, itl_ms=1)
    code = main(args(server.base_url, tokenizer_dir, "--save-result", "--result-dir", str(tmp_path),
                     "--result-filename", "r.json"))
    out, err = capsys.readouterr()
    assert code == 9
    assert "Successful requests" in out and "r.json (NOT WRITTEN)" in out  # the summary anyway
    line = one_error_line(err)
    assert "no space left on device writing" in line and "r.json" in line
    assert len(list(read_records(tmp_path / "r.records.jsonl"))) == N


# --------------------------------------------------------------------------- user mistakes are not bugs
def test_a_result_dir_that_is_a_file_is_one_line(test_server, tokenizer_dir, tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    server = test_server(ttft_ms=2, itl_ms=1)
    code = main(args(server.base_url, tokenizer_dir, "--save-result", "--result-dir", str(tmp_path / "taken")))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and "is a file" in line and "--result-dir" in line
    assert server.stats()["count"] == 0  # refused before the load


def test_a_read_only_result_dir_is_one_line(test_server, tokenizer_dir, tmp_path, monkeypatch, capsys):
    real = os.open

    def read_only(path, flags, *a, **k):  # a read-only mount, as root sees it too
        if str(path).startswith(str(tmp_path / "ro")) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(path, flags, *a, **k)

    (tmp_path / "ro").mkdir()
    if os.geteuid() != 0:
        os.chmod(tmp_path / "ro", 0o500)
    monkeypatch.setattr(os, "open", read_only)
    server = test_server(ttft_ms=2, itl_ms=1)
    code = main(args(server.base_url, tokenizer_dir, "--save-result", "--result-dir", str(tmp_path / "ro")))
    line = one_error_line(capsys.readouterr().err)
    assert code == 2 and ("read-only file system" in line or "not writable" in line)
    assert server.stats()["count"] == 0


@pytest.mark.parametrize("name", ["m" * 304, "evil\x1b[31m/../../x\x07"], ids=["304-chars", "escapes"])
def test_a_server_model_name_cannot_break_file_names(test_server, tokenizer_dir, tmp_path, capsys, name):
    server = test_server(ttft_ms=2, itl_ms=1, model=name)
    code = main(args(server.base_url, tokenizer_dir, "--save-result", "--result-dir", str(tmp_path), model=None))
    assert code == 0, capsys.readouterr().err
    files = [p.name for p in tmp_path.iterdir()]
    assert len(files) == 2 and all(len(f) <= 160 and f.isprintable() and "/" not in f for f in files), files
    result = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert result["infermeter"]["target"]["served_models"] == [name]  # the name itself is kept, as data


def test_a_sweep_stops_at_a_full_disk_with_one_line(test_server, tokenizer_dir, tmp_path, monkeypatch, capsys):
    import yaml

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(session, "write_json_atomic", full)  # the cells' result JSON
    server = test_server(ttft_ms=2, itl_ms=1)
    spec = {"name": "t", "output_dir": str(tmp_path / "exp"),
            "targets": {"a": {"url": server.base_url, "backend": "vllm", "model": "test-model",
                              "tokenizer": str(tokenizer_dir)}},
            "workloads": {"rnd": {"dataset": "random", "random_input_len": 16, "random_output_len": 4}},
            "load": {"burst": [2, 4]}, "options": {"ignore_eos": True}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    t0 = time.monotonic()
    code = main(["sweep", str(tmp_path / "spec.yaml"), "--disable-tqdm"])
    assert code == 9 and time.monotonic() - t0 < 60
    line = one_error_line(capsys.readouterr().err)
    assert "no space left on device writing" in line and "result.json" in line
    assert server.stats()["count"] == 2  # the second cell never ran
