"""Live progress, refreshed a few times a second from its own coroutine.

It only reads the runner's counters; the request path never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator

from rich.console import Console
from rich.live import Live
from rich.text import Text

from infermeter.core.outcome import Counters


def _line(c: Counters, t0: float, tok0: int) -> Text:
    elapsed = max(time.perf_counter() - t0, 1e-9)
    rate = (c.output_tokens - tok0) / elapsed
    total = c.total or 1
    width = 30
    done = int(width * c.finished / total)
    bar = "█" * done + "░" * (width - done)
    return Text(
        f"{c.phase:<9} {bar} {c.finished}/{c.total} done  {c.in_flight} in flight  "
        f"{c.failed} failed  {rate:,.0f} output tok/s  {elapsed:,.0f}s"
    )


def live_progress(console: Console, refresh_hz: float = 4.0):
    @contextlib.asynccontextmanager
    async def factory(counters: Counters) -> AsyncIterator[None]:
        state = {"t0": time.perf_counter(), "phase": counters.phase}
        with Live(_line(counters, state["t0"], 0), console=console, auto_refresh=False, transient=True) as live:
            async def tick() -> None:
                while True:
                    await asyncio.sleep(1.0 / refresh_hz)
                    if counters.phase != state["phase"]:  # rates restart with each phase
                        state["phase"], state["t0"] = counters.phase, time.perf_counter()
                    live.update(_line(counters, state["t0"], 0), refresh=True)

            task = asyncio.ensure_future(tick())
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return factory
