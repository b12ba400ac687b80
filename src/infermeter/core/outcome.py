"""What one run produced, as every layer above the load generator sees it.

``RunOutcome`` is the load generator's answer; ``ClientStats`` is the client's
account of itself; ``Counters`` are the live numbers a progress display reads
(with live TTFT/ITL/E2EL histograms, core/livestats.py);
``StopPolicy`` is when a run gives up early.  Nothing here imports the rest of
infermeter: these types are the contract between the layers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from infermeter.core.livestats import LatencySnapshot, LiveLatencies
from infermeter.core.records import RequestRecord


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
    loop_lag_p50_ms: float | None = None
    probe: str | None = None  # how the lag was sampled: timerfd | callback
    loop_lag_spread_ms: float | None = None  # mean |lag1 - lag2| of two random instants (moves a gap)
    gc_pause_total_ms: float | None = None  # garbage-collector pauses inside the window
    gc_pause_max_ms: float | None = None
    gc_collections: int | None = None
    finish_backlog_max: int | None = None  # completed responses queued for interpretation, at most
    client_error_bound_pct: dict | None = None  # {"ttft", "itl"}: how far the lag could move each, % of its mean
    client_error_tolerance_pct: float | None = None  # the bound past which the run is client-bound
    cpu_busy: bool | None = None  # the client process used nearly a whole core
    prompts_built_ahead: int | None = None  # measured prompts built before the first send (None: all of them)
    prompt_waits: int | None = None  # sends that waited for their prompt to be built (load/feed.py)
    prompt_wait_s: float | None = None  # seconds those sends waited, in all

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class StopPolicy:
    max_errors: int | None = None  # stop after this many failed requests
    max_error_rate: float | None = None  # stop when failed/finished exceeds this (after min_requests)
    min_requests: int = 20

    def should_stop(self, finished: int, failed: int) -> str | None:
        if self.max_errors is not None and failed > self.max_errors:
            return f"{failed} failed requests exceed --max-errors {self.max_errors}"
        if (self.max_error_rate is not None and finished >= self.min_requests
                and failed / finished > self.max_error_rate):
            return (f"error rate {failed / finished:.1%} exceeds --max-error-rate "
                    f"{self.max_error_rate:.1%} after {finished} requests")
        return None


class _Phase:
    """The ``phase`` field of Counters: setting it also stamps ``phase_started`` (perf_counter),
    so a display knows when the counting restarted without polling for it."""

    def __get__(self, obj: Any, owner: Any = None) -> str:
        return "idle" if obj is None else obj._phase  # no instance: the dataclass default

    def __set__(self, obj: Any, value: str) -> None:
        obj._phase = value
        obj.phase_started = time.perf_counter()


@dataclass
class Counters:
    """Live numbers for the progress display (read, never written, by it; its ``snapshot()``
    only folds buffered latencies into their histograms)."""

    total: int = 0
    sent: int = 0
    finished: int = 0
    failed: int = 0
    output_tokens: int = 0
    phase: _Phase = _Phase()  # a str: "idle", "warm-up", "measuring", "waiting"
    started: float = field(default_factory=time.perf_counter)
    # TTFT, ITL and E2EL (seconds) of the measured, successful requests so far
    latencies: LiveLatencies = field(default_factory=LiveLatencies)

    @property
    def in_flight(self) -> int:
        return self.sent - self.finished

    def observe(self, rec: RequestRecord) -> None:
        """A finished measured request: its latencies join the live histograms if it succeeded."""
        if rec.ok:
            self.latencies.observe(rec)

    def snapshot(self) -> LatencySnapshot:
        """Copies of the live latency histograms, with everything observed so far folded in."""
        return self.latencies.snapshot()


@dataclass
class RunOutcome:
    # measured requests only, in index order; from LoadRunner a RecordStore (compact,
    # a Sequence of RequestRecord rebuilt on access: the full records are in the JSONL file)
    records: Sequence[RequestRecord]
    warmup_records: list[RequestRecord]
    start_epoch: float  # wall-clock time of the measured window's origin
    duration: float  # first send to last end, seconds
    client: ClientStats
    stopped_early: str | None  # why the run stopped before sending everything
    transport_notes: list[str] = field(default_factory=list)
