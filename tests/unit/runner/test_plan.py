"""resolve: a RunSpec judged once and turned into a frozen RunPlan."""

from __future__ import annotations

import dataclasses
import math

import pytest

from infermeter.errors import FieldError
from infermeter.runner import execute
from infermeter.runner.plan import RunPlan, resolve
from infermeter.runner.spec import RunSpec
from infermeter.workloads import SonnetSpec


def test_resolve_derives_what_a_run_needs():
    plan = resolve(RunSpec.from_flat({"backend": "openai-chat", "base_url": "http://h:1", "num_prompts": 10,
                                      "request_rate": 5.0, "shard": "1/2", "dataset_name": "sonnet",
                                      "sonnet_input_len": 300, "goodput": ["ttft:500"],
                                      "metric_percentiles": "50,99"}))
    assert plan.backend.name == "openai-chat" and plan.protocol == "openai-chat" and plan.chat
    assert plan.endpoint == "/v1/chat/completions" and not plan.embedded
    assert plan.load.num_requests == 10 and plan.load.request_rate == 5.0
    assert plan.shard is not None and plan.local_load.num_requests == 5 and plan.local_load.request_rate == 2.5
    assert plan.percentiles == [50.0, 99.0] and plan.goodput.limits_ms == {"ttft": 500.0}
    assert plan.workload == SonnetSpec(input_len=300)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.protocol = "tgi"  # type: ignore[misc]


def test_no_url_means_the_embedded_engine():
    plan = resolve(RunSpec())
    assert plan.embedded and plan.shard is None and plan.local_load is plan.load


@pytest.mark.parametrize("flat, field, text", [
    ({"num_prompts": 0}, "load.num_prompts", "load.num_prompts 0 must be at least 1"),
    ({"num_prompts": 10**12}, "load.num_prompts", "load.num_prompts 1000000000000 is out of range"),
    ({"base_url": "localhost:8000"}, "target.base_url", "has no http:// or https:// scheme"),
    ({"temperature": -1.0}, "client.temperature", "client.temperature -1 must be 0 or more"),
    ({"transport": "carrier-pigeon"}, "client.transport", "client.transport 'carrier-pigeon' is not known"),
    ({"gpu_price_per": "gpu"}, "cost.gpu_price_per", "cost.gpu_price_per gpu without cost.gpu_price"),
    ({"dataset_name": "trace"}, "workload.dataset_path", "workload.dataset_name trace needs workload.dataset_path"),
    ({"workers": 2}, "load.workers", "load.workers needs a server to point at"),
    ({"backend": "nosuch"}, "target.backend", "target.backend 'nosuch' is not known"),
    ({"percentile_metrics": "foo"}, "output.percentile_metrics", "names unknown metrics"),
])
def test_bad_values_are_field_errors_naming_the_field(flat, field, text):
    with pytest.raises(FieldError) as info:
        resolve(RunSpec.from_flat(flat))
    assert info.value.field == field and text in str(info.value) and "--" not in str(info.value)


def test_a_run_is_resolved_once(monkeypatch):
    calls, seen = [], []
    real = execute.resolve

    def counting(spec):
        calls.append(spec)
        return real(spec)

    monkeypatch.setattr(execute, "resolve", counting)
    monkeypatch.setattr(execute, "run_single", lambda plan, **kw: seen.append(plan) or "report")
    spec = RunSpec.from_flat({"base_url": "http://h:1", "request_rate": 2.0, "num_prompts": 4})
    assert execute.execute_run(spec) == "report"
    assert calls == [spec] and isinstance(seen[0], RunPlan) and seen[0].spec is spec
    assert not math.isinf(seen[0].load.request_rate)
