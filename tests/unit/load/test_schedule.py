import math

import numpy as np
import pytest

from infermeter.errors import FieldError
from infermeter.load.schedule import LoadMode, arrival_offsets, make_plan, offered_rate, ramp_rates


def test_modes_are_named_from_vllm_flags():
    assert make_plan(64).mode is LoadMode.BURST
    assert make_plan(64).describe() == "burst: 64 requests sent at once"
    assert make_plan(64, max_concurrency=8).mode is LoadMode.CONCURRENCY
    plan = make_plan(64, 10.0, max_concurrency=4)
    assert plan.mode is LoadMode.RATE and plan.arrival == "poisson"
    assert "at most 4 in flight" in plan.describe()
    assert make_plan(64, 10.0, burstiness=0.5).arrival == "gamma"


def test_poisson_offsets_have_exponential_mean_and_variance():
    rate = 40.0
    offsets = arrival_offsets(make_plan(200_000, rate, schedule="unscaled"), seed=1)
    gaps = np.diff(offsets)
    assert offsets[0] == 0.0
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.01)
    assert gaps.var() == pytest.approx(1 / rate**2, rel=0.03)  # exponential: var = mean^2


@pytest.mark.parametrize("b", [0.25, 4.0])
def test_gamma_burstiness_sets_coefficient_of_variation(b):
    offsets = arrival_offsets(make_plan(200_000, 10.0, burstiness=b), seed=2)
    gaps = np.diff(offsets)
    assert gaps.mean() == pytest.approx(0.1, rel=0.02)
    cv = gaps.std() / gaps.mean()
    assert cv == pytest.approx(1 / math.sqrt(b), rel=0.03)


def test_constant_arrivals_and_determinism():
    offs = arrival_offsets(make_plan(5, 4.0, arrival="constant", schedule="unscaled"), seed=0)
    assert list(offs) == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    # vLLM's schedule: the first request waits one interval, the last lands at N / rate
    offs = arrival_offsets(make_plan(5, 4.0, burstiness=math.inf), seed=0)
    assert list(offs) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.25])
    a = arrival_offsets(make_plan(100, 5.0), seed=7)
    b = arrival_offsets(make_plan(100, 5.0), seed=7)
    c = arrival_offsets(make_plan(100, 5.0), seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_offsets_are_absolute_and_increasing():
    offs = arrival_offsets(make_plan(1000, 100.0, schedule="unscaled"), seed=3)
    assert np.all(np.diff(offs) >= 0)
    # absolute schedule: the last offset is the sum of all but the last interval
    assert offs[-1] == pytest.approx(np.sum(np.diff(offs)))


@pytest.mark.parametrize("kwargs, flag", [
    ({"num_requests": 0}, "--num-prompts"),
    ({"num_requests": 5, "request_rate": -1.0}, "--request-rate"),
    ({"num_requests": 5, "max_concurrency": 0}, "--max-concurrency"),
    ({"num_requests": 5, "request_rate": 1.0, "burstiness": 0.0}, "--burstiness"),
    ({"num_requests": 5, "request_rate": 1.0, "schedule": "exact"}, "--rate-schedule"),
    ({"num_requests": 5, "request_rate": 1.0, "ramp_up": ("linear", 1, 5)}, "--request-rate"),
    ({"num_requests": 5, "ramp_up": ("linear", 1, None)}, "--ramp-up-end-rps"),
    ({"num_requests": 5, "ramp_up": ("linear", 5, 1)}, "--ramp-up-start-rps"),
    ({"num_requests": 5, "ramp_up": ("exponential", 0, 4)}, "--ramp-up-start-rps 0"),
    ({"num_requests": 5, "ramp_up": ("sine", 1, 4)}, "--ramp-up-strategy"),
    ({"num_requests": 5, "ramp_up": (None, 1, 4)}, "--ramp-up-strategy"),
    ({"num_requests": 5, "request_rate": 1.0, "arrival": "uniform"}, "--arrival"),
    ({"num_requests": 5, "arrival": "constant"}, "--arrival"),
])
def test_bad_load_flags_name_the_field_and_the_cli_names_the_flag(kwargs, flag):
    from infermeter.cli.options import worded_for_cli

    with pytest.raises(FieldError) as err:
        make_plan(**kwargs)
    assert err.value.field.startswith("load.") and "--" not in str(err.value)
    assert flag in str(worded_for_cli(err.value)) and "\n" not in str(err.value)


@pytest.mark.parametrize("n, rate, burstiness, seed", [
    (40, 40.0, 1.0, 0), (300, 25.0, 1.0, 1), (300, 25.0, 0.5, 2), (7, 3.0, 4.0, 3), (1000, 100.0, 1.0, 4)])
def test_vllm_schedule_offers_exactly_the_target_rate(n, rate, burstiness, seed):
    """A finite run's scheduled offered rate equals --request-rate (vLLM rescales the drawn times
    so the last send lands at N / rate); the unscaled process misses it by chance."""
    plan = make_plan(n, rate, burstiness=burstiness)
    assert plan.schedule == "vllm" and plan.to_dict()["schedule"] == "vllm"
    offs = arrival_offsets(plan, seed)
    assert offered_rate(offs) == pytest.approx(rate, rel=1e-3)
    assert offs[-1] == pytest.approx(n / rate) and offs[0] > 0 and np.all(np.diff(offs) >= 0)


def test_unscaled_schedule_is_kept_and_named():
    plan = make_plan(300, 25.0, schedule="unscaled")
    assert "unscaled" in plan.describe() and plan.to_dict()["schedule"] == "unscaled"
    rates = [offered_rate(arrival_offsets(plan, s)) for s in range(20)]
    assert max(abs(r / 25.0 - 1) for r in rates) > 1e-3  # not rescaled: the offered rate varies with the seed


@pytest.mark.parametrize("strategy", ["linear", "exponential"])
def test_ramp_up_follows_vllm_rates(strategy):
    n = 20_000
    plan = make_plan(n, ramp_up=(strategy, 2, 50))
    assert plan.mode is LoadMode.RATE and math.isinf(plan.request_rate) and strategy in plan.describe()
    assert plan.to_dict()["ramp_up"] == {"strategy": strategy, "start_rps": 2.0, "end_rps": 50.0}
    rates = ramp_rates(plan, n)
    assert rates[0] == pytest.approx(2) and rates[-1] == pytest.approx(50)
    mid = 2 + 48 * 0.5 if strategy == "linear" else 2 * 25 ** 0.5
    assert rates[(n - 1) // 2] == pytest.approx(mid, rel=1e-3)
    offs = arrival_offsets(plan, seed=5)  # no rescaling under a ramp: the drawn gaps' means follow 1/rate
    gaps = np.diff(offs)
    assert gaps[: n // 10].mean() == pytest.approx(np.mean(1 / rates[1: n // 10 + 1]), rel=0.1)
    assert gaps[-n // 10:].mean() == pytest.approx(np.mean(1 / rates[-n // 10:]), rel=0.1)
    const = arrival_offsets(make_plan(5, ramp_up=(strategy, 1, 4), burstiness=math.inf), seed=0)
    assert np.diff(const, prepend=0) == pytest.approx(1 / ramp_rates(make_plan(5, ramp_up=(strategy, 1, 4)), 5))
