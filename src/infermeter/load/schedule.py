"""Load plans with exact semantics, precomputed as absolute send offsets.

Three modes, named honestly everywhere they are reported:

* ``burst``: all N requests are sent at once (what some write-ups call
  "batch size").  ``--request-rate inf`` without ``--max-concurrency``.
* ``concurrency``: a closed loop that keeps C requests in flight until N have
  been sent.  ``--request-rate inf --max-concurrency C``.
* ``rate``: an open loop with arrivals at rate lambda: Poisson (the default),
  gamma (``--burstiness`` b != 1: shape b, mean interval 1/lambda, so the
  coefficient of variation is 1/sqrt(b)) or constant (``--burstiness inf``).
  ``--max-concurrency`` may cap requests in flight on top; requests then wait
  in the client's queue and that wait is recorded per request.  A ramp-up
  (``--ramp-up-strategy linear|exponential``) changes the rate from request to
  request, as vLLM defines it.  A step load (``--rate-steps 2,4,8
  --step-hold-s 10``) holds each rate for a fixed time: step k sends
  ``round(rate_k * hold)`` requests inside its own window, so the count is set
  by the steps (``--num-prompts`` does not apply).
* ``trace``: a replayed trace's own send times, scaled by ``--trace-speed``
  (``trace_plan``; the workload gives the offsets).

A time-bounded run (``--duration S``) has no fixed count: a rate plan's
arrivals are the plain renewal process cut at S (the count follows from the
seed), a concurrency plan's workers keep sending until S.  What happens to
requests still in flight at S is the load generator's business (grace, then
cut off; docs/workloads.md).

Every rate request carries the rate offered when it was scheduled
(``offered_rates``): the fixed rate, the ramp's rate at that request, or the
step's rate.

Two schedules of rate arrivals (``LoadPlan.schedule``):

* ``vllm`` (the default, what ``vllm bench serve`` does): N intervals are
  drawn, their running sum gives the send times (the first request waits one
  drawn interval), and without a ramp-up the times are rescaled so that the
  last send lands exactly at N / rate.  The scheduled offered rate is then the
  target rate, whatever the seed.
* ``unscaled``: the first request at 0, then the plain renewal process (N - 1
  drawn intervals); the offered rate of a finite run varies with the seed.

Offsets are computed once, before the run, as absolute times from the run's
start, so late wake-ups never accumulate into drift: each send targets its own
absolute time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from infermeter.errors import FieldError


class LoadMode(str, Enum):
    BURST = "burst"
    CONCURRENCY = "concurrency"
    RATE = "rate"


ARRIVALS = ("poisson", "gamma", "constant")
SCHEDULES = ("vllm", "unscaled")
RAMP_STRATEGIES = ("linear", "exponential")


@dataclass(frozen=True)
class LoadPlan:
    mode: LoadMode
    num_requests: int
    request_rate: float  # math.inf for burst and concurrency
    max_concurrency: int | None
    burstiness: float
    arrival: str  # poisson | gamma | constant | none (burst/concurrency)
    warmup_requests: int = 0
    schedule: str = "vllm"  # vllm (rescaled to end at N/rate) | unscaled; see the module doc
    ramp_up: tuple[str, float, float] | None = None  # (strategy, start rps, end rps)
    steps: tuple[float, ...] | None = None  # a step load's rates, each held step_hold_s seconds
    step_hold_s: float | None = None
    duration_s: float | None = None  # a time-bounded run: nothing is sent after this (from the start)
    duration_grace_s: float = 0.0  # then requests in flight get this long before they are cut off
    trace_speed: float | None = None  # a trace replay (arrival "trace") at this speed factor

    def describe(self) -> str:
        """One line a reader cannot misread."""
        n = self.num_requests
        if self.mode is LoadMode.BURST:
            text = f"burst: {n} requests sent at once"
        elif self.mode is LoadMode.CONCURRENCY:
            text = (f"concurrency: {self.max_concurrency} requests kept in flight, "
                    + (f"for {self.duration_s:g} s" if self.duration_s else f"{n} in all"))
        elif self.arrival == "trace":
            text = f"trace replay at {self.trace_speed:g}x its own timing, {n} requests"
            if self.max_concurrency:
                text += f", at most {self.max_concurrency} in flight"
        elif self.steps:
            rates = ", ".join(f"{r:g}" for r in self.steps)
            text = (f"rate: steps of {rates} req/s, {self.step_hold_s:g} s each, "
                    f"{'Poisson' if self.arrival == 'poisson' else self.arrival} arrivals, {n} requests")
            if self.max_concurrency:
                text += f", at most {self.max_concurrency} in flight"
        else:
            kind = {"poisson": "Poisson", "constant": "constant-interval",
                    "gamma": f"gamma (burstiness {self.burstiness:g})"}[self.arrival]
            if self.ramp_up:
                strategy, start, end = self.ramp_up
                text = f"rate: {strategy} ramp-up from {start:g} to {end:g} req/s, {kind} arrivals, {n} requests"
            else:
                text = f"rate: {self.request_rate:g} req/s {kind} arrivals, {n} requests"
                if self.duration_s:
                    text += f" over {self.duration_s:g} s"
                elif self.schedule == "unscaled":
                    text += " (unscaled schedule)"
            if self.max_concurrency:
                text += f", at most {self.max_concurrency} in flight"
        if self.warmup_requests:
            text += f" (+{self.warmup_requests} warm-up requests, not counted)"
        if self.duration_s:
            text += f"; then {self.duration_grace_s:g} s grace for requests in flight, the rest cut off"
        return text

    def to_dict(self) -> dict:
        return {
            "mode": self.mode.value,
            "description": self.describe(),
            "num_requests": self.num_requests,
            "request_rate": "inf" if math.isinf(self.request_rate) else self.request_rate,
            "max_concurrency": self.max_concurrency,
            "burstiness": "inf" if math.isinf(self.burstiness) else self.burstiness,
            "arrival": self.arrival,
            "warmup_requests": self.warmup_requests,
            "schedule": self.schedule if self.mode is LoadMode.RATE else None,
            "ramp_up": ({"strategy": self.ramp_up[0], "start_rps": self.ramp_up[1], "end_rps": self.ramp_up[2]}
                        if self.ramp_up else None),
            "steps": ({"rates": list(self.steps), "hold_s": self.step_hold_s} if self.steps else None),
            "duration_s": self.duration_s,
            "duration_grace_s": self.duration_grace_s if self.duration_s else None,
            "trace_speed": self.trace_speed,
        }


def make_plan(
    num_requests: int,
    request_rate: float = math.inf,
    max_concurrency: int | None = None,
    burstiness: float = 1.0,
    arrival: str | None = None,
    warmup_requests: int = 0,
    schedule: str = "vllm",
    ramp_up: tuple[str, float | None, float | None] | None = None,
    *,
    steps: tuple[float, ...] | None = None,
    step_hold_s: float | None = None,
    duration: float | None = None,
    duration_grace: float = 30.0,
    seed: int = 0,
) -> LoadPlan:
    """Validate the load flags and name the mode they mean.

    ``burstiness`` inf means constant intervals (vLLM's meaning); ``ramp_up``
    is ``(strategy, start_rps, end_rps)`` with ``request_rate`` left at inf,
    checked as ``vllm bench serve`` checks it."""
    if num_requests < 1:
        raise FieldError("load.num_prompts", num_requests, "{load.num_prompts} {value} must be at least 1",
                         "pass {load.num_prompts} N with N >= 1")
    if math.isnan(request_rate) or request_rate <= 0:
        raise FieldError("load.request_rate", request_rate, "{load.request_rate} {value:g} must be positive",
                         "pass a rate in requests/s, or inf to send without pacing")
    if max_concurrency is not None and max_concurrency < 1:
        raise FieldError("load.max_concurrency", max_concurrency, "{load.max_concurrency} {value} must be at least 1",
                         "pass {load.max_concurrency} C with C >= 1, or leave it out")
    if not (burstiness > 0):
        raise FieldError("load.burstiness", burstiness, "{load.burstiness} {value:g} must be positive",
                        "use 1 for Poisson arrivals, <1 for burstier, >1 for more even, inf for constant")
    if schedule not in SCHEDULES:
        raise FieldError("load.rate_schedule", schedule, "{load.rate_schedule} {value!r} is not known",
                         "use one of {known}", known=", ".join(SCHEDULES))
    if warmup_requests < 0:
        raise FieldError("load.warmup_requests", warmup_requests, "{load.warmup_requests} {value} is negative",
                         "pass 0 or more")
    if arrival is not None and arrival not in ARRIVALS:
        raise FieldError("load.arrival", arrival, "{load.arrival} {value!r} is not known", "use one of {known}",
                         known=", ".join(ARRIVALS))
    if steps is not None or step_hold_s is not None or duration is not None:
        return _timed_plan(num_requests, request_rate, max_concurrency, burstiness, arrival, warmup_requests,
                           schedule, ramp_up, steps, step_hold_s, duration, duration_grace, seed)
    if ramp_up is not None and ramp_up[0] is not None:
        return _ramp_plan(num_requests, request_rate, max_concurrency, burstiness, arrival, warmup_requests,
                          schedule, ramp_up)
    if ramp_up is not None and (ramp_up[1] is not None or ramp_up[2] is not None):
        raise FieldError("load.ramp_up_strategy", None, "{load.ramp_up_start_rps}/{load.ramp_up_end_rps} need "
                         "{load.ramp_up_strategy}", "add {load.ramp_up_strategy} linear or exponential")
    if math.isinf(request_rate):
        if arrival not in (None, "poisson"):
            raise FieldError("load.arrival", arrival, "{load.arrival} {value} needs a finite {load.request_rate}",
                             "pass {load.request_rate} R (requests/s)")
        mode = LoadMode.CONCURRENCY if max_concurrency else LoadMode.BURST
        return LoadPlan(mode, num_requests, math.inf, max_concurrency, burstiness, "none", warmup_requests)
    arrival = _arrival(arrival, burstiness)
    return LoadPlan(LoadMode.RATE, num_requests, float(request_rate), max_concurrency, burstiness,
                    arrival, warmup_requests, schedule)


def _arrival(arrival: str | None, burstiness: float) -> str:
    if math.isinf(burstiness):
        if arrival not in (None, "constant"):
            raise FieldError("load.arrival", arrival, "{load.arrival} {value} contradicts {load.burstiness} inf "
                             "(constant intervals)", "drop one of them")
        return "constant"
    if arrival is None:
        return "poisson" if burstiness == 1.0 else "gamma"
    if arrival == "poisson" and burstiness != 1.0:
        return "gamma"
    return arrival


def _ramp_plan(num_requests, request_rate, max_concurrency, burstiness, arrival, warmup_requests, schedule,
               ramp_up) -> LoadPlan:
    """A ramp-up plan, with vLLM's checks (vllm/benchmarks/serve.py)."""
    strategy, start, end = ramp_up
    if strategy not in RAMP_STRATEGIES:
        raise FieldError("load.ramp_up_strategy", strategy, "{load.ramp_up_strategy} {value!r} is not known",
                         "use linear or exponential")
    if not math.isinf(request_rate):
        raise FieldError("load.request_rate", request_rate, "{load.ramp_up_strategy} sets the rate itself, so "
                         "{load.request_rate} cannot be given with it", "drop {load.request_rate}")
    if start is None or end is None:
        raise FieldError("load.ramp_up_strategy", strategy, "{load.ramp_up_strategy} needs both "
                         "{load.ramp_up_start_rps} and {load.ramp_up_end_rps}",
                         "add e.g. {load.ramp_up_start_rps} 1 {load.ramp_up_end_rps} 20")
    if start < 0 or end < 0:
        raise FieldError("load.ramp_up_start_rps", start, "{load.ramp_up_start_rps} and {load.ramp_up_end_rps} "
                         "must not be negative", "give rates >= 0")
    if start > end:
        raise FieldError("load.ramp_up_start_rps", start, "{load.ramp_up_start_rps} {value:g} is above "
                         "{load.ramp_up_end_rps} {end:g}", "give a start rate below the end rate", end=end)
    if start == 0:
        # vLLM refuses 0 for exponential; for linear its first interval would be 1/0 (it fails an assertion)
        raise FieldError("load.ramp_up_start_rps", start, "{load.ramp_up_start_rps} 0: the first request's rate "
                         "would be 0", "start the ramp at 1 req/s or more")
    return LoadPlan(LoadMode.RATE, num_requests, math.inf, max_concurrency, burstiness,
                    _arrival(arrival, burstiness), warmup_requests, schedule, (strategy, float(start), float(end)))


def _timed_plan(num_requests, request_rate, max_concurrency, burstiness, arrival, warmup_requests, schedule,
                ramp_up, steps, step_hold_s, duration, duration_grace, seed) -> LoadPlan:
    """A step load (``steps`` held ``step_hold_s`` each) or a time-bounded run (``duration``)."""
    if ramp_up is not None and any(v is not None for v in ramp_up):
        raise FieldError("load.ramp_up_strategy", ramp_up[0], "{load.ramp_up_strategy} cannot be combined with "
                         "{load.rate_steps} or {load.duration}",
                         "use a ramp (a request count) or steps/{load.duration} (a length in time), not both")
    if duration_grace is None or not 0 <= duration_grace < math.inf:
        raise FieldError("load.duration_grace", duration_grace, "{load.duration_grace} {value} must be 0 or more "
                         "seconds", "pass e.g. {load.duration_grace} 30")
    if steps is not None or step_hold_s is not None:
        if not steps or step_hold_s is None:
            raise FieldError("load.rate_steps", steps, "{load.rate_steps} and {load.step_hold_s} go together",
                             "pass e.g. {load.rate_steps} 2,4,8 {load.step_hold_s} 10")
        if duration is not None:
            raise FieldError("load.duration", duration, "{load.duration} cannot be combined with {load.rate_steps}: "
                             "the steps set the run's length",
                             "drop {load.duration} (the run lasts steps x {load.step_hold_s})")
        if not math.isinf(request_rate):
            raise FieldError("load.request_rate", request_rate, "{load.rate_steps} sets the rate itself, so "
                             "{load.request_rate} cannot be given with it", "drop {load.request_rate}")
        if any(not 0 < r < math.inf for r in steps):
            raise FieldError("load.rate_steps", steps, "{load.rate_steps} {shown} must all be positive finite rates",
                             "pass requests/s per step, e.g. {load.rate_steps} 2,4,8",
                             shown=",".join(f"{r:g}" for r in steps))
        if not 0 < step_hold_s < math.inf:
            raise FieldError("load.step_hold_s", step_hold_s, "{load.step_hold_s} {value:g} must be positive",
                             "pass seconds per step, e.g. 10")
        counts = [round(r * step_hold_s) for r in steps]
        if sum(counts) < 1:
            raise FieldError("load.rate_steps", steps, "{load.rate_steps} x {load.step_hold_s} schedule no request",
                             "raise the rates or the hold time")
        return LoadPlan(LoadMode.RATE, sum(counts), math.inf, max_concurrency, burstiness,
                        _arrival(arrival, burstiness), warmup_requests, "unscaled",
                        steps=tuple(float(r) for r in steps), step_hold_s=float(step_hold_s))
    if not 0 < duration < math.inf:
        raise FieldError("load.duration", duration, "{load.duration} {value:g} must be a positive number of "
                         "seconds", "pass e.g. {load.duration} 60")
    if math.isinf(request_rate):
        if not max_concurrency:
            raise FieldError("load.duration", duration, "{load.duration} needs a load that paces itself: a "
                             "{load.request_rate} or a {load.max_concurrency}",
                             "add {load.max_concurrency} C (a closed loop for the whole duration) or "
                             "{load.request_rate} R")
        return LoadPlan(LoadMode.CONCURRENCY, num_requests, math.inf, max_concurrency, burstiness, "none",
                        warmup_requests, duration_s=float(duration), duration_grace_s=float(duration_grace))
    plan = LoadPlan(LoadMode.RATE, 1, float(request_rate), max_concurrency, burstiness,
                    _arrival(arrival, burstiness), warmup_requests, "unscaled",
                    duration_s=float(duration), duration_grace_s=float(duration_grace))
    # The renewal process cut at the duration: its first draws do not depend on how many are drawn.
    n = max(16, math.ceil(request_rate * duration * 1.5) + 16)
    while True:
        offsets = arrival_offsets(plan, seed, n)
        if offsets[-1] >= duration:
            break
        n *= 2
    count = max(1, int(np.searchsorted(offsets, duration, side="left")))
    return replace(plan, num_requests=count)


def trace_plan(plan: LoadPlan, num_requests: int, speed: float, duration: float | None = None,
               duration_grace: float = 30.0) -> LoadPlan:
    """The plan of a trace replay: the trace's own times (given to the runner as offsets), its count;
    a ``duration`` cuts the trace there."""
    if duration is not None and not 0 < duration < math.inf:
        raise FieldError("load.duration", duration, "{load.duration} {value:g} must be a positive number of "
                         "seconds", "pass e.g. {load.duration} 60")
    if not 0 <= duration_grace < math.inf:
        raise FieldError("load.duration_grace", duration_grace, "{load.duration_grace} {value:g} must be 0 or "
                         "more seconds", "pass e.g. {load.duration_grace} 30")
    if not 0 < speed < math.inf:
        raise FieldError("workload.trace_speed", speed, "{workload.trace_speed} {value:g} must be a positive factor",
                         "pass e.g. {workload.trace_speed} 1 (2: twice as fast)")
    if plan.mode is LoadMode.RATE or plan.steps:
        raise FieldError("load.request_rate", plan.request_rate, "a trace replays on its own schedule: "
                         "{load.request_rate}, {load.rate_steps} and {load.ramp_up_strategy} do not apply",
                         "drop them (scale the trace with {workload.trace_speed}; cap it with "
                         "{load.max_concurrency})")
    return LoadPlan(LoadMode.RATE, num_requests, math.inf, plan.max_concurrency, 1.0, "trace",
                    plan.warmup_requests, "unscaled", duration_s=duration,
                    duration_grace_s=float(duration_grace), trace_speed=float(speed))


def offered_rates(plan: LoadPlan, n: int | None = None) -> np.ndarray | None:
    """The rate each request was offered at (requests/s), for the records; None when the plan
    has no rate (burst, concurrency, a trace replay)."""
    n = plan.num_requests if n is None else n
    if plan.mode is not LoadMode.RATE or plan.arrival == "trace":
        return None
    if plan.ramp_up:
        return ramp_rates(plan, n)
    if plan.steps:
        counts = [round(r * plan.step_hold_s) for r in plan.steps]  # type: ignore[operator]
        return np.repeat(np.asarray(plan.steps, dtype=float), counts)[:n]
    return np.full(n, plan.request_rate)


def _step_offsets(plan: LoadPlan, seed: int) -> np.ndarray:
    """Step k's requests inside its own window [k*hold, (k+1)*hold): Poisson arrivals are
    sorted uniform times (a Poisson process given its count), constant ones evenly spaced,
    gamma ones drawn intervals rescaled to the window."""
    rng = np.random.default_rng(seed)
    hold = float(plan.step_hold_s)  # type: ignore[arg-type]
    out = []
    for k, rate in enumerate(plan.steps or ()):
        m = round(rate * hold)
        if m == 0:
            continue
        if plan.arrival == "constant":
            local = np.arange(m) * (hold / m)
        elif plan.arrival == "poisson":
            local = np.sort(rng.uniform(0.0, hold, size=m))
        else:
            gaps = rng.gamma(shape=plan.burstiness, scale=1.0, size=m + 1)
            local = np.cumsum(gaps)[:-1] * (hold / gaps.sum())
        out.append(k * hold + local)
    return np.concatenate(out) if out else np.zeros(0)


def ramp_rates(plan: LoadPlan, n: int) -> np.ndarray:
    """Each request's rate under the plan's ramp-up: request i of n is at progress i/(n-1)."""
    strategy, start, end = plan.ramp_up  # type: ignore[misc]
    progress = np.arange(n) / max(n - 1, 1)
    if strategy == "linear":
        return start + (end - start) * progress
    return start * (end / start) ** progress


def arrival_offsets(plan: LoadPlan, seed: int, count: int | None = None) -> np.ndarray:
    """Absolute send offsets in seconds from the start, one per request.

    The first request goes at 0.  Burst and concurrency plans send everything
    at 0 (a concurrency plan's workers then pace themselves).
    """
    n = plan.num_requests if count is None else count
    if plan.mode is not LoadMode.RATE:
        return np.zeros(n)
    if plan.arrival == "trace":
        raise ValueError("a trace replay's offsets come from the trace (the workload), not the plan")
    if plan.steps:
        return _step_offsets(plan, seed)[:n]
    rng = np.random.default_rng(seed)
    mean = 1.0 / (ramp_rates(plan, n) if plan.ramp_up else np.full(n, plan.request_rate))
    if plan.arrival == "constant":
        intervals = mean
    elif plan.arrival == "poisson":
        intervals = rng.exponential(mean)
    else:  # gamma with shape b and mean 1/lambda
        intervals = rng.gamma(shape=plan.burstiness, scale=mean / plan.burstiness)
    if plan.schedule == "unscaled" and not plan.ramp_up:
        offsets = np.empty(n)
        offsets[0] = 0.0
        np.cumsum(intervals[:-1], out=offsets[1:])
        return offsets
    offsets = np.cumsum(intervals)  # vLLM: the first request waits one interval too
    if not plan.ramp_up and offsets[-1] > 0:
        offsets *= (n / plan.request_rate) / offsets[-1]  # the last send at exactly N / rate
    return offsets


def offered_rate(offsets: np.ndarray) -> float | None:
    """The scheduled offered rate: requests / time from the run's start to the last scheduled send
    (None for a plan that sends everything at once)."""
    if len(offsets) == 0 or offsets[-1] <= 0:
        return None
    return float(len(offsets) / offsets[-1])
