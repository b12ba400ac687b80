"""Experiment specs: every mistake is one line naming the key path (and line), before anything runs."""

from __future__ import annotations

import textwrap

import pytest

from infermeter.cli.main import main
from infermeter.errors import UserError
from infermeter.experiments.specfile import parse_spec

GOOD = """\
name: demo
targets:
  vllm:
    url: http://127.0.0.1:8000
    model: m
workloads:
  short:
    dataset: sonnet
    sonnet_input_len: 80
    sonnet_prefix_len: 50
    sonnet_output_len: 16
load:
  burst: [1, 2, 4]
"""


def error_of(text: str) -> str:
    with pytest.raises(UserError) as info:
        parse_spec(textwrap.dedent(text), source="spec.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_good_spec_parses_with_defaults():
    spec = parse_spec(GOOD)
    assert spec.targets["vllm"].backend_name == "vllm" and spec.targets["vllm"].kind == "url"
    assert spec.options.ignore_eos is True and spec.repeats == 1
    assert str(spec.resolved_output_dir) == "results/demo"


def test_typo_in_a_key_names_its_path_line_and_the_likely_key():
    msg = error_of(GOOD.replace("    url: http", "    ur: http"))
    assert msg.startswith("spec.yaml:4: targets.vllm.ur: unknown key")
    assert "did you mean 'url'?" in msg


def test_typo_at_top_level_and_in_the_load_grid():
    assert "spec.yaml:12: lod: unknown key — did you mean 'load'?" in error_of(GOOD.replace("load:", "lod:"))
    msg = error_of(GOOD + "  concurency: [4]\n")
    assert "load.concurency: unknown key" in msg and "'concurrency'" in msg


def test_bad_values_name_the_key():
    msg = error_of(GOOD.replace("burst: [1, 2, 4]", "burst: [1, 0]"))
    assert "spec.yaml:13: load.burst: 0 is not a positive whole number" in msg
    msg = error_of(GOOD.replace("burst: [1, 2, 4]", "burst: [1, lots]"))
    assert "load.burst.1: 'lots'" in msg
    msg = error_of(GOOD + "repeats: 0\n")
    assert "repeats: 0:" in msg
    msg = error_of(GOOD.replace("burst: [1, 2, 4]", "rate: [2, 4]"))
    assert "load: rate points need exactly one of rate_num_prompts or rate_duration_s" in msg


def test_missing_or_empty_targets():
    msg = error_of("name: x\nworkloads:\n  w: {dataset: random}\nload: {burst: [1]}\n")
    assert msg.startswith("spec.yaml: targets: missing")
    msg = error_of(GOOD.replace("targets:\n  vllm:\n    url: http://127.0.0.1:8000\n    model: m\n", "targets: {}\n"))
    assert "targets: is empty" in msg


def test_a_target_needs_exactly_one_kind():
    msg = error_of(GOOD.replace("    url: http://127.0.0.1:8000\n", ""))
    assert "targets.vllm: give exactly one of url, embedded or launch" in msg
    msg = error_of(GOOD.replace("    model: m\n", "    model: m\n    embedded: {model: tiny}\n"))
    assert "got url, embedded" in msg


def test_workload_fields_must_fit_the_dataset():
    msg = error_of(GOOD.replace("sonnet_output_len: 16", "random_output_len: 16"))
    assert "workloads.short: random_output_len does not apply to dataset sonnet" in msg


def test_runspec_checks_run_before_anything_and_name_spec_keys():
    msg = error_of(GOOD.replace("sonnet_prefix_len: 50", "sonnet_prefix_len: 500"))
    assert "cell vllm.short.burst-1.r0" in msg
    assert "workloads.short.sonnet_prefix_len 500 is larger than workloads.short.sonnet_input_len 80" in msg
    msg = error_of(GOOD + "options:\n  metric_percentiles: 'fifty'\n")
    assert "options.metric_percentiles" in msg
    msg = error_of(GOOD.replace("model: m", "model: m\n    backend: nosuch"))
    assert "targets.vllm.backend 'nosuch' is not known" in msg


def test_yaml_mistakes_are_one_line_with_a_position():
    msg = error_of(GOOD.replace("  burst: [1, 2, 4]", "  burst: [1, 2, 4"))
    assert msg.startswith("spec.yaml:") and "not valid YAML" in msg
    msg = error_of(GOOD + "load:\n  burst: [8]\n")
    assert msg.startswith("spec.yaml:14: key 'load' appears twice") and "line 12" in msg
    assert "must be a YAML mapping" in error_of("- just\n- a list\n")


def test_launch_targets_are_validated_with_the_servers_profiles():
    launch = "    launch: {profile: vllm, settings: {model: m, tensor_parallel: 8, max_batch: 256}}\n"
    spec = parse_spec(GOOD.replace("    url: http://127.0.0.1:8000\n", launch))
    target = spec.targets["vllm"]
    assert target.kind == "launch" and target.backend_name == "vllm"
    assert target.launch.settings["tensor_parallel"] == 8
    with pytest.raises(UserError, match=r"vllm-mi300x"):
        parse_spec(GOOD.replace("    url: http://127.0.0.1:8000\n", "    launch: {profile: vllm-mi300x, settings: {model: m}}\n"))
    with pytest.raises(UserError, match=r"targets\.vllm\.launch\.settings"):
        parse_spec(GOOD.replace("    url: http://127.0.0.1:8000\n", "    launch: {profile: vllm}\n"))


def test_cli_reports_spec_errors_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("dataset: sonnet", "dataset: sonet"))
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"infermeter: error: {path}:8: workloads.short.dataset: 'sonet'")
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["sweep"]) == 2
    assert "--recipe" in capsys.readouterr().err
