"""`sweep --dry-run` foretells what a resume does: finished cells of an edited spec are not "done"."""

from __future__ import annotations

import pytest
import yaml

from infermeter.cli.main import main

pytestmark = pytest.mark.integration


def test_dry_run_of_an_edited_spec_says_which_settings_changed(test_server, tokenizer_dir, tmp_path, capsys):
    server = test_server(ttft_ms=5, itl_ms=1)
    data = {"name": "e", "output_dir": str(tmp_path / "exp"),
            "targets": {"t": {"url": server.base_url, "backend": "vllm", "model": "test-model",
                              "tokenizer": str(tokenizer_dir)}},
            "workloads": {"rnd": {"dataset": "random", "random_input_len": 8, "random_output_len": 4}},
            "load": {"burst": [2]}, "options": {"ignore_eos": True}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["sweep", str(path), "--disable-tqdm"]) == 0
    data["workloads"]["rnd"]["random_output_len"] = 6  # another measurement for the finished cell
    data["load"]["burst"] = [2, 3]  # and a new cell
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    capsys.readouterr()
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "t.rnd.burst-2.r0" in x and "burst 2" in x)
    assert "changed" in line and "done" not in line  # was shown as "done" under the new settings
    assert "settings changed: 1 finished cell(s)" in out and "t.rnd.burst-2.r0" in out
    assert "a resume would run: t.rnd.burst-3.r0" in out
    assert main(["sweep", str(path), "--resume", "--disable-tqdm"]) != 0  # what the dry run foretold
    assert "other settings" in capsys.readouterr().err
