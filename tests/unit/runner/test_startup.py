"""runner/startup.py: the phases before a run's first request."""

from __future__ import annotations

import subprocess
import sys
import time

from infermeter.runner.startup import Startup, process_age_s


def test_the_process_age_comes_from_the_process_start():
    # a fresh interpreter that sleeps 0.3 s before asking: its age is at least that, and not much more
    code = "import time; time.sleep(0.3); from infermeter.runner.startup import process_age_s; print(process_age_s())"
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0.29 <= age < 5.0
    assert process_age_s() > age  # this test process is older than that one


def test_phases_and_the_first_request():
    s = Startup(process_s=1.25)
    t = time.perf_counter() - 0.2
    s.phase("tokenizer", t)
    s.prompts_ready(time.perf_counter() - 0.1)
    s.started(time.time() + 0.5)  # the load's origin: half a second from now (warm-up, a start gate)
    d = s.to_dict()
    assert 0.19 <= d["tokenizer_s"] < 0.3 and 0.09 <= d["prompts_s"] < 0.2
    assert 0.45 <= d["warmup_s"] <= 0.55
    assert 1.7 <= d["first_request_s"] < 1.9  # 1.25 before this object, ~0.5 after
    assert set(d) == {"process_s", "tokenizer_s", "server_s", "probe_s", "prompts_s", "warmup_s", "first_request_s"}
    assert d["server_s"] is None and d["probe_s"] is None


def test_nothing_measured_stays_null():
    s = Startup(process_s=None)
    s.started(time.time())
    assert s.to_dict()["first_request_s"] is None
    s.started(None)
    assert s.to_dict()["warmup_s"] is None
