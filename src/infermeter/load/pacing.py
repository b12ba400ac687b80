"""Waking the open-loop sender at its next arrival, to the microsecond, without spinning.

The event loop's own timers are coarse (uvloop: whole milliseconds), and
yielding iteration by iteration until an arrival is due keeps a core busy.
On Linux a timerfd armed for the arrival's ``perf_counter`` time makes the
loop's poll return at that instant; the sender then sends everything due.
Elsewhere (no timerfd) the loop's timer takes the wait to within ``SPIN_S``
and the rest is waited out by yielding.
"""

from __future__ import annotations

import asyncio
import time

from infermeter.load.monitor import TimerFD

SPIN_S = 0.0015  # without a timerfd: the last stretch before an arrival is waited out by yielding


class ArrivalWaiter:
    """``await waiter.until(t)`` returns once ``perf_counter() >= t`` (never early)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, use_timerfd: bool = True) -> None:
        self._loop = loop
        self._tfd: TimerFD | None = None
        self._fut: asyncio.Future | None = None
        if use_timerfd:
            try:
                self._tfd = TimerFD()
                loop.add_reader(self._tfd.fd, self._fired)
            except (OSError, AttributeError, NotImplementedError, ValueError):
                self.close()
        self.method = "timerfd" if self._tfd is not None else "spin"

    def _fired(self) -> None:
        if self._tfd is not None:
            self._tfd.drain()
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def until(self, t: float) -> None:
        clock = time.perf_counter
        if self._tfd is not None:
            while clock() < t:
                self._fut = self._loop.create_future()
                self._tfd.arm(t)
                await self._fut
            self._fut = None
            return
        delay = t - clock()
        if delay > SPIN_S:
            await asyncio.sleep(delay - SPIN_S)
        while clock() < t:
            await asyncio.sleep(0)

    def close(self) -> None:
        if self._tfd is not None:
            try:
                self._loop.remove_reader(self._tfd.fd)
            except (ValueError, OSError):
                pass
            self._tfd.close()
            self._tfd = None
