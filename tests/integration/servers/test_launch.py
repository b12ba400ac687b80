"""The llama.cpp launch profile as a local process: the embedded engine's llama-server and
tiny model, started, waited for, measured and stopped by ``LocalServer`` and ``infermeter serve``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from infermeter.runner.execute import execute_run
from infermeter.runner.spec import RunSpec
from infermeter.servers import LocalServer, ServerSettings
from infermeter.servers.local import ServerLaunchError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine():
    from infermeter.embedded.build import ensure_llama_server
    from infermeter.embedded.models import ensure_model

    return ensure_llama_server(), ensure_model("tiny")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=10) as resp:
        return json.loads(resp.read())


def answers(url: str) -> bool:
    try:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=2).close()
        return True
    except OSError:
        return False


def test_launch_measure_and_stop_llama_server(engine, tmp_path):
    binary, model = engine
    settings = ServerSettings(model=str(model.gguf), served_model_name=model.model_id, max_model_len=512,
                              max_batch=3, max_batched_tokens=256, port=free_port())
    server = LocalServer("llama.cpp", settings, vendor="cpu", executable=binary, log_path=tmp_path / "llama.log",
                         startup_timeout=120)
    with server:
        base = server.base_url
        # the settings reached the server: 3 slots of 512 tokens each (--ctx-size 1536 split by --parallel 3)
        props = get_json(base + "/props")
        assert props["total_slots"] == 3
        assert props["default_generation_settings"]["n_ctx"] == 512
        assert [m["id"] for m in get_json(base + "/v1/models")["data"]] == [model.model_id]
        report = execute_run(RunSpec.from_flat(dict(**server.run_fields(), tokenizer=str(model.tokenizer_dir),
                                     random_input_len=32, random_output_len=6, num_prompts=6, max_concurrency=3,
                                     result_dir=str(tmp_path), progress=False)))
        assert report.result["completed"] == 6 and report.result["output_lens"] == [6] * 6  # ignore_eos honoured
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(server.metrics_url, timeout=10) as r:
            assert b"llamacpp:" in r.read()  # --metrics
        prov = server.provenance()
        pid = server.pid
    assert not answers(base + "/health")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert prov["backend"] == "llama.cpp" and prov["server_version"]  # /props build_info
    assert prov["command"][0] == str(binary) and "--no-cache-prompt" in prov["command"]
    assert prov["applied_settings"]["max_model_len"] == "--ctx-size 1536"
    assert prov["gpu"]["model"] in ("unknown",) or prov["gpu"]["source"]
    assert (tmp_path / "llama.log").stat().st_size > 0


def test_a_bad_flag_fails_with_the_log_tail_in_one_line(engine, tmp_path):
    binary, model = engine
    settings = ServerSettings(model=str(model.gguf), max_model_len=256, max_batch=1, port=free_port(),
                              extra_args=["--no-such-flag"])
    server = LocalServer("llama.cpp", settings, vendor="cpu", executable=binary, log_path=tmp_path / "bad.log")
    with pytest.raises(ServerLaunchError) as info:
        server.start()
    msg = str(info.value)
    assert "\n" not in msg and "exited with status" in msg and "--no-such-flag" in msg
    assert f"(log: {tmp_path / 'bad.log'})" in msg


def test_infermeter_serve_runs_until_ctrl_c(engine, tmp_path):
    binary, model = engine
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from infermeter.cli.main import main; sys.exit(main())", "serve", "llama.cpp", "--model", str(model.gguf),
         "--vendor", "cpu", "--executable", str(binary), "--port", str(port), "--max-model-len", "256",
         "--max-batch", "2", "--provenance", str(tmp_path / "prov.json"), "--log-file", str(tmp_path / "s.log")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not answers(f"http://127.0.0.1:{port}/health"):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        while not (tmp_path / "prov.json").exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "ready: http://127.0.0.1:" in err and "stopped llama.cpp" in err
    assert not answers(f"http://127.0.0.1:{port}/health")
    prov = json.loads((tmp_path / "prov.json").read_text())
    assert prov["settings"]["max_model_len"] == 256 and "--parallel" in prov["command"]
