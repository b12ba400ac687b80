"""The client's self-check: the event-loop lag probe and the client-bound verdict."""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import pytest

from infermeter.core.outcome import ClientStats
from infermeter.load.monitor import CLIENT_ERROR_TOLERANCE_PCT, LoopMonitor, judge_client, mean_difference

uvloop = pytest.importorskip("uvloop")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux-only")


def _probe(run, seconds=0.6, **kw) -> ClientStats:
    async def go():
        mon = LoopMonitor(**kw)
        mon.start()
        await asyncio.sleep(seconds)
        return await mon.stop()

    return run(go())


def _stats(mean=0.0, p99=0.0, spread=None, cpu=0.1) -> ClientStats:
    return ClientStats(loop_lag_mean_ms=mean, loop_lag_p99_ms=p99, loop_lag_max_ms=p99, loop_samples=100,
                       cpu_seconds=cpu, wall_seconds=1.0, cpu_utilization=cpu, max_rss_mib=1.0,
                       loop_lag_spread_ms=spread)


def test_verdict_grades_the_possible_error_against_the_tolerance():
    s = _stats(mean=0.6, spread=0.06)
    judge_client(s, mean_ttft_ms=50.0, mean_itl_ms=5.0)  # 1.2% of TTFT, 1.2% of ITL: stated, under 5%
    assert not s.client_bound and s.reasons == []
    assert s.client_error_bound_pct == {"ttft": pytest.approx(1.2), "itl": pytest.approx(1.2)}
    assert s.client_error_tolerance_pct == CLIENT_ERROR_TOLERANCE_PCT == 5.0
    s = _stats(mean=3.0, spread=0.04)
    judge_client(s, 50.0, 5.0)  # 6% of TTFT
    assert s.client_bound and len(s.reasons) == 1 and "TTFT" in s.reasons[0] and "3.000 ms" in s.reasons[0]
    s = _stats(mean=0.1, spread=0.3)
    judge_client(s, 50.0, 5.0)  # gaps move 6% of ITL
    assert s.client_bound and "inter-token" in s.reasons[0] and "lag mean 0.100 ms" in s.reasons[0]
    s = _stats(mean=0.6, spread=0.06)
    judge_client(s, 50.0, 5.0, threshold=0.01)  # a stricter tolerance, as a user may set
    assert s.client_bound and len(s.reasons) == 2
    s = _stats(cpu=0.95)
    judge_client(s, 50.0, 5.0)  # a busy core is said, but is no error by itself
    assert s.cpu_busy and not s.client_bound
    s = _stats(mean=5.0, spread=5.0)
    judge_client(s, None, None)  # nothing measured: nothing to move
    assert not s.client_bound and s.client_error_bound_pct == {"ttft": None, "itl": None}


def test_mean_difference_is_gini_mean_difference():
    assert mean_difference(np.array([1.0, 1.0, 1.0])) == 0.0  # a constant lag cancels in a gap
    x = np.array([0.0, 1.0, 3.0])
    pairs = [abs(a - b) for i, a in enumerate(x) for j, b in enumerate(x) if i != j]
    assert mean_difference(x) == pytest.approx(np.mean(pairs))
    assert mean_difference(np.array([2.0])) == 0.0


@linux_only
def test_idle_uvloop_is_not_reported_lagging_by_its_timer_granularity():
    # uvloop rounds timers to 1 ms; a probe that measured timer lateness would
    # show an idle loop ~0.5 ms late at the median.  The timerfd probe sees the
    # loop's real wait (tens of microseconds, more on a busy host).
    s = _probe(uvloop.run)
    assert s.probe == "timerfd"
    assert s.loop_samples > 40
    assert s.loop_lag_p50_ms < 0.45
    judge_client(s, mean_ttft_ms=100.0, mean_itl_ms=None)
    assert not s.client_bound, s.reasons


@linux_only
@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_cpu_burn_in_the_loop_is_seen_and_flagged(run):
    idle = _probe(run)
    burnt = _probe(run, burn=(4.0, 5.0))  # busy 4 ms of every 5: random instants wait ~1.6 ms
    assert burnt.loop_lag_mean_ms > 0.8
    assert burnt.loop_lag_mean_ms > 3 * idle.loop_lag_mean_ms
    # ~1.6 ms of lag is 1.6 % of a 100 ms TTFT (within the 5 % tolerance) and ~8 % of a 20 ms one
    judge_client(burnt, mean_ttft_ms=10.0, mean_itl_ms=5.0)
    assert burnt.client_bound
    assert any("TTFT" in r for r in burnt.reasons) and any("inter-token" in r for r in burnt.reasons)


def test_callback_probe_fallback_works_and_stops_cleanly():
    s = _probe(asyncio.run, seconds=0.3, method="callback")
    assert s.probe == "callback" and s.loop_samples > 10
    assert s.loop_lag_mean_ms < 50


def test_burn_hook_reads_the_environment(monkeypatch):
    monkeypatch.setenv("INFERMETER_TEST_BURN", "2:3")
    assert LoopMonitor().burn == (2.0, 3.0)
    monkeypatch.delenv("INFERMETER_TEST_BURN")
    assert LoopMonitor().burn is None
