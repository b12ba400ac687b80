"""Live latency histograms in Counters: what observe keeps, and the folds."""

from __future__ import annotations

import numpy as np

from infermeter.core import livestats
from infermeter.core.outcome import Counters
from infermeter.core.records import RequestRecord


def _rec(i: int, sent: float, times: list[float], ok: bool = True) -> RequestRecord:
    return RequestRecord(index=i, warmup=False, scheduled=sent, input_len=1, requested_output_len=len(times),
                         sent=sent, first_token=times[0] if times else None, end=times[-1] if times else None,
                         token_times=list(times), ok=ok)


def _records(n: int, seed: int = 1) -> list[RequestRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sent = float(i)
        k = int(rng.integers(1, 40))
        times = list(sent + rng.uniform(0.01, 0.5) + np.cumsum(rng.exponential(0.02, k)))
        times[k // 2:k // 2 + 1] = [times[k // 2]] * 2 if k > 3 else times[k // 2:k // 2 + 1]  # a 0 gap
        out.append(_rec(i, sent, times))
    return out


def test_observe_feeds_the_three_histograms_like_the_records_say():
    recs = _records(700)  # several folds of the ITL buffer
    c = Counters()
    for r in recs:
        c.observe(r)
    snap = c.snapshot()
    ttft = [r.ttft for r in recs]
    e2el = [r.e2el for r in recs]
    itl = [g for r in recs for g in r.itls]
    assert snap.ttft.count == len(ttft) and snap.e2el.count == len(e2el) and snap.itl.count == len(itl)
    assert snap.itl.zero >= 1  # the repeated time is a zero gap, not a gap across requests
    for hist, values in ((snap.ttft, ttft), (snap.itl, itl), (snap.e2el, e2el)):
        assert hist.min == min(values) and hist.max == max(values)
        for p in (50, 99):
            true = float(np.percentile(values, p))
            assert abs(hist.percentile(p) - true) <= snap.rel_error * true + 1e-9


def test_failed_requests_and_missing_times_are_left_out():
    c = Counters()
    c.observe(_rec(0, 0.0, [0.1, 0.2], ok=False))
    c.observe(_rec(1, 0.0, []))  # ok but no token: no TTFT, no E2EL, no ITL
    one = _rec(2, 0.0, [0.3])
    one.end = 0.4
    c.observe(one)
    snap = c.snapshot()
    assert (snap.ttft.count, snap.e2el.count, snap.itl.count) == (1, 1, 0)
    assert snap.e2el.max == 0.4


def test_buffers_fold_on_their_own_and_stay_small(monkeypatch):
    monkeypatch.setattr(livestats, "FOLD_AT", 64)
    lat = livestats.LiveLatencies()
    for r in _records(200):
        lat.observe(r)
        assert len(lat._e2el) < 64 and lat._pending < 64
    assert lat.e2el.count > 0 and lat.itl.count > 0  # folded without a snapshot


def test_snapshot_is_a_copy():
    c = Counters()
    c.observe(_rec(0, 0.0, [0.1, 0.2]))
    snap = c.snapshot()
    c.observe(_rec(1, 0.0, [0.1, 0.3]))
    assert snap.e2el.count == 1 and c.snapshot().e2el.count == 2


def test_a_clock_oddity_does_not_raise():
    c = Counters()
    c.observe(_rec(0, 1.0, [0.5, 0.4, float("nan")]))  # before it was sent, backwards, NaN
    snap = c.snapshot()
    assert snap.ttft.count == 1 and snap.ttft.max == 0.0
    assert snap.itl.count == 1 and snap.e2el.count == 0


def test_empty_snapshot_is_none():
    snap = Counters().snapshot()
    assert snap.ttft.percentile(50) is None and snap.itl.mean() is None
