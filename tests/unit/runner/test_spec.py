"""RunSpec: sections, one routing table for flat names, types checked at construction."""

from __future__ import annotations

import math
import pickle

import pytest

from infermeter.errors import FieldError
from infermeter.runner.spec import FIELD_SECTION, SECTIONS, RunSpec, field_path, runspec_from_flags


def test_flat_names_reach_their_sections():
    spec = RunSpec.from_flat({"base_url": "http://h:1", "engine_parallel": 2, "random_input_len": 7,
                              "num_prompts": 3, "transport": "aiohttp", "label": "x", "telemetry": False,
                              "gpu_count": 2})
    assert spec.target.base_url == "http://h:1" and spec.engine.engine_parallel == 2
    assert spec.workload.random_input_len == 7 and spec.load.num_prompts == 3
    assert spec.client.transport == "aiohttp" and spec.output.label == "x"
    assert spec.telemetry.telemetry is False and spec.cost.gpu_count == 2
    assert spec.load.request_rate == math.inf  # the rest keep their defaults


def test_every_flat_name_is_in_exactly_one_section():
    names = [n for model in SECTIONS.values() for n in model.model_fields]
    assert len(names) == len(set(names)) == len(FIELD_SECTION)
    assert field_path("num_prompts") == "load.num_prompts" and field_path("headers") == "target.headers"


def test_flat_round_trips_and_replace_routes_changes():
    spec = runspec_from_flags({"num_prompts": 5, "max_concurrency": 2, "result_dir": "r"})
    assert RunSpec.from_flat(spec.flat()) == spec
    other = spec.replace(num_prompts=9, cell_id="c")
    assert other.load.num_prompts == 9 and other.output.cell_id == "c" and other.load.max_concurrency == 2
    assert spec.load.num_prompts == 5  # the original is unchanged (frozen)
    with pytest.raises(Exception):
        spec.load.num_prompts = 1  # type: ignore[misc]


def test_an_unknown_flat_name_is_a_field_error_naming_it():
    with pytest.raises(FieldError) as info:
        RunSpec.from_flat({"num_prompts": 1, "num_prompt": 2})
    assert info.value.field == "num_prompt" and "unknown setting 'num_prompt'" in str(info.value)


def test_a_wrong_type_names_the_field_path_and_the_value():
    with pytest.raises(FieldError) as info:
        RunSpec.from_flat({"headers": {"x": 1}, "num_prompts": "many"})
    err = info.value
    assert err.field == "target.headers" and str(err).startswith("target.headers.x 1: Input should be")
    assert "(and 1 more problem)" in str(err)


def test_field_errors_cross_processes_whole():
    with pytest.raises(FieldError) as info:
        RunSpec.from_flat({"seed": "x"})
    again = pickle.loads(pickle.dumps(info.value))
    assert isinstance(again, FieldError) and again.field == "load.seed" and str(again) == str(info.value)
    assert str(again.worded(lambda path: path.upper())).startswith("LOAD.SEED 'x'")
