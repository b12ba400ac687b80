"""The dstack path against a real ``dstack server`` on loopback (offline, no backends).

The server accepts a submitted CPU task; with no fleet it cannot place it, so the run
fails: this checks infermeter's submit (``dstack apply -f F -y -d``), poll (``dstack run
get NAME --json``), failure message, log collection and ``dstack stop``.  It also checks
that dstack's own ``apply`` refuses the write-up's TGI task.

Needs the optional ``dstack`` package with its server extra (``pip install -e
'.[test,dstack]'``); skipped when it is missing or its server does not come up.

The rendered task sets ``user: root`` and ``resources.cpu: x86:2``: with both given,
the dstack server needs no image metadata from a registry, so this works offline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from infermeter.errors import UserError
from infermeter.servers import PROFILES, ServerSettings
from infermeter.servers.dstack import DstackRun, DstackServer
from infermeter.servers.lint import lint_file

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dstack"
TOKEN = "infermeter-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dstack_env(tmp_path_factory):
    pytest.importorskip("dstack")
    pytest.importorskip("dstack._internal.server", reason="dstack's server extra is not installed")
    exe = shutil.which("dstack")
    if exe is None:
        pytest.skip("the dstack CLI is not on PATH")
    home = tmp_path_factory.mktemp("dstack-home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSTACK_")}
    env.update(HOME=str(home), DSTACK_SERVER_DIR=str(home / "server"))
    env.pop("HF_TOKEN", None)
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen([exe, "server", "--host", "127.0.0.1", "-p", str(port), "--token", TOKEN, "-y"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            if proc.poll() is not None:
                pytest.skip(f"dstack server exited with {proc.returncode}: see {home / 'server.log'}")
            try:
                opener.open(f"http://127.0.0.1:{port}/", timeout=2).close()
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.skip("dstack server did not answer on loopback within 180 s")
            time.sleep(1)
        deadline = time.monotonic() + 30
        while not (home / ".dstack" / "config.yml").exists():  # the server writes the CLI's project config
            assert time.monotonic() < deadline, "dstack server wrote no ~/.dstack/config.yml"
            time.sleep(0.5)
        yield env
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_cpu_task_is_accepted_polled_and_fails_for_lack_of_a_fleet(dstack_env, tmp_path):
    settings = ServerSettings(model="ggml-org/gemma-3-1b-it-GGUF", max_model_len=512, max_batch=2, port=8080,
                              secrets=[])
    lines: list[str] = []
    server = DstackServer(PROFILES["llama.cpp"], settings, "cpu", name="im-llama-cpu", user="root", cpu="x86:2",
                          workdir=tmp_path, env=dstack_env, poll_interval=1.0, startup_timeout=240, log=lines.append)
    with pytest.raises(UserError) as info:
        server.start()
    msg = str(info.value)
    assert msg.startswith("dstack run im-llama-cpu failed (job_failed/failed_to_start_due_to_no_capacity): ")
    assert "No matching fleet found" in msg and "create a fleet" in info.value.fix
    assert server.run.history and server.run.history[-1] == "failed"  # polled until it finished
    assert lines[0].startswith("dstack apply -f ")
    assert lint_file(server.config_path) == []  # what was submitted passes the linter
    state = DstackRun(server.config_path, env=dstack_env).get()  # the server still has it, failed
    assert state.status == "failed" and state.raw["run_spec"]["configuration"]["ports"][0]["container_port"] == 8080
    argv = state.raw["run_spec"]["configuration"]["commands"][0]
    assert "--parallel 2" in argv and "--ctx-size 1024" in argv


def test_dstack_apply_itself_refuses_the_writeup_tgi_task(dstack_env, tmp_path):
    target = tmp_path / "tgi.dstack.yml"
    shutil.copy(FIXTURES / "writeup-tgi-mi300x.dstack.yml", target)
    env = dict(dstack_env, HF_TOKEN="not-a-real-token")
    with pytest.raises(UserError) as info:
        DstackRun(target, env=env).apply()
    msg = str(info.value)
    assert "'dstack apply -f' failed" in msg and "validation error" in msg, msg
    assert "MAX-INPUT-TOKEN" in msg or "should match pattern" in msg, msg


def test_submitted_load_task_follows_to_dstacks_no_fleet_answer_in_one_line(dstack_env, tmp_path, monkeypatch,
                                                                             capsys):
    from infermeter.cli.main import main

    for key in [k for k in os.environ if k.startswith("DSTACK_")]:
        monkeypatch.delenv(key)
    for key, value in dstack_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    code = main(["shards", "--nodes", "2", "--submit", "--name", "im-load", "--cpu", "x86:2", "--user", "root",
                 "--", "--base-url", "http://10.0.0.5:8000", "--model", "m", "--num-prompts", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err[-1].startswith("infermeter: error: dstack run im-load failed (") and "No matching fleet" in err[-1]
    assert "create a fleet" in err[-1]  # the fix, on the same line
    assert any(line.startswith("infermeter: dstack apply -f ") for line in err)
    state = DstackRun(tmp_path / "x.yml", name="im-load", env=dstack_env).get()
    conf = state.raw["run_spec"]["configuration"]
    assert conf["nodes"] == 2 and conf["commands"][-1].startswith("infermeter node ")
