"""Plan expansion, duration estimates, --dry-run, and the built-in recipes."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
import yaml

from infermeter.cli.main import main
from infermeter.errors import UserError
from infermeter.experiments.cells import CELL_OVERHEAD_S, ENGINE_START_S, Estimator, build_plan, runspec_from_settings
from infermeter.experiments.recipes import (
    list_recipes, load_recipe, parse_target, recipe_data, recipe_names, recipe_text,
)
from infermeter.experiments.specfile import parse_spec

SPEC = """\
name: grid
targets:
  a: {url: "http://127.0.0.1:8000", model: m, estimate: {input_tok_s: 1000, output_tok_s: 100}}
  b: {url: "http://127.0.0.1:8001", backend: tgi, model: m}
workloads:
  w1: {dataset: random, random_input_len: 100, random_output_len: 10}
  w2:
    dataset: sonnet
    sonnet_input_len: 80
    sonnet_prefix_len: 50
    sonnet_output_len: 20
    load: {burst: [3]}
load:
  burst: [1, 2]
  concurrency: [4]
  concurrency_prompts_per_slot: 3
  rate: [2.5]
  rate_duration_s: 4
repeats: 2
options: {warmup_requests: 1, seed: 7}
"""


def test_cells_come_in_documented_order_with_their_load_and_counts():
    cells = build_plan(parse_spec(SPEC))
    per_target = 2 * (4 + 1)  # repeats x (w1: 2 bursts + 1 concurrency + 1 rate; w2: its own 1 burst)
    assert len(cells) == 2 * per_target
    assert [c.seq for c in cells] == list(range(1, len(cells) + 1))
    assert [c.cell_id for c in cells[:per_target]] == [
        "a.w1.burst-1.r0", "a.w1.burst-2.r0", "a.w1.concurrency-4.r0", "a.w1.rate-2.5.r0", "a.w2.burst-3.r0",
        "a.w1.burst-1.r1", "a.w1.burst-2.r1", "a.w1.concurrency-4.r1", "a.w1.rate-2.5.r1", "a.w2.burst-3.r1"]
    assert all(c.target == "b" for c in cells[per_target:])
    by_id = {c.cell_id: c for c in cells}
    assert by_id["a.w1.concurrency-4.r0"].num_prompts == 12  # 4 slots x 3 per slot
    assert by_id["a.w1.rate-2.5.r0"].num_prompts == 10  # ceil(2.5 req/s x 4 s)
    run = by_id["a.w1.rate-2.5.r0"].settings["run"]
    assert run["request_rate"] == 2.5 and run["max_concurrency"] is None and run["warmup_requests"] == 1
    run = by_id["b.w1.concurrency-4.r1"].settings["run"]
    assert math.isinf(run["request_rate"]) and run["max_concurrency"] == 4 and run["num_prompts"] == 12
    assert by_id["a.w2.burst-3.r0"].input_len == 80 and by_id["a.w2.burst-3.r0"].output_len == 20


def test_prompts_are_shared_across_targets_but_not_across_cells():
    cells = build_plan(parse_spec(SPEC))
    seed = {c.cell_id: c.settings["run"]["seed"] for c in cells}
    assert seed["a.w1.burst-2.r0"] == seed["b.w1.burst-2.r0"]
    assert len({seed[c.cell_id] for c in cells if c.target == "a"}) == len(cells) // 2
    assert all(s >= 7 for s in seed.values())


def test_runspec_of_a_cell_is_an_ordinary_run():
    cell = build_plan(parse_spec(SPEC))[0]
    rs = runspec_from_settings(cell.settings, base_url="http://127.0.0.1:8000", tokenizer=None,
                               result_dir="/tmp/x", result_filename="result.json")
    assert rs.target.base_url == "http://127.0.0.1:8000" and rs.target.model == "m" and rs.load.num_prompts == 1
    assert rs.client.ignore_eos is True and rs.workload.random_input_len == 100
    assert rs.output.result_filename == "result.json"
    assert rs.output.metadata["experiment_cell"] == cell.cell_id


def test_fingerprint_ignores_the_url_but_not_the_workload():
    base = {c.cell_id: c.fingerprint for c in build_plan(parse_spec(SPEC))}
    moved = {c.cell_id: c.fingerprint for c in build_plan(parse_spec(SPEC.replace(":8000", ":9000")))}
    longer = {c.cell_id: c.fingerprint for c in build_plan(parse_spec(SPEC.replace("output_len: 10", "output_len: 11")))}
    assert base == moved
    looser = {c.cell_id: c.fingerprint for c in build_plan(parse_spec(SPEC + "stop: {request_timeout: 10}\n"))}
    assert base == looser  # when to give up is not what is measured
    assert base["a.w1.burst-1.r0"] != longer["a.w1.burst-1.r0"]
    assert base["a.w2.burst-3.r0"] == longer["a.w2.burst-3.r0"]


def test_estimate_follows_the_documented_model():
    spec = parse_spec(SPEC)
    cells = {c.cell_id: c for c in build_plan(spec)}
    est = Estimator(spec)
    # target a: its own estimate (1000 in / 100 out tok/s); 2 prompts + 1 warm-up of 100 in, 10 out
    assert est.seconds(cells["a.w1.burst-2.r0"]) == pytest.approx(CELL_OVERHEAD_S + 3 * 100 / 1000 + 3 * 10 / 100)
    # a rate cell lasts at least num_prompts / rate
    assert est.seconds(cells["a.w1.rate-2.5.r0"]) == pytest.approx(CELL_OVERHEAD_S + 10 / 2.5)
    # target b: nominal url throughput (20,000 / 2,000 tok/s)
    assert est.seconds(cells["b.w1.burst-1.r0"]) == pytest.approx(CELL_OVERHEAD_S + 2 * 100 / 20000 + 2 * 10 / 2000)
    # measured cells scale the rest of their target only
    before_b = est.seconds(cells["b.w1.burst-2.r0"])
    nominal = est.seconds(cells["a.w1.burst-1.r0"])
    est.observe(cells["a.w1.burst-1.r0"], 3 * nominal)
    assert est.factor("a") == pytest.approx(3.0)
    assert est.seconds(cells["a.w1.burst-2.r0"]) == pytest.approx(3 * (CELL_OVERHEAD_S + 0.3 + 0.3))
    assert est.seconds(cells["b.w1.burst-2.r0"]) == before_b
    assert "x3.00 measured" in est.basis("a")


def test_embedded_targets_add_one_engine_start():
    spec = parse_spec("name: e\ntargets: {e: {embedded: {model: tiny}}}\n"
                      "workloads: {w: {dataset: random, random_input_len: 10, random_output_len: 1}}\n"
                      "load: {burst: [1, 2]}\n")
    cells = build_plan(spec)
    est = Estimator(spec)
    assert est.total(cells) == pytest.approx(sum(est.seconds(c) for c in cells) + ENGINE_START_S)
    assert cells[0].settings["target"] == {"kind": "embedded", "backend": "llama.cpp", "endpoint": None,
                                           "headers": {}, "api_key_env": "OPENAI_API_KEY", "api_key_file": None,
                                           "engine": {"model": "tiny", "parallel": 8, "ctx_size": None}}


def test_dry_run_prints_cells_in_order_and_the_estimate(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text(SPEC + f"output_dir: {tmp_path / 'out'}\n")
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    ids = [line.split()[1] for line in lines if line.strip()[:1].isdigit() and "." in line.split()[1]]
    assert ids == [c.cell_id for c in build_plan(parse_spec(SPEC))]
    assert "experiment grid: 20 cells" in out and "total: 20 of 20 cells to run, estimated" in out
    assert "rate 2.5" in out and "100/10" in out and "estimate: per cell 2 s" in out
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    assert main(["sweep", str(path), "--dry-run", "--only", "b"]) == 0
    assert "total: 10 of 10 cells" in capsys.readouterr().out
    assert main(["sweep", str(path), "--dry-run", "--only", "zz"]) == 2
    assert "--only 'zz' is not a target" in capsys.readouterr().err


def test_recipes_are_valid_specs_shipped_as_package_data(capsys):
    assert set(recipe_names()) >= {"quick", "seed-short", "seed-long", "seed-single", "seed-rps"}
    assert all(desc for _, desc in list_recipes())
    short = load_recipe("seed-short")
    w = short.workloads["sonnet80"]
    assert (w.dataset, w.sonnet_input_len, w.sonnet_prefix_len) == ("sonnet", 80, 50)
    assert short.load.burst == [2 ** k for k in range(12)] and short.options.ignore_eos
    assert load_recipe("seed-long").workloads["sonnet10k"].sonnet_input_len == 10000
    single = load_recipe("seed-single")
    assert sorted(w.random_input_len for w in single.workloads.values()) == [16384, 32768, 65536, 131072]
    assert all(c.num_prompts == 1 for c in build_plan(single))
    rps = load_recipe("seed-rps")
    assert rps.load.rate and all(c.load_mode == "rate" for c in build_plan(rps))
    quick = load_recipe("quick")
    assert quick.targets["embedded"].kind == "embedded"
    for name in recipe_names():
        assert load_recipe(name).options.ignore_eos is True
    # pip install . ships them: pyproject's package-data must name the folder (checked when it does)
    data = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"].get("package-data", {}).get("infermeter", [])
    if any(g.startswith("experiments/recipes") for g in globs):
        assert "experiments/recipes/*.yaml" in globs
    assert main(["recipes", "show", "seed-short"]) == 0
    assert capsys.readouterr().out == recipe_text("seed-short")
    assert main(["recipes"]) == 0
    assert "seed-single" in capsys.readouterr().out
    assert main(["recipes", "show", "nope"]) == 2


def test_recipe_targets_come_from_the_command_line(capsys):
    assert parse_target("tgi=http://h:8080") == ("tgi", {"url": "http://h:8080", "backend": "tgi"})
    assert parse_target("mine=http://h:1,backend=sglang,model=M") == (
        "mine", {"url": "http://h:1", "backend": "sglang", "model": "M"})
    assert parse_target("x=http://h:1")[1]["backend"] == "vllm"
    for bad in ("nourl", "a=ftp://h", "a=http://h,colour=red", "a b=http://h"):
        with pytest.raises(UserError):
            parse_target(bad)
    spec = load_recipe("quick", targets=["v=http://h:8000"], model="M", tokenizer="T", output_dir="/tmp/o")
    assert list(spec.targets) == ["v"] and spec.targets["v"].model == "M" and spec.targets["v"].tokenizer == "T"
    assert str(spec.resolved_output_dir) == "/tmp/o"
    assert main(["sweep", "--recipe", "seed-short", "--target", "a=http://h:1", "--target", "b=http://h:2",
                 "--model", "M", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "412 cells" in out and "a.sonnet80.burst-2048.r0" in out  # 206 a target: small bursts repeat (min_samples) and "b.sonnet80.burst-1.r0" in out


def test_recipe_yaml_is_a_copyable_spec(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    data = yaml.safe_load(recipe_text("seed-rps"))
    data["load"]["rate"] = [1]
    data["output_dir"] = str(tmp_path / "o")
    path.write_text(yaml.safe_dump(data))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert "2 cells" in capsys.readouterr().out
    assert recipe_data("seed-rps")["load"]["rate_duration_s"] == 120
