"""EmbeddedServer lifecycle against a fake llama-server (a small Python script)."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from infermeter.embedded.models import ModelFiles
from infermeter.embedded.server import EmbeddedServer, default_ctx_size
from infermeter.errors import EngineError, UserError

FAKE = textwrap.dedent("""\
    import http.server, json, os, subprocess, sys, time
    args = sys.argv[1:]
    mode = os.environ.get("FAKE_MODE", "ok")
    if "--help" in args:
        print("-np, --parallel N\\n-cb, --cont-batching\\n-kvu, --kv-unified, -no-kvu, --no-kv-unified\\n"
              "--ui, --webui, --no-ui, --no-webui\\n--metrics")
        sys.exit(0)
    if "--version" in args:
        print("version: 99 (fake123)", file=sys.stderr)
        sys.exit(0)
    print("fake llama-server starting", flush=True)
    if mode == "crash":
        print("llama_model_load: error loading model: tensor 'x' has wrong shape", flush=True)
        print("main: exiting due to model loading error", flush=True)
        sys.exit(1)
    if mode == "hang":
        time.sleep(600)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.environ["FAKE_PIDS"], "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    port = int(args[args.index("--port") + 1])
    argv = args
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/health": {"status": "ok"},
                    "/props": {"default_generation_settings": {"n_ctx": 1024}, "argv": argv}}.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(json.dumps(body or {}).encode())
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
""")


@pytest.fixture()
def fake_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "llama-server"
    script.write_text(f"#!{sys.executable}\n" + FAKE)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_PIDS", str(tmp_path / "pids"))
    return script


@pytest.fixture()
def model(tmp_path: Path) -> ModelFiles:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    return ModelFiles(name="fake", gguf=gguf, tokenizer_dir=None, model_id="infermeter-fake",
                      n_ctx_train=32768, n_params=1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_default_ctx_size(model: ModelFiles) -> None:
    assert default_ctx_size(model, 1) == 4096
    assert default_ctx_size(model, 4) == 16384
    assert default_ctx_size(model, 64) == 65536
    small = ModelFiles(**{**model.__dict__, "n_ctx_train": 2048})
    assert default_ctx_size(small, 2) == 4096


def test_bad_arguments_are_user_errors(model: ModelFiles) -> None:
    with pytest.raises(UserError):
        EmbeddedServer(model, parallel=0)
    with pytest.raises(UserError):
        EmbeddedServer(model, parallel=8, ctx_size=1024)


def test_start_props_stop(fake_binary: Path, model: ModelFiles, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = EmbeddedServer(model, parallel=3, threads=2, binary=fake_binary, log_path=log,
                            extra_args=["--foo", "1"])
    with server:
        assert server.running
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        argv = server.command
        assert argv[0] == str(fake_binary)
        for flag, value in [("--model", str(model.gguf)), ("--alias", "infermeter-fake"),
                            ("--parallel", "3"), ("--ctx-size", "12288"), ("--threads", "2"),
                            ("--port", str(server.port)), ("--host", "127.0.0.1")]:
            assert argv[argv.index(flag) + 1] == value
        for flag in ("--metrics", "--cont-batching", "--no-kv-unified", "--no-webui"):
            assert flag in argv
        assert argv[-2:] == ["--foo", "1"]
        assert server.props()["argv"] == argv[1:]
        assert server.slot_ctx == 1024
        assert server.version == "99 (fake123)"
        prov = server.provenance()
        assert prov["command"] == argv and prov["build"] is None
        assert prov["model"]["gguf"] == str(model.gguf) and prov["ctx_size"] == 12288
        json.dumps(prov)
        server_pid, child_pid = map(int, (tmp_path / "pids").read_text().split())
        assert server.pid == server_pid
        assert _alive(server_pid) and _alive(child_pid)
    assert not server.running and server.pid is None
    deadline = time.monotonic() + 5
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(server_pid)
    assert not _alive(child_pid), "a child of the server outlived stop()"
    assert "fake llama-server starting" in log.read_text()
    server.stop()  # idempotent


def test_crash_during_startup_names_the_reason_and_log(fake_binary: Path, model: ModelFiles,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "crash")
    server = EmbeddedServer(model, binary=fake_binary)
    with pytest.raises(EngineError) as info:
        server.start()
    message = str(info.value)
    assert "error loading model" in message
    assert str(server.log_path) in message
    assert "exited with status 1" in message
    assert "\n" not in message
    assert not server.running


def test_startup_timeout_stops_the_process(fake_binary: Path, model: ModelFiles,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "hang")
    server = EmbeddedServer(model, binary=fake_binary, startup_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(EngineError) as info:
        server.start()
    assert "not ready within 1 s" in str(info.value)
    assert time.monotonic() - started < 15
    assert not server.running


def test_missing_model_file(fake_binary: Path, model: ModelFiles) -> None:
    model.gguf.unlink()
    with pytest.raises(EngineError) as info:
        EmbeddedServer(model, binary=fake_binary).start()
    assert "does not exist" in str(info.value)


def test_sigterm_ignored_falls_back_to_sigkill(tmp_path: Path, model: ModelFiles,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "stubborn"
    script.write_text(f"#!{sys.executable}\n" + FAKE.replace(
        "import http.server,", "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\nimport http.server,"))
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_PIDS", str(tmp_path / "pids"))
    server = EmbeddedServer(model, binary=script).start()
    pid = server.pid
    assert pid is not None
    started = time.monotonic()
    server.stop(timeout=0.5)
    assert time.monotonic() - started < 10
    assert not _alive(pid)
    json.dumps(server.command)  # provenance is plain data


def _wait_dead(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_dropped_server_is_stopped_by_its_finalizer(fake_binary: Path, model: ModelFiles) -> None:
    import gc

    server = EmbeddedServer(model, binary=fake_binary).start()
    pid = server.pid
    assert pid is not None and _alive(pid)
    del server
    gc.collect()
    assert _wait_dead(pid)


def test_server_dies_with_a_killed_parent(fake_binary: Path, model: ModelFiles, tmp_path: Path) -> None:
    """Even SIGKILL of the Python process (no finalizers) does not leave the server behind."""
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from infermeter.embedded.models import ModelFiles
        from infermeter.embedded.server import EmbeddedServer
        m = ModelFiles(name="fake", gguf=Path({str(model.gguf)!r}), tokenizer_dir=None,
                       model_id="m", n_ctx_train=4096, n_params=1)
        s = EmbeddedServer(m, binary={str(fake_binary)!r}).start()
        print(s.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ})
    assert out.returncode == -9, out.stderr
    pid = int(out.stdout.split()[0])
    try:
        assert _wait_dead(pid)
    finally:  # the fake's own child is not covered by the parent-death signal: end it here
        child = int((tmp_path / "pids").read_text().split()[1])
        try:
            os.kill(child, 9)
        except ProcessLookupError:
            pass
