"""The client watches itself: event-loop lag and CPU use during the measured window.

A timestamp is only as true as the loop that takes it.  A probe measures,
every ``interval`` seconds, how long a callback made ready waits before it
runs (one loop iteration); that wait is what any read or send waiting on the
loop suffered too.  ``judge_client`` turns the figures into the possible error of TTFT and ITL
(``client_error_bound_pct``) and a verdict: the run is client-bound when either
is over the tolerance (``CLIENT_ERROR_TOLERANCE_PCT`` unless set).
"""

from __future__ import annotations

import asyncio
from array import array
import os
import resource
import time

import numpy as np

from infermeter.core.outcome import ClientStats


class TimerFD:
    """A Linux timerfd on CLOCK_MONOTONIC (``time.perf_counter``'s clock), through libc."""

    CLOCK_MONOTONIC = 1
    TFD_NONBLOCK = 0o4000
    TFD_CLOEXEC = 0o2000000
    TFD_TIMER_ABSTIME = 1

    def __init__(self) -> None:
        import ctypes

        class Timespec(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

        class Itimerspec(ctypes.Structure):
            _fields_ = [("it_interval", Timespec), ("it_value", Timespec)]

        if not time.get_clock_info("perf_counter").implementation.endswith("(CLOCK_MONOTONIC)"):
            raise OSError("perf_counter is not CLOCK_MONOTONIC")
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        self._spec = Itimerspec()
        self._ref = ctypes.byref(self._spec)
        self.fd = libc.timerfd_create(self.CLOCK_MONOTONIC, self.TFD_NONBLOCK | self.TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")

    def arm(self, at: float) -> None:
        """Fire once at perf_counter time ``at``."""
        sec = int(at)
        value = self._spec.it_value
        value.tv_sec = sec
        value.tv_nsec = max(1, int((at - sec) * 1e9))
        if self._settime(self.fd, self.TFD_TIMER_ABSTIME, self._ref, None) != 0:
            raise OSError("timerfd_settime failed")

    def drain(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LoopMonitor:
    """Samples event-loop lag at random instants while the measured window runs.

    The lag at instant ``t`` is how long an event that happens at ``t`` (a
    network read arriving) waits before the loop runs its callback and
    timestamps it.  On Linux a timerfd set to expire at ``t`` is exactly such
    an event: the kernel makes it readable at ``t`` whatever the loop is
    doing, and the loop sees it through the same poll and I/O-callback path
    as a socket.  Probe instants are a Poisson process (mean ``interval``),
    so they neither alias with periodic token streams nor favour the loop's
    idle moments (Poisson arrivals see time averages); instants that pass
    while the loop is blocked are all counted when it comes back.  Timer
    lateness of the loop itself is never measured: uvloop rounds its timers
    to 1 ms, which would show an idle loop as lagging by up to 1 ms.

    Elsewhere (no timerfd) a callback probe stands in: every ``interval`` a
    callback stamps the clock and makes another ready, which runs one loop
    iteration later.  It misses busy periods that start between probes.

    ``burn`` is a test hook: ``(busy_ms, every_ms)`` runs a busy loop of
    ``busy_ms`` inside the event loop every ``every_ms``, a deliberately
    overloaded client.  ``INFERMETER_TEST_BURN="busy_ms:every_ms"`` sets it
    for a whole run.
    """

    def __init__(self, interval: float = 0.005, burn: tuple[float, float] | None = None,
                 method: str | None = None, seed: int | None = None) -> None:
        self.interval = interval
        self.burn = burn if burn is not None else burn_from_env()
        self.method = method  # "timerfd" | "callback" | None (the best available)
        self._rng = np.random.default_rng(seed)
        self._gaps: list[float] = []
        self._lags = array("d")  # 8 bytes a probe (200 a second: ~6 MB an hour)
        self._timer: asyncio.TimerHandle | None = None
        self._burn_timer: asyncio.TimerHandle | None = None
        self._tfd: TimerFD | None = None
        self._next = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._cpu0 = 0.0
        self._wall0 = 0.0

    def _gap(self) -> float:
        if not self._gaps:
            self._gaps = list(self._rng.exponential(self.interval, 1024))
        return self._gaps.pop()

    # -- timerfd probe ---------------------------------------------------------
    def _on_timerfd(self) -> None:
        now = time.perf_counter()
        tfd = self._tfd
        if tfd is None or not self._running:
            return
        tfd.drain()
        nxt = self._next
        lags = self._lags
        while nxt <= now:  # every probe instant that has passed waited until now
            lags.append(now - nxt)
            nxt += self._gap()
        self._next = nxt
        tfd.arm(nxt)

    # -- callback probe (fallback) --------------------------------------------
    def _tick(self) -> None:
        if self._running:
            self._loop.call_soon(self._stamp)

    def _stamp(self) -> None:
        # uvloop runs a callback made ready by a timer in the same iteration,
        # before the poll: stamp one hop later, measure one iteration after that.
        if self._running:
            self._loop.call_soon(self._measure, time.perf_counter())

    def _measure(self, t0: float) -> None:
        if self._running:
            self._lags.append(time.perf_counter() - t0)
            self._timer = self._loop.call_later(self._gap(), self._tick)

    def _burn(self) -> None:  # test hook: a client too busy to keep up
        if not self._running or self.burn is None:
            return
        busy_s, every_s = self.burn[0] / 1e3, self.burn[1] / 1e3
        end = time.perf_counter() + busy_s
        while time.perf_counter() < end:
            pass
        self._burn_timer = self._loop.call_later(max(every_s - busy_s, 0.0), self._burn)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._cpu0 = time.process_time()
        self._wall0 = time.perf_counter()
        if self.method in (None, "timerfd"):
            try:
                self._tfd = TimerFD()
                self._loop.add_reader(self._tfd.fd, self._on_timerfd)
                self._next = time.perf_counter() + self._gap()
                self._tfd.arm(self._next)
                self.method = "timerfd"
            except (OSError, AttributeError, NotImplementedError, ValueError):
                if self._tfd is not None:
                    self._tfd.close()
                    self._tfd = None
                if self.method == "timerfd":
                    raise
        if self._tfd is None:
            self.method = "callback"
            self._timer = self._loop.call_later(self._gap(), self._tick)
        if self.burn is not None:
            self._burn_timer = self._loop.call_later(self.burn[1] / 1e3, self._burn)

    async def stop(self) -> ClientStats:
        self._running = False
        for handle in (self._timer, self._burn_timer):
            if handle is not None:
                handle.cancel()
        if self._tfd is not None:
            self._loop.remove_reader(self._tfd.fd)
            self._tfd.close()
            self._tfd = None
        wall = max(time.perf_counter() - self._wall0, 1e-9)
        cpu = time.process_time() - self._cpu0
        lags = np.frombuffer(self._lags, dtype=float) * 1e3 if self._lags else np.zeros(1)
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
            loop_lag_p50_ms=float(np.percentile(lags, 50)),
            loop_lag_spread_ms=mean_difference(lags),
            probe=self.method,
        )


def mean_difference(values: np.ndarray) -> float:
    """Gini's mean difference, E|X - Y| for X, Y drawn independently from ``values``.

    An inter-token gap is stamped with the lag at its end minus the lag at
    its start, so this is how far the client moves a gap on average.
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n < 2:
        return 0.0
    weights = 2.0 * np.arange(n) - n + 1.0
    return float(2.0 * np.dot(weights, x) / (n * (n - 1)))


def burn_from_env() -> tuple[float, float] | None:
    text = os.environ.get("INFERMETER_TEST_BURN")
    if not text:
        return None
    busy, _, every = text.partition(":")
    return float(busy), float(every or busy)


#: Default tolerance on the client's possible error of a latency (percent of its mean): past it,
#: a run is client-bound and INVALID.  Chosen from measurements in docs/validity.md.
CLIENT_ERROR_TOLERANCE_PCT = 5.0


def client_error_bounds(stats: ClientStats, mean_ttft_ms: float | None, mean_itl_ms: float | None
                        ) -> dict[str, float | None]:
    """How far the client's own lag could move each latency, in percent of its mean (None: not measured).

    A read waits for the loop about as long as the probe's instants did, so a
    TTFT (send stamped at once, first token stamped late) is too long by the
    mean lag; an inter-token gap is stamped with the lag at its end minus the
    lag at its start, a constant lag cancels: the mean difference of two lags
    (``loop_lag_spread_ms``) is how far a gap moves.
    """
    lag = stats.loop_lag_mean_ms
    spread = stats.loop_lag_spread_ms if stats.loop_lag_spread_ms is not None else lag
    return {
        "ttft": 100.0 * lag / mean_ttft_ms if mean_ttft_ms and mean_ttft_ms > 0 else None,
        "itl": 100.0 * spread / mean_itl_ms if mean_itl_ms and mean_itl_ms > 0 else None,
    }


def judge_client(stats: ClientStats, mean_ttft_ms: float | None, mean_itl_ms: float | None,
                 threshold: float = CLIENT_ERROR_TOLERANCE_PCT / 100.0, cpu_limit: float = 0.9) -> None:
    """Record the client's possible error of TTFT and ITL (``client_error_bound_pct``) and mark the
    run client-bound when either is over ``threshold`` (a fraction of the mean).

    A client process busy more than ``cpu_limit`` of a core is said in ``cpu_busy``: it is not
    an error by itself (the lag shows what it cost), but the client is near its limit.
    The lag includes waiting for a CPU when the host is busy with other work:
    that delays timestamps just the same, so it counts too.
    """
    reasons = []
    lag = stats.loop_lag_mean_ms
    spread = stats.loop_lag_spread_ms if stats.loop_lag_spread_ms is not None else lag
    bounds = client_error_bounds(stats, mean_ttft_ms, mean_itl_ms)
    figures = f"event-loop lag mean {lag:.3f} ms, p99 {stats.loop_lag_p99_ms:.3f} ms"
    if bounds["ttft"] is not None and bounds["ttft"] > 100.0 * threshold:
        reasons.append(f"TTFT may read {lag:.3f} ms ({bounds['ttft']:.1f}%) high: {figures}, "
                       f"mean TTFT {mean_ttft_ms:.3f} ms")
    if bounds["itl"] is not None and bounds["itl"] > 100.0 * threshold:
        reasons.append(f"inter-token gaps may move by {spread:.3f} ms ({bounds['itl']:.1f}%): "
                       f"{figures}, mean ITL {mean_itl_ms:.3f} ms")
    stats.client_error_bound_pct = bounds
    stats.client_error_tolerance_pct = 100.0 * threshold
    stats.cpu_busy = stats.cpu_utilization > cpu_limit
    stats.reasons = reasons
    stats.client_bound = bool(reasons)


class GcPauses:
    """Counts the garbage collector's pauses (gc.callbacks)."""

    def __init__(self) -> None:
        self.total = self.longest = 0.0
        self.count = 0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            d = time.perf_counter() - self._t0
            self.total += d
            self.count += 1
            if d > self.longest:
                self.longest = d
