"""Load plans with exact semantics, precomputed as absolute send offsets.

Three modes, named honestly everywhere they are reported:

* ``burst``: all N requests are sent at once (what some write-ups call
  "batch size").  ``--request-rate inf`` without ``--max-concurrency``.
* ``concurrency``: a closed loop that keeps C requests in flight until N have
  been sent.  ``--request-rate inf --max-concurrency C``.
* ``rate``: an open loop with arrivals at rate lambda: Poisson (the default),
  gamma (``--burstiness`` b != 1: shape b, mean interval 1/lambda, so the
  coefficient of variation is 1/sqrt(b)) or constant.  ``--max-concurrency``
  may cap requests in flight on top; requests then wait in the client's queue
  and that wait is recorded per request.

Offsets are computed once, before the run, as absolute times from the run's
start, so late wake-ups never accumulate into drift: each send targets its own
absolute time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from infermeter.errors import UserError


class LoadMode(str, Enum):
    BURST = "burst"
    CONCURRENCY = "concurrency"
    RATE = "rate"


ARRIVALS = ("poisson", "gamma", "constant")


@dataclass(frozen=True)
class LoadPlan:
    mode: LoadMode
    num_requests: int
    request_rate: float  # math.inf for burst and concurrency
    max_concurrency: int | None
    burstiness: float
    arrival: str  # poisson | gamma | constant | none (burst/concurrency)
    warmup_requests: int = 0

    def describe(self) -> str:
        """One line a reader cannot misread."""
        n = self.num_requests
        if self.mode is LoadMode.BURST:
            text = f"burst: {n} requests sent at once"
        elif self.mode is LoadMode.CONCURRENCY:
            text = f"concurrency: {self.max_concurrency} requests kept in flight, {n} in all"
        else:
            kind = {"poisson": "Poisson", "constant": "constant-interval",
                    "gamma": f"gamma (burstiness {self.burstiness:g})"}[self.arrival]
            text = f"rate: {self.request_rate:g} req/s {kind} arrivals, {n} requests"
            if self.max_concurrency:
                text += f", at most {self.max_concurrency} in flight"
        if self.warmup_requests:
            text += f" (+{self.warmup_requests} warm-up requests, not counted)"
        return text

    def to_dict(self) -> dict:
        return {
            "mode": self.mode.value,
            "description": self.describe(),
            "num_requests": self.num_requests,
            "request_rate": "inf" if math.isinf(self.request_rate) else self.request_rate,
            "max_concurrency": self.max_concurrency,
            "burstiness": self.burstiness,
            "arrival": self.arrival,
            "warmup_requests": self.warmup_requests,
        }


def make_plan(
    num_requests: int,
    request_rate: float = math.inf,
    max_concurrency: int | None = None,
    burstiness: float = 1.0,
    arrival: str | None = None,
    warmup_requests: int = 0,
) -> LoadPlan:
    """Validate the load flags and name the mode they mean."""
    if num_requests < 1:
        raise UserError(f"--num-prompts {num_requests} must be at least 1", "pass --num-prompts N with N >= 1")
    if math.isnan(request_rate) or request_rate <= 0:
        raise UserError(f"--request-rate {request_rate:g} must be positive",
                        "pass a rate in requests/s, or inf to send without pacing")
    if max_concurrency is not None and max_concurrency < 1:
        raise UserError(f"--max-concurrency {max_concurrency} must be at least 1",
                        "pass --max-concurrency C with C >= 1, or leave it out")
    if not (burstiness > 0) or math.isinf(burstiness):
        raise UserError(f"--burstiness {burstiness:g} must be a positive finite number",
                        "use 1 for Poisson arrivals, <1 for burstier, >1 for more even")
    if warmup_requests < 0:
        raise UserError(f"--warmup-requests {warmup_requests} is negative", "pass 0 or more")
    if arrival is not None and arrival not in ARRIVALS:
        raise UserError(f"--arrival {arrival!r} is not known", f"use one of {', '.join(ARRIVALS)}")
    if math.isinf(request_rate):
        if arrival not in (None, "poisson"):
            raise UserError(f"--arrival {arrival} needs a finite --request-rate",
                            "pass --request-rate R (requests/s)")
        mode = LoadMode.CONCURRENCY if max_concurrency else LoadMode.BURST
        return LoadPlan(mode, num_requests, math.inf, max_concurrency, burstiness, "none", warmup_requests)
    if arrival is None:
        arrival = "poisson" if burstiness == 1.0 else "gamma"
    elif arrival == "poisson" and burstiness != 1.0:
        arrival = "gamma"
    return LoadPlan(LoadMode.RATE, num_requests, float(request_rate), max_concurrency, burstiness,
                    arrival, warmup_requests)


def arrival_offsets(plan: LoadPlan, seed: int, count: int | None = None) -> np.ndarray:
    """Absolute send offsets in seconds from the start, one per request.

    The first request goes at 0.  Burst and concurrency plans send everything
    at 0 (a concurrency plan's workers then pace themselves).
    """
    n = plan.num_requests if count is None else count
    if plan.mode is not LoadMode.RATE:
        return np.zeros(n)
    rng = np.random.default_rng(seed)
    mean = 1.0 / plan.request_rate
    if plan.arrival == "constant":
        intervals = np.full(n, mean)
    elif plan.arrival == "poisson":
        intervals = rng.exponential(mean, size=n)
    else:  # gamma with shape b and mean 1/lambda
        intervals = rng.gamma(shape=plan.burstiness, scale=mean / plan.burstiness, size=n)
    offsets = np.empty(n)
    offsets[0] = 0.0
    np.cumsum(intervals[:-1], out=offsets[1:])
    return offsets
