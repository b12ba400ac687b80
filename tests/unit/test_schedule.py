import math

import numpy as np
import pytest

from infermeter.errors import UserError
from infermeter.load.schedule import LoadMode, arrival_offsets, make_plan


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
    offsets = arrival_offsets(make_plan(200_000, rate), seed=1)
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
    offs = arrival_offsets(make_plan(5, 4.0, arrival="constant"), seed=0)
    assert list(offs) == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    a = arrival_offsets(make_plan(100, 5.0), seed=7)
    b = arrival_offsets(make_plan(100, 5.0), seed=7)
    c = arrival_offsets(make_plan(100, 5.0), seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_offsets_are_absolute_and_increasing():
    offs = arrival_offsets(make_plan(1000, 100.0), seed=3)
    assert np.all(np.diff(offs) >= 0)
    # absolute schedule: the last offset is the sum of all but the last interval
    assert offs[-1] == pytest.approx(np.sum(np.diff(offs)))


@pytest.mark.parametrize("kwargs, flag", [
    ({"num_requests": 0}, "--num-prompts"),
    ({"num_requests": 5, "request_rate": -1.0}, "--request-rate"),
    ({"num_requests": 5, "max_concurrency": 0}, "--max-concurrency"),
    ({"num_requests": 5, "request_rate": 1.0, "burstiness": 0.0}, "--burstiness"),
    ({"num_requests": 5, "request_rate": 1.0, "arrival": "uniform"}, "--arrival"),
    ({"num_requests": 5, "arrival": "constant"}, "--arrival"),
])
def test_bad_load_flags_name_the_flag(kwargs, flag):
    with pytest.raises(UserError) as err:
        make_plan(**kwargs)
    assert flag in str(err.value) and "\n" not in str(err.value)
