"""A step load in a sweep spec, and its timeline of offered against achieved rate in the report."""

from __future__ import annotations

import json

import pytest
import yaml

from infermeter.cli.main import main
from infermeter.storage.files import read_records

pytestmark = pytest.mark.integration


def test_a_step_load_runs_in_a_sweep_and_its_timeline_shows_offered_against_achieved(test_server, tokenizer_dir,
                                                                                      tmp_path, capsys):
    server = test_server(ttft_ms=5, itl_ms=1)
    spec = {"name": "steps", "output_dir": str(tmp_path / "exp"),
            "targets": {"t": {"url": server.base_url, "model": "test-model", "tokenizer": str(tokenizer_dir)}},
            "workloads": {"rnd": {"dataset": "random", "random_input_len": 16, "random_output_len": 4}},
            "load": {"rate_steps": [[5, 20]], "step_hold_s": 1.0},
            "options": {"ignore_eos": True}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["sweep", str(path), "--disable-tqdm"]) == 0
    cell = tmp_path / "exp" / "cells" / "t.rnd.steps-20.r0"
    result = json.loads((cell / "result.json").read_text())
    assert result["completed"] == 25  # 5 x 1 s + 20 x 1 s
    offered = sorted({r.offered_rate for r in read_records(cell / result["infermeter"]["records_file"])})
    assert offered == [5.0, 20.0]  # each request carries the rate of its step
    capsys.readouterr()
    assert main(["report", str(tmp_path / "exp"), "-o", str(tmp_path / "report"), "--at", "steps=20"]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert (tmp_path / "report" / "timeline-t.rnd.steps-20.r0.png").is_file()
    assert "sent," in html and "completed</title>" in html  # the offered/achieved panel's hover texts
