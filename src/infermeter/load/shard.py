"""One slice of a run's schedule, so several processes (or hosts) can share one load.

``--shard i/N`` (``i`` counts from 0) takes every N-th request of the one
global plan, starting at request ``i``:

* rate λ: the global arrival schedule is computed once (same seed, same
  offsets in every shard) and shard ``i`` sends arrivals ``i, i+N, i+2N, ...``
  at their global times, so the union of all shards is exactly the unsharded
  schedule.  Each shard's own rate is λ/N.
* concurrency C: the closed loop keeps C/N in flight per shard; the first
  ``C mod N`` shards take one more, so the shares add up to C.  The requests
  (prompts ``i, i+N, ...``) are the same ones the unsharded run would send.
* burst of N requests: the shard sends its share, ``i, i+N, ...``, at once.
* a ``--max-concurrency`` cap on a rate plan is split like concurrency.
* warm-up requests are split the same way.

Every shard starts its measured window at one wall-clock epoch
(``--start-at``), so ``infermeter merge`` can put all records on one clock.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace

import numpy as np

from infermeter.errors import FieldError
from infermeter.load.schedule import LoadMode, LoadPlan, arrival_offsets

START_AT_TOLERANCE_S = 1.0  # a start time this far in the past is still accepted (started at once)

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    index: int  # 0 .. count-1
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        m = _SHARD.match(text or "")
        if not m:
            raise FieldError("load.shard", text, "{load.shard} {value!r} is not i/N",
                             "write e.g. {load.shard} 0/2 and {load.shard} 1/2 (i counts from 0)")
        index, count = int(m.group(1)), int(m.group(2))
        if count < 1:
            raise FieldError("load.shard", text, "{load.shard} {value!r}: N must be at least 1",
                             "write e.g. {load.shard} 0/2")
        if not 0 <= index < count:
            raise FieldError("load.shard", text, "{load.shard} {value!r}: i must be between 0 and {last}",
                             "shards of {count} are numbered 0/{count} .. {last}/{count}", last=count - 1, count=count)
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def whole(self) -> bool:
        return self.count == 1

    def indices(self, n: int) -> range:
        """Global request indices of this shard, in order."""
        return range(self.index, n, self.count)

    def share(self, total: int) -> int:
        """This shard's part of ``total`` (concurrency slots), remainder to the first shards."""
        return total // self.count + (1 if self.index < total % self.count else 0)

    def local_plan(self, plan: LoadPlan) -> LoadPlan:
        """The plan this shard runs by itself (its own request count, rate and concurrency)."""
        n = len(self.indices(plan.num_requests))
        if n == 0:
            raise FieldError("load.shard", str(self), "{load.shard} {value}: {n} requests leave shard {index} nothing "
                             "to send", "use at most {n} shards, or more {load.num_prompts}",
                             n=plan.num_requests, index=self.index)
        conc = plan.max_concurrency
        if conc is not None:
            conc = self.share(conc)
            if conc == 0:
                raise FieldError("load.shard", str(self), "{load.shard} {value}: {load.max_concurrency} {conc} is "
                                 "smaller than the {count} shards", "use at most {conc} shards",
                                 conc=plan.max_concurrency, count=self.count)
        rate = plan.request_rate if plan.mode is not LoadMode.RATE else plan.request_rate / self.count
        warm = len(self.indices(plan.warmup_requests))
        return replace(plan, num_requests=n, max_concurrency=conc, request_rate=rate, warmup_requests=warm)

    def offsets(self, plan: LoadPlan, seed: int) -> np.ndarray:
        """This shard's send offsets: its slice of the one global schedule."""
        return arrival_offsets(plan, seed)[self.index::self.count]

    def to_dict(self, plan: LoadPlan) -> dict:
        local = self.local_plan(plan)
        return {"index": self.index, "count": self.count, "requests": local.num_requests,
                "max_concurrency": local.max_concurrency, "global_load": plan.to_dict(),
                "description": f"shard {self} of: {plan.describe()}"}


def check_start_at(start_at: float | None, now: float | None = None) -> None:
    """Refuse a start time already past by more than the tolerance."""
    if start_at is None:
        return
    now = time.time() if now is None else now
    late = now - start_at
    if late > START_AT_TOLERANCE_S:
        raise FieldError("load.start_at", start_at, "{load.start_at} {value:.3f} is {late:.1f} s in the past",
                         "give a wall-clock epoch in the future, e.g. $(($(date +%s) + 30)) for every shard",
                         late=late)


async def sleep_until_epoch(start_at: float) -> float:
    """Sleep until wall-clock ``start_at``; return the perf_counter reading that corresponds to it.

    The coarse wait uses the loop's timer; the last millisecond is spun so the
    measured window's origin lands within microseconds of the epoch on every
    shard.  A start time in the past (within the tolerance) starts at once,
    with the origin still placed at ``start_at`` so the schedules line up.
    """
    import asyncio

    check_start_at(start_at)
    origin = time.perf_counter() + (start_at - time.time())
    while True:
        left = origin - time.perf_counter()
        if left <= 0:
            return origin
        if left > 0.002:
            await asyncio.sleep(left - 0.0015)
        else:
            while time.perf_counter() < origin:
                pass
            return origin
