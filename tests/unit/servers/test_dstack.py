"""The dstack submit / poll / logs / stop path against a fake ``dstack`` CLI (a Python script
that answers like dstack 0.22: ``apply -f F -y -d``, ``run get NAME --json``, ``logs``,
``stop NAME -y``, ``attach``).  The real CLI and server: tests/integration/servers/test_dstack.py."""

from __future__ import annotations

import http.server
import json
import stat
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from infermeter.errors import UserError
from infermeter.servers import PROFILES, ServerSettings
from infermeter.servers.dstack import DstackRun, DstackServer, parse_run

FAKE = textwrap.dedent("""\
    import json, os, sys, time
    state_path = os.environ["FAKE_DSTACK_STATE"]
    state = json.load(open(state_path)) if os.path.exists(state_path) else {"calls": [], "seq": None}
    args = sys.argv[1:]
    state["calls"].append(args)
    def save():
        json.dump(state, open(state_path, "w"))
    cmd = args[0]
    if cmd == "apply":
        if os.environ.get("FAKE_DSTACK_NOENV"):
            save(); print("Environment variable HF_TOKEN is not set", file=sys.stderr); sys.exit(1)
        f = args[args.index("-f") + 1]
        state["applied"] = open(f).read()
        state["cwd"] = os.getcwd()
        state["seq"] = os.environ["FAKE_DSTACK_SEQ"].split(",")
        save(); print("Run submitted, detaching..."); sys.exit(0)
    if cmd == "run":
        status = state["seq"].pop(0) if len(state["seq"]) > 1 else state["seq"][0]
        save()
        doc = {"status": status, "run_spec": {"run_name": args[-2]}, "termination_reason": None, "jobs": [],
               "service": None}
        if status == "failed":
            doc["termination_reason"] = "job_failed"
            doc["jobs"] = [{"job_submissions": [{"status": "failed",
                "termination_reason": "failed_to_start_due_to_no_capacity",
                "termination_reason_message": "No matching fleet found. Possible reasons: https://dstack.ai/docs/guides/troubleshooting/#no-fleets"}]}]
        if status == "running":
            doc["latest_job_submission"] = {"job_provisioning_data": {"backend": "aws", "region": "us-east-1",
                "instance_type": {"resources": {"gpus": [{"name": "MI300X", "memory_mib": 196608, "vendor": "amd"}] * 8}}}}
        print(json.dumps(doc)); sys.exit(0)
    if cmd == "logs":
        save(); print("server log line 1"); print("server log line 2"); sys.exit(0)
    if cmd == "stop":
        state["stopped"] = True; save(); print("Stopped"); sys.exit(0)
    if cmd == "attach":
        save(); time.sleep(600)
    save(); sys.exit(2)
""")


@pytest.fixture
def fake_dstack(tmp_path, monkeypatch):
    script = tmp_path / "dstack"
    script.write_text(f"#!{sys.executable}\n" + FAKE)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    state = tmp_path / "state.json"
    monkeypatch.setenv("FAKE_DSTACK_STATE", str(state))

    def read() -> dict:
        return json.loads(state.read_text())

    return script, read


def settings(port: int = 8080) -> ServerSettings:
    return ServerSettings(model="ggml-org/gemma-3-1b-it-GGUF", max_model_len=512, max_batch=2, port=port, secrets=[])


def test_submit_poll_and_the_failure_message(fake_dstack, tmp_path, monkeypatch):
    script, read = fake_dstack
    monkeypatch.setenv("FAKE_DSTACK_SEQ", "submitted,provisioning,terminating,failed")
    server = DstackServer(PROFILES["llama.cpp"], settings(), "cpu", name="im-cpu", user="root", cpu="x86:2",
                          workdir=tmp_path / "work", dstack_bin=str(script), poll_interval=0.01, startup_timeout=30)
    with pytest.raises(UserError) as info:
        server.start()
    msg = str(info.value)
    assert msg.startswith("dstack run im-cpu failed (job_failed/failed_to_start_due_to_no_capacity): "
                          "No matching fleet found.")
    assert "create a fleet" in info.value.fix
    state = read()
    calls = [c[0] for c in state["calls"]]
    assert calls[0] == "apply" and state["calls"][0] == ["apply", "-f", "im-cpu.dstack.yml", "-y", "-d"]
    assert state["cwd"] == str((tmp_path / "work").resolve())  # dstack wants the file under its cwd
    assert calls.count("run") >= 4 and state["calls"][1] == ["run", "get", "im-cpu", "--json"]
    assert calls[-3:] == ["logs", "stop", "run"] and state["stopped"]  # logs collected, then stopped
    assert server.run.history == ["submitted", "provisioning", "terminating", "failed"]
    assert (tmp_path / "work" / "im-cpu.log").read_text().startswith("server log line 1")
    assert "user: root" in state["applied"] and "cpu: x86:2" in state["applied"]


def test_missing_secret_in_the_submitting_shell(fake_dstack, tmp_path, monkeypatch):
    script, _ = fake_dstack
    monkeypatch.setenv("FAKE_DSTACK_NOENV", "1")
    conf = tmp_path / "t.dstack.yml"
    conf.write_text("type: task\nname: t1\ncommands: [x]\n")
    with pytest.raises(UserError) as info:
        DstackRun(conf, dstack_bin=str(script)).apply()
    assert "Environment variable HF_TOKEN is not set" in str(info.value)
    assert info.value.fix.startswith("export HF_TOKEN in this shell")


class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = json.dumps({"data": [{"id": "m"}]} if self.path == "/v1/models" else
                          {"build_info": "b9014-abc"} if self.path == "/props" else {}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_running_task_is_attached_waited_for_recorded_and_stopped(fake_dstack, tmp_path, monkeypatch):
    script, read = fake_dstack
    monkeypatch.setenv("FAKE_DSTACK_SEQ", "submitted,provisioning,running")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ready)  # stands in for `dstack attach`'s forward
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    try:
        server = DstackServer(PROFILES["llama.cpp"], settings(port), "amd", name="im-amd", workdir=tmp_path / "w",
                              dstack_bin=str(script), poll_interval=0.01, startup_timeout=30)
        with server:
            assert server.running and server.base_url == f"http://127.0.0.1:{port}"
            assert server.version() == "b9014-abc"
            prov = server.provenance()
            assert server.run._attach is not None and server.run._attach.poll() is None
            attach = server.run._attach
        assert attach.poll() is not None  # the port forward ended with the run
    finally:
        httpd.shutdown()
    assert read()["stopped"]
    assert prov["image"] == "ghcr.io/ggml-org/llama.cpp:server-rocm-b9014"
    assert prov["gpu"]["model"] == "MI300X" and prov["gpu"]["count"] == 8 and prov["gpu"]["source"] == "dstack run get"
    assert prov["dstack"]["status_history"] == ["submitted", "provisioning", "running"]
    assert prov["command"][0] == "/app/llama-server"


def test_parse_run_reads_the_real_documents_shape():
    doc = json.loads((Path(__file__).resolve().parents[2] / "fixtures" / "dstack" / "run-get-failed.json").read_text())
    state = parse_run(doc)
    assert state.name == "im-cpu-test" and state.status == "failed" and state.finished
    assert state.reason == "job_failed/failed_to_start_due_to_no_capacity"
    assert state.message.startswith("No matching fleet found")


def test_run_without_name_is_refused(tmp_path):
    conf = tmp_path / "x.dstack.yml"
    conf.write_text("type: task\ncommands: [x]\n")
    with pytest.raises(UserError, match="has no 'name'"):
        DstackRun(conf, dstack_bin="/bin/true")
