"""Recipes that can run: server limits derived from the cells, launch targets from the command
line, --set overrides, min_samples repeats and their intervals."""

from __future__ import annotations

import math

import pytest

from infermeter.cli.main import main
from infermeter.errors import UserError
from infermeter.experiments.cells import build_plan
from infermeter.experiments.recipes import apply_sets, load_recipe, parse_target, recipe_data
from infermeter.experiments.repeats import RepeatPlanner, format_ci, point_summaries, summary_table
from infermeter.experiments.serverlimits import launch_settings, needs
from infermeter.experiments.specfile import spec_from_data
from infermeter.servers import ServerSettings, get_profile
from infermeter.servers.dstack import dstack_config


def recipe_with(name: str, target: dict, **over) -> dict:
    data = recipe_data(name)
    data["targets"] = {"t": target}
    data.update(over)
    return data


@pytest.mark.parametrize("recipe, model_len, concurrency", [
    ("seed-short", 80 + 128, 2048), ("seed-long", 10_000 + 128, 2048), ("seed-single", 131_072 + 128, 1),
    ("seed-rps", 80 + 128, 64 * 120),  # a rate cell without a concurrency cap: all its requests may be in flight
])
def test_limits_come_from_the_recipes_cells(recipe, model_len, concurrency):
    need = needs(load_recipe(recipe))
    assert (need.model_len, need.concurrency) == (model_len, concurrency)
    assert need.model_len_from and need.concurrency_from


def test_a_launched_tgi_gets_the_limits_of_seed_short():
    spec = spec_from_data(recipe_with("seed-short", {"launch": {"profile": "tgi", "settings": {"model": "m/x"}}}))
    settings, notes = launch_settings(spec, "t")
    assert settings["max_model_len"] == 208 and settings["max_batch"] == 2048 and len(notes) == 2
    # every cell records the server it runs against, and the command carries the limits
    assert {c.settings["target"]["launch"]["settings"]["max_batch"] for c in build_plan(spec)} == {2048}
    argv = get_profile("tgi").command(ServerSettings(**settings)).argv
    assert argv[argv.index("--max-concurrent-requests") + 1] == "2048"
    assert argv[argv.index("--max-total-tokens") + 1] == "208"


def test_chat_endpoint_leaves_room_for_the_template():
    data = recipe_with("seed-short", {"launch": {"profile": "vllm", "settings": {"model": "m/x"}},
                                      "endpoint": "/v1/chat/completions"})
    settings, _ = launch_settings(spec_from_data(data), "t")
    assert settings["max_model_len"] == 208 + 64


@pytest.mark.parametrize("recipe, profile, settings, words", [
    ("seed-long", "vllm", {"max_model_len": 4096}, ["max_model_len 4096", "10128"]),
    ("seed-single", "llama.cpp", {"max_model_len": 16384}, ["max_model_len 16384", "131200", "in128k"]),
    ("seed-short", "tgi", {"max_batch": 128}, ["max_batch 128", "2048", "429"]),
])
def test_explicit_limits_that_cannot_serve_the_cells_are_refused_in_one_line(recipe, profile, settings, words):
    data = recipe_with(recipe, {"launch": {"profile": profile, "settings": {"model": "m/x", **settings}}})
    with pytest.raises(UserError) as err:
        spec_from_data(data)
    text = str(err.value)
    assert "\n" not in text and all(w in text for w in words), text


def test_a_queueing_server_may_keep_a_smaller_batch():
    data = recipe_with("seed-short", {"launch": {"profile": "vllm", "settings": {"model": "m/x", "max_batch": 256,
                                                                                "max_model_len": 512}}})
    settings, notes = launch_settings(spec_from_data(data), "t")
    assert settings["max_batch"] == 256 and settings["max_model_len"] == 512 and notes == []


def test_llama_cpp_slots_are_capped_at_its_most():
    data = recipe_with("seed-short", {"launch": {"profile": "llama.cpp", "settings": {"model": "m.gguf"}}})
    settings, notes = launch_settings(spec_from_data(data), "t")
    assert settings["max_batch"] == 256 and "the rest queue" in notes[1]  # llama-server exits above 256
    data["targets"]["t"]["launch"]["settings"]["max_batch"] = 512
    with pytest.raises(UserError, match="max_batch 512 is more than llama.cpp accepts"):
        spec_from_data(data)
    with pytest.raises(UserError, match="at most 256 parallel slots"):
        get_profile("llama.cpp").command(ServerSettings(model="m.gguf", max_batch=300))


def test_transformers_has_no_context_setting_to_derive():
    data = recipe_with("seed-single", {"launch": {"profile": "transformers", "settings": {"model": "m/x"}}})
    settings, _ = launch_settings(spec_from_data(data), "t")
    assert "max_model_len" not in settings and settings["max_batch"] == 1


def test_launch_target_on_the_command_line():
    name, target = parse_target("llama=launch:llama.cpp,model=tiny,max_batch=4,startup_timeout_s=60")
    assert name == "llama" and target == {"launch": {"profile": "llama.cpp", "startup_timeout_s": 60,
                                                     "settings": {"model": "tiny", "max_batch": 4}}}
    with pytest.raises(UserError, match="names no model"):
        parse_target("x=launch:vllm")
    with pytest.raises(UserError, match="not a launch setting"):
        parse_target("x=launch:vllm,model=m,max_batchh=3")


def test_set_replaces_keys_of_the_spec():
    data = recipe_data("seed-long")
    apply_sets(data, ["load.burst=[1, 2]", "workloads.sonnet10k.sonnet_input_len=1000", "min_samples=8"])
    assert data["load"]["burst"] == [1, 2] and data["min_samples"] == 8
    assert data["workloads"]["sonnet10k"]["sonnet_input_len"] == 1000
    with pytest.raises(UserError, match="not PATH=VALUE"):
        apply_sets(data, ["load.burst"])
    with pytest.raises(UserError, match="is not a mapping"):
        apply_sets(data, ["repeats.x=1"])


def test_serve_for_an_experiment_fits_its_limits(capsys):
    assert main(["serve", "tgi", "--model", "m/x", "--for", "seed-short", "--print", "command"]) == 0
    out = capsys.readouterr().out
    assert "--max-concurrent-requests 2048" in out and "--max-total-tokens 208" in out
    assert main(["serve", "vllm", "--model", "m/x", "--for", "seed-long", "--max-model-len", "4096",
                 "--print", "command"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--max-model-len 4096" in err and "10128" in err and len(err.splitlines()) == 1
    # without --for the documented defaults stay
    assert main(["serve", "tgi", "--model", "m/x", "--print", "command"]) == 0
    assert "--max-concurrent-requests 128" in capsys.readouterr().out


def test_dstack_task_names_the_model_like_the_writeup():
    conf = dstack_config(get_profile("tgi"), ServerSettings(model="meta-llama/Llama-3.1-405B-Instruct"), "amd")
    assert "MODEL_ID=meta-llama/Llama-3.1-405B-Instruct" in conf["env"] and "HF_TOKEN" in conf["env"]
    llama = dstack_config(get_profile("llama.cpp"), ServerSettings(model="/data/m.gguf"), "nvidia")
    assert "MODEL_ID=/models/m.gguf" in llama["env"]  # the path inside the container


# ----------------------------------------------------------------------------- repeats

def small_spec(**over) -> dict:
    data = {"name": "rep", "targets": {"a": {"url": "http://127.0.0.1:8000", "model": "m"}},
            "workloads": {"w": {"dataset": "random", "random_input_len": 8, "random_output_len": 4}},
            "load": {"burst": [1, 4, 100]}, "min_samples": 10}
    data.update(over)
    return data


def test_small_points_get_extra_repeats_right_after_their_own():
    plan = build_plan(spec_from_data(small_spec(repeats=2)))
    ids = [c.cell_id for c in plan]
    burst1 = [c for c in plan if c.load_value == 1]
    assert len(burst1) == 10 and [c.extra for c in burst1] == [False, False] + [True] * 8
    assert sum(1 for c in plan if c.load_value == 4) == 3 and sum(1 for c in plan if c.load_value == 100) == 2
    # repeat 0 of every point, then repeat 1, each point's extra repeats right after it
    assert ids[:3] == ["a.w.burst-1.r0", "a.w.burst-4.r0", "a.w.burst-100.r0"]
    assert ids[3:13] == [f"a.w.burst-1.r{r}" for r in range(1, 10)] + ["a.w.burst-4.r1"]
    assert len({c.settings["run"]["seed"] for c in burst1}) == 10  # each repeat its own prompts


def test_budget_needs_min_samples():
    with pytest.raises(UserError, match="repeat_budget_s without min_samples"):
        spec_from_data(small_spec(min_samples=None, repeat_budget_s=10))


def test_extra_repeats_stop_at_enough_samples_or_when_the_budget_is_spent():
    spec = spec_from_data(small_spec(repeat_budget_s=5))
    plan = build_plan(spec)
    b1 = [c for c in plan if c.load_value == 1]
    b4 = [c for c in plan if c.load_value == 4]
    planner = RepeatPlanner(spec)
    for c in b1[:3]:
        assert planner.skip_reason(c) is None
        planner.observe(c, 1, 2.0)  # 3 runs of 2 s: 6 s > 5 s budget
    assert "repeat_budget_s 5 spent" in planner.skip_reason(b1[3])
    for c in b4[:2]:
        planner.observe(c, 4, 0.1)
    assert planner.skip_reason(b4[2]) is None  # 8 of 10 samples, budget left
    planner.observe(b4[2], 4, 0.1)
    assert planner.skip_reason(b4[2]).startswith("not needed")


def test_means_with_intervals_over_repeats():
    rows = [{"cell_id": f"a.w.burst-1.r{i}", "target": "a", "workload": "w", "load_mode": "burst",
             "load_value": 1.0, "status": "done", "completed": 1, "output_throughput": v, "mean_ttft_ms": 10.0}
            for i, v in enumerate([100.0, 110.0, 90.0, 100.0])]
    rows.append({**rows[0], "cell_id": "a.w.burst-8.r0", "load_value": 8.0})
    (s,) = point_summaries(rows)  # burst 8 has one run: no interval
    ci = s["output_throughput"]
    assert s["point"] == "a.w.burst-1" and s["runs"] == 4 and s["samples"] == 4
    half = 3.182446305284263 * math.sqrt(200 / 3) / 2  # t(0.975, 3) * sd / sqrt(n)
    assert ci["estimate"] == 100.0 and ci["high"] - 100.0 == pytest.approx(half, rel=5e-3)  # t_ppf: Cornish-Fisher
    assert format_ci(ci, ".1f") == "100.0 ± 13.0" and format_ci(s["mean_ttft_ms"]) == "10.00 ± 0.00"
    lines = summary_table([s])
    assert lines[0].split()[:3] == ["point", "runs", "requests"] and lines[1].startswith("a.w.burst-1")


def test_recipes_state_min_samples_and_a_budget():
    for name in ("seed-short", "seed-long"):
        spec = load_recipe(name)
        assert spec.min_samples == 100 and spec.repeat_budget_s
        plan = [c for c in build_plan(spec) if c.target == "vllm"]
        assert [sum(1 for c in plan if c.load_value == b) for b in (1, 2, 64, 128)] == [100, 50, 2, 1]
