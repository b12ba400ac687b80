"""LocalServer lifecycle and provenance against a fake server program (a small Python script)."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import textwrap
import time

import pytest

from infermeter.servers import PROFILES, ServerSettings, Vendor
from infermeter.servers.local import LocalServer, ServerLaunchError, log_tail
from infermeter.servers.provenance import gpu_info, redact_command, redact_info

FAKE = textwrap.dedent("""\
    import http.server, json, os, subprocess, sys, time
    args = sys.argv[1:]
    if "--version" in args:
        print("fake-server 1.2.3")
        sys.exit(0)
    record = os.environ.get("FAKE_RECORD")
    if record:
        with open(record, "w") as fh:
            json.dump({"argv": args, "prefix": os.environ.get("PREFIX_CACHING"), "pgid": os.getpgid(0),
                       "pid": os.getpid()}, fh)
    mode = os.environ.get("FAKE_MODE", "ok")
    print("fake server starting", flush=True)
    if mode == "exit":
        print("INFO loading weights", flush=True)
        print("ERROR: unrecognized arguments: --bogus", flush=True)
        sys.exit(3)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.environ["FAKE_CHILD"], "w") as fh:
        fh.write(str(child.pid))
    if mode == "hang":
        time.sleep(600)
    port = int(args[args.index("--port") + 1])
    name = args[args.index("--served-model-name") + 1] if "--served-model-name" in args else "m"

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/health": {}, "/v1/models": {"object": "list", "data": [{"id": name}]},
                    "/version": {"version": "9.9.9"},
                    "/get_server_info": {"version": "0.5.5", "api_key": "sk-secret-value-never-shown-1234567890"},
                    }.get(self.path)
            if body is None:
                self.send_response(404); self.end_headers(); return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        def log_message(self, *a):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
""")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / "fake-server"
    script.write_text(f"#!{sys.executable}\n" + FAKE)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_RECORD", str(tmp_path / "record.json"))
    monkeypatch.setenv("FAKE_CHILD", str(tmp_path / "child.pid"))
    return script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still "exists": read its state
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_start_wait_ready_and_stop_the_whole_process_group(fake, tmp_path):
    port = free_port()
    settings = ServerSettings(model="org/m", port=port, served_model_name="m-served", prefix_caching=True)
    server = LocalServer("vllm", settings, vendor="nvidia", executable=fake, log_path=tmp_path / "srv.log",
                         startup_timeout=30)
    with server:
        assert server.running and server.ready_after_s is not None
        record = json.loads((tmp_path / "record.json").read_text())
        assert record["pgid"] == record["pid"] == server.pid  # its own process group
        assert record["argv"][:2] == ["serve", "org/m"] and "--enable-prefix-caching" in record["argv"]
        child = int((tmp_path / "child.pid").read_text())
        assert alive(child)
        assert server.version() == "9.9.9"  # from /version
        assert server.run_fields() == {"backend": "vllm", "endpoint": "/v1/completions", "ignore_eos": True,
                                       "base_url": f"http://127.0.0.1:{port}", "model": "m-served"}
        prov = server.provenance()
    assert not server.running
    assert wait_dead(child), "the server's child outlived stop()"
    assert prov["backend"] == "vllm" and prov["server_version"] == "9.9.9"
    assert prov["program_version"] == "fake-server 1.2.3"
    assert prov["command"][0] == str(fake) and "--gpu-memory-utilization" in prov["command"]
    assert prov["model"] == {"id": "org/m", "revision": None, "served_as": "m-served"}
    assert prov["secrets_by_name"] == ["HF_TOKEN"] and prov["infermeter_version"]
    assert prov["applied_settings"]["memory_fraction"] == "--gpu-memory-utilization 0.9"
    assert prov["fixed_output_length"] == "ignore_eos + max_tokens"
    assert set(prov["gpu"]) >= {"model", "count", "driver"}
    assert prov["log"] == str(tmp_path / "srv.log")
    assert (tmp_path / "srv.log").read_text().startswith(f"$ {fake} serve org/m ")


def test_tgi_gets_prefix_caching_from_the_environment_and_a_free_metrics_port(fake, tmp_path):
    port = free_port()
    with LocalServer("tgi", ServerSettings(model="org/m", port=port), vendor="amd", executable=fake,
                     startup_timeout=30) as server:
        record = json.loads((tmp_path / "record.json").read_text())
        assert record["prefix"] == "0"
        metrics = int(record["argv"][record["argv"].index("--prometheus-port") + 1])
        assert metrics != port and server.command.metrics_port == metrics


def test_a_server_that_exits_while_starting_gives_one_line_with_the_log_tail(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "exit")
    server = LocalServer("sglang", ServerSettings(model="m", port=free_port()), vendor="nvidia", executable=fake,
                         log_path=tmp_path / "s.log", startup_timeout=30)
    with pytest.raises(ServerLaunchError) as info:
        server.start()
    msg = str(info.value)
    assert "\n" not in msg and info.value.exit_code == 4
    assert "exited with status 3 while starting" in msg
    assert "ERROR: unrecognized arguments: --bogus" in msg and f"(log: {tmp_path / 's.log'})" in msg
    assert not server.running


def test_a_server_that_never_answers_times_out_and_is_killed(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "hang")
    server = LocalServer("vllm", ServerSettings(model="m", port=free_port()), vendor="nvidia", executable=fake,
                         startup_timeout=1.5, stop_timeout=2)
    with pytest.raises(ServerLaunchError, match=r"did not answer /health within 2 s"):
        server.start()
    child = int((tmp_path / "child.pid").read_text())
    assert wait_dead(child)


def test_port_in_use_is_refused_before_starting(fake):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServerLaunchError, match=f"port {port} on 127.0.0.1 is already in use"):
            LocalServer("vllm", ServerSettings(model="m", port=port), vendor="nvidia", executable=fake).start()


def test_sweep_style_start_a_stop_a_start_b(fake, tmp_path):
    port = free_port()
    a = LocalServer("vllm", ServerSettings(model="a", port=port), vendor="nvidia", executable=fake)
    b = LocalServer("sglang", ServerSettings(model="b", port=port), vendor="nvidia", executable=fake)
    with a:
        first = a.pid
    with b:  # the same port is free again
        assert b.pid != first and b.version() == "0.5.5"
        prov = b.provenance()
    assert prov["server_info"]["api_key"] == "<redacted>"  # SGLang's server_args carry the key


def test_missing_program_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no vllm anywhere
    with pytest.raises(ServerLaunchError, match="'vllm' is not on PATH"):
        LocalServer("vllm", ServerSettings(model="m", port=free_port()), vendor="nvidia").start()
    server = LocalServer(PROFILES["vllm"], ServerSettings(model="m", port=free_port()), vendor="nvidia",
                         executable="/nonexistent/vllm")
    with pytest.raises(ServerLaunchError, match="cannot start /nonexistent/vllm"):
        server.start()


def test_vendor_must_suit_the_profile():
    from infermeter.errors import UserError

    with pytest.raises(UserError, match="cannot run on cpu"):
        LocalServer("vllm", ServerSettings(model="m"), vendor=Vendor.CPU)


def test_log_tail_prefers_error_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("$ cmd\ninfo 1\nTraceback (most recent call last):\nValueError: bad flag\ninfo 2\n")
    assert log_tail(log) == "Traceback (most recent call last): | ValueError: bad flag"
    assert log_tail(tmp_path / "none.log") == "no log"


def test_redaction():
    argv = ["vllm", "serve", "m", "--api-key", "sk-abcdefghijklmnopqrstuvwxyz", "--hf-token=hf_abcdefghijklmnopqrstuvwx",
            "--x", "hf_abcdefghijklmnopqrstuvwxyz0"]
    out = redact_command(argv)
    assert "sk-abcdefghijklmnopqrstuvwxyz" not in " ".join(out) and "hf_abc" not in " ".join(out)
    assert out[3:5] == ["--api-key", "<redacted>"] and out[5] == "--hf-token=<redacted>"
    info = redact_info({"version": "1", "server_args": {"api_key": "k", "admin_api_key": None, "port": 1}})
    assert info == {"version": "1", "server_args": {"api_key": "<redacted>", "admin_api_key": None, "port": 1}}


def test_gpu_info_is_unknown_without_smi_tools(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    info = gpu_info()
    assert info["model"] == "unknown" and info["count"] == "unknown" and info["driver"] == "unknown"


def test_stop_is_idempotent_and_leaves_no_process_group(fake, tmp_path):
    server = LocalServer("vllm", ServerSettings(model="m", port=free_port()), vendor="nvidia", executable=fake)
    server.start()
    pid = server.pid
    server.stop()
    server.stop()  # idempotent
    assert wait_dead(pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the group empties once init reaps the killed child
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("processes of the server's group survived stop()")
