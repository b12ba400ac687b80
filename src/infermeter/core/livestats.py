"""Live latency statistics of a run in constant memory: TTFT, ITL and E2EL histograms.

``LiveLatencies.observe`` runs on the event loop for every finished, measured, successful
request, so it only appends: TTFT and E2EL to flat ``array('d')`` buffers, and a
reference to the request's list of token arrival times (the record's own list, which
nothing changes after the request finished: converting it to C doubles at once cost
twice as much as doing it in one ``np.fromiter`` at the fold).  The buffers are folded
into ``LogHistogram``s in numpy batches once they pass ``FOLD_AT`` values (the ITL gaps
are the differences within each request's times), and whenever a reader asks for a
``snapshot()``.  Memory stays a few buffers of ``FOLD_AT`` values and one counter per
histogram bucket, however long the run.
"""

from __future__ import annotations

import itertools
import math
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from infermeter.core.histogram import LogHistogram

FOLD_AT = 4096  # values a buffer holds before it is folded into its histogram


@dataclass(frozen=True)
class LatencySnapshot:
    """Copies of the live histograms (seconds), safe to read while the run goes on."""

    ttft: LogHistogram
    itl: LogHistogram
    e2el: LogHistogram

    @property
    def rel_error(self) -> float:
        return self.ttft.rel_error

    def to_dict(self) -> dict[str, Any]:
        """The result's ``infermeter.histograms``: seconds, sparse log buckets (core/histogram.py)."""
        return {"rel_error": self.rel_error, "unit": "s", "ttft": self.ttft.to_dict(), "itl": self.itl.to_dict(),
                "e2el": self.e2el.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencySnapshot":
        return cls(*(LogHistogram.from_dict(data[name]) for name in ("ttft", "itl", "e2el")))

    @classmethod
    def merged(cls, parts: list["LatencySnapshot"]) -> "LatencySnapshot":
        """The histograms of every part's requests together: bucket counts add, so the merge is exact
        (the same histograms as one process observing every request would hold)."""
        first = parts[0]
        out = cls(first.ttft.copy(), first.itl.copy(), first.e2el.copy())
        for part in parts[1:]:
            out.ttft.merge(part.ttft)
            out.itl.merge(part.itl)
            out.e2el.merge(part.e2el)
        return out


def _clean(values: np.ndarray) -> np.ndarray:
    """Finite and non-negative (a clock oddity in one record must not stop the run)."""
    if values.size == 0:
        return values
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and math.isfinite(high):
        return values
    values = values[np.isfinite(values)]
    return np.maximum(values, 0.0, out=values)


class LiveLatencies:
    """TTFT, ITL and E2EL of finished requests, folded into histograms in batches."""

    __slots__ = ("ttft", "itl", "e2el", "_ttft", "_e2el", "_times", "_pending")

    def __init__(self, rel_error: float = 0.01) -> None:
        self.ttft = LogHistogram(rel_error)
        self.itl = LogHistogram(rel_error)
        self.e2el = LogHistogram(rel_error)
        self._new_buffers()

    def _new_buffers(self) -> None:
        # new buffers, never cleared ones: a fold may still be reading the old ones
        self._ttft = array("d")
        self._e2el = array("d")
        self._times: list[list[float]] = []  # each request's token arrival times
        self._pending = 0  # how many times those lists hold

    def observe(self, rec: Any) -> None:
        """One successful request (a RequestRecord): cheap appends, a fold now and then."""
        sent = rec.sent
        if sent is None:
            return
        first = rec.first_token
        if first is not None:
            self._ttft.append(first - sent)
        end = rec.end
        if end is not None:
            self._e2el.append(end - sent)
        times = rec.token_times
        n = len(times)
        if n > 1:
            self._times.append(times)
            self._pending += n
            if self._pending >= FOLD_AT:
                self.flush()
                return
        if len(self._e2el) >= FOLD_AT:
            self.flush()

    def flush(self) -> None:
        """Fold the buffered values into the histograms."""
        ttft, e2el, times, pending = self._ttft, self._e2el, self._times, self._pending
        self._new_buffers()
        if ttft:
            self.ttft.add_array(_clean(np.array(ttft, dtype=np.float64)))
        if e2el:
            self.e2el.add_array(_clean(np.array(e2el, dtype=np.float64)))
        if times:
            flat = np.fromiter(itertools.chain.from_iterable(times), dtype=np.float64, count=pending)
            gaps = np.diff(flat)
            ends = np.cumsum(np.fromiter(map(len, times), dtype=np.int64, count=len(times)))
            keep = np.ones(gaps.size, dtype=bool)
            keep[ends[:-1] - 1] = False  # the gap from one request's last time to the next one's first
            self.itl.add_array(_clean(gaps[keep]))

    def snapshot(self) -> LatencySnapshot:
        self.flush()
        return LatencySnapshot(self.ttft.copy(), self.itl.copy(), self.e2el.copy())
