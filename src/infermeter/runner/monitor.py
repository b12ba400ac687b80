"""The client watches itself: event-loop lag and CPU use during the measured window.

A timestamp is only as true as the loop that takes it.  A sampler coroutine
measures, every ``interval`` seconds, how long a callback made ready waits
before it runs; that wait is what any read or send waiting on the loop
suffered too.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClientStats:
    loop_lag_mean_ms: float
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
    loop_samples: int
    cpu_seconds: float
    wall_seconds: float
    cpu_utilization: float  # CPU seconds per wall second of the client process
    max_rss_mib: float
    dispatch_lag_p99_ms: float | None = None
    dispatch_lag_max_ms: float | None = None
    client_bound: bool = False
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class LoopMonitor:
    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self._lags: list[float] = []
        self._task: asyncio.Task | None = None
        self._cpu0 = 0.0
        self._wall0 = 0.0

    async def _run(self) -> None:
        # Timer wake-ups are rounded to the loop's clock resolution (1 ms), so
        # the probe measures ready-queue latency instead: how long a callback
        # made ready now waits before it runs.  That is the delay a network
        # read suffers between arriving and being timestamped.
        loop = asyncio.get_running_loop()
        clock = time.perf_counter
        interval = self.interval
        lags = self._lags
        while True:
            await asyncio.sleep(interval)
            fut = loop.create_future()
            t = clock()
            loop.call_soon(fut.set_result, None)
            await fut
            lags.append(clock() - t)

    def start(self) -> None:
        self._cpu0 = time.process_time()
        self._wall0 = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> ClientStats:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        wall = max(time.perf_counter() - self._wall0, 1e-9)
        cpu = time.process_time() - self._cpu0
        lags = np.asarray(self._lags) * 1e3 if self._lags else np.zeros(1)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
        return ClientStats(
            loop_lag_mean_ms=float(lags.mean()),
            loop_lag_p99_ms=float(np.percentile(lags, 99)),
            loop_lag_max_ms=float(lags.max()),
            loop_samples=len(self._lags),
            cpu_seconds=cpu,
            wall_seconds=wall,
            cpu_utilization=cpu / wall,
            max_rss_mib=rss,
        )


def judge_client(stats: ClientStats, mean_ttft_ms: float | None, mean_itl_ms: float | None,
                 threshold: float = 0.01) -> None:
    """Mark the run client-bound when the client's own lag could move a latency by > threshold."""
    reasons = []
    lag = stats.loop_lag_mean_ms
    for name, value in (("TTFT", mean_ttft_ms), ("ITL", mean_itl_ms)):
        if value and value > 0 and lag > threshold * value:
            reasons.append(f"mean event-loop lag {lag:.3f} ms is {100 * lag / value:.1f}% of mean {name} {value:.3f} ms")
    if stats.cpu_utilization > 0.9 and (os.cpu_count() or 1) >= 1:
        reasons.append(f"the client used {100 * stats.cpu_utilization:.0f}% of a core")
    stats.reasons = reasons
    stats.client_bound = bool(reasons)
