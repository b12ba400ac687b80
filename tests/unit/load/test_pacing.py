import asyncio
import sys
import time

import pytest

from infermeter.load.pacing import ArrivalWaiter


@pytest.mark.parametrize("use_timerfd", [True, False])
def test_until_never_returns_before_the_arrival(use_timerfd):
    async def go() -> tuple[str, list[float]]:
        waiter = ArrivalWaiter(asyncio.get_running_loop(), use_timerfd=use_timerfd)
        early = []
        try:
            start = time.perf_counter()
            for k in range(1, 40):
                due = start + k * 0.0007
                await waiter.until(due)
                early.append(time.perf_counter() - due)
            await waiter.until(time.perf_counter() - 1.0)  # already past: returns at once
        finally:
            waiter.close()
        return waiter.method, early

    method, early = asyncio.run(go())
    assert min(early) >= 0.0
    assert method == ("timerfd" if use_timerfd and sys.platform == "linux" else "spin")


def test_close_releases_the_timer_and_is_idempotent():
    async def go() -> None:
        loop = asyncio.get_running_loop()
        waiter = ArrivalWaiter(loop)
        waiter.close()
        waiter.close()
        await waiter.until(time.perf_counter() + 0.001)  # falls back to the loop's timer

    asyncio.run(go())
