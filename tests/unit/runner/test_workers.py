import os

import pytest

from infermeter.errors import UserError
from infermeter.runner.workers import worker_cpus


def test_unset_leaves_workers_unpinned():
    assert worker_cpus(None, 3) == [None, None, None]
    assert worker_cpus(" ", 2) == [None, None]


def test_each_worker_gets_the_next_listed_core_round_robin():
    core = min(os.sched_getaffinity(0))
    assert worker_cpus(f"{core}", 3) == [core, core, core]
    allowed = sorted(os.sched_getaffinity(0))[:2]
    value = ",".join(map(str, allowed))
    assert worker_cpus(value, 3) == [allowed[0], allowed[-1], allowed[0]]


@pytest.mark.parametrize("value", ["a,b", ",", "-1", "1;2"])
def test_a_malformed_list_is_a_user_error(value):
    with pytest.raises(UserError, match="INFERMETER_WORKER_CPUS"):
        worker_cpus(value, 2)


def test_a_core_outside_the_allowed_set_is_a_user_error():
    with pytest.raises(UserError, match="may not run on"):
        worker_cpus(str(max(os.sched_getaffinity(0)) + 1000), 1)
