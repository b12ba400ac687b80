"""LogHistogram: the stated error bound against numpy, exact merges, the dict round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infermeter.core.histogram import ZERO, ZERO_BUCKET, LogHistogram

PS = (1, 50, 90, 99, 99.9)


def _data(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "lognormal":
        return rng.lognormal(-3.0, 1.2, 20_000)
    if kind == "uniform":
        return rng.uniform(0.001, 2.0, 20_000)
    if kind == "constant":
        return np.full(1000, 0.0421)
    if kind == "zeros":  # a third exact zeros (two events in one read), the rest small gaps
        xs = rng.exponential(0.01, 9_000)
        xs[::3] = 0.0
        return xs
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["lognormal", "uniform", "constant", "zeros"])
@pytest.mark.parametrize("rel_error", [0.01, 0.05])
def test_percentiles_within_the_stated_bound(kind, rel_error):
    xs = _data(kind)
    h = LogHistogram(rel_error)
    h.add_array(xs)
    for p in PS:
        true = float(np.percentile(xs, p))
        got = h.percentile(p)
        assert got is not None
        assert abs(got - true) <= rel_error * true + ZERO, (p, got, true)


def test_interpolation_between_ranks_in_different_buckets():
    # two values far apart: every percentile in between interpolates across buckets
    xs = np.array([0.001, 5.0])
    h = LogHistogram(0.01)
    h.add_array(xs)
    for p in (10, 25, 50, 75, 90):
        true = float(np.percentile(xs, p))
        assert abs(h.percentile(p) - true) <= 0.01 * true
    xs = np.array([0.01, 0.02, 0.5, 0.51, 3.0])  # ranks straddle buckets at many p
    h = LogHistogram(0.02)
    h.add_array(xs)
    for p in np.linspace(0.5, 99.5, 40):
        true = float(np.percentile(xs, p))
        assert abs(h.percentile(p) - true) <= 0.02 * true


def test_the_error_is_real_not_zero():
    xs = _data("lognormal")
    h = LogHistogram(0.05)
    h.add_array(xs)
    errors = [abs(h.percentile(p) / np.percentile(xs, p) - 1) for p in (50, 90)]
    assert max(errors) > 1e-6  # the bucketing is coarse: the test above measures a real bound


def test_clamped_to_min_and_max():
    h = LogHistogram(0.05)
    h.add_array([0.1, 0.1, 0.1])
    assert h.percentile(1) == pytest.approx(0.1, rel=0, abs=0)
    assert h.percentile(99.9) == 0.1
    assert h.percentile(0) == 0.1 and h.percentile(100) == 0.1


def _split_merge(xs: np.ndarray, parts: int) -> LogHistogram:
    pieces = np.array_split(xs, parts)
    hists = []
    for piece in pieces:
        h = LogHistogram(0.01)
        for chunk in np.array_split(piece, 3):  # several batches per piece
            h.add_array(chunk)
        hists.append(h)
    merged = LogHistogram(0.01)
    for h in reversed(hists):
        merged.merge(h)
    return merged


@pytest.mark.parametrize("kind", ["lognormal", "zeros"])
def test_merge_of_split_data_equals_the_histogram_of_all(kind):
    xs = _data(kind)
    whole = LogHistogram(0.01)
    whole.add_array(xs)
    merged = _split_merge(xs, 5)
    assert merged.buckets() == whole.buckets()
    assert merged.count == whole.count == xs.size
    assert merged.zero == whole.zero
    assert merged.min == whole.min == xs.min() and merged.max == whole.max == xs.max()
    assert merged.total == pytest.approx(whole.total, rel=1e-13)
    assert merged.total == pytest.approx(float(np.sum(xs)), rel=1e-13)
    for p in PS:
        assert merged.percentile(p) == whole.percentile(p)


def test_merge_refuses_a_different_rel_error():
    with pytest.raises(ValueError, match="rel_error"):
        LogHistogram(0.01).merge(LogHistogram(0.02))


def test_merge_into_empty_and_of_empty():
    h = LogHistogram()
    h.add_array([0.5, 1.5])
    empty = LogHistogram()
    empty.merge(h)
    assert empty.buckets() == h.buckets() and empty.count == 2 and empty.min == 0.5
    before = h.to_dict()
    h.merge(LogHistogram())
    assert h.to_dict() == before


def test_copy_is_independent():
    h = LogHistogram()
    h.add_array([0.5, 1.5])
    c = h.copy()
    h.add(3.0)
    assert c.count == 2 and h.count == 3 and c.max == 1.5


def test_dict_round_trip_through_json():
    xs = _data("zeros")
    h = LogHistogram(0.01)
    h.add_array(xs)
    d = json.loads(json.dumps(h.to_dict()))
    assert set(d) >= {"rel_error", "count", "total", "min", "max", "zero", "buckets"}
    assert d["zero"] == int((xs <= ZERO).sum())
    back = LogHistogram.from_dict(d)
    assert back.buckets() == h.buckets()
    assert (back.count, back.total, back.min, back.max) == (h.count, h.total, h.min, h.max)
    assert [back.percentile(p) for p in PS] == [h.percentile(p) for p in PS]
    assert LogHistogram.from_dict(LogHistogram().to_dict()).count == 0


def test_from_dict_refuses_counts_that_do_not_add_up():
    d = LogHistogram().to_dict() | {"count": 3}
    with pytest.raises(ValueError, match="count"):
        LogHistogram.from_dict(d)


def test_empty_is_none():
    h = LogHistogram()
    h.add_array(np.array([]))
    h.add_array([])
    assert h.count == 0
    assert h.percentile(50) is None and h.mean() is None and h.min is None and h.max is None


def test_count_total_mean_min_max():
    h = LogHistogram()
    h.add(0.0)
    h.add_array([1.0, 2.0, 3.0])
    assert h.count == 4 and h.zero == 1 and h.total == 6.0 and h.mean() == 1.5
    assert h.min == 0.0 and h.max == 3.0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_values_raise(bad):
    h = LogHistogram()
    with pytest.raises(ValueError):
        h.add_array([1.0, bad])
    assert h.count == 0  # nothing of the refused batch was kept


def test_bad_rel_error_and_percentile():
    with pytest.raises(ValueError):
        LogHistogram(0.0)
    h = LogHistogram()
    h.add(1.0)
    with pytest.raises(ValueError):
        h.percentile(101)


def test_bucket_of_bounds_and_rank_bucket_agree():
    rng = np.random.default_rng(3)
    xs = np.concatenate([rng.lognormal(-2, 2, 5000), [0.0, ZERO, 1.0, 1.0202]])
    h = LogHistogram(0.01)
    h.add_array(xs)
    order = np.sort(xs)
    for rank in (0, 1, 100, 2500, 4999, xs.size - 1):
        i = h.rank_bucket(rank)
        assert i == h.bucket_of(float(order[rank]))
        lo, hi = h.bounds(i)
        inside = order[(order > lo) & (order <= hi)] if i != ZERO_BUCKET else order[order <= ZERO]
        assert order[rank] in inside
        # the exact second pass: count below the bucket plus the values inside give the rank back
        below = int((order <= lo).sum()) if i != ZERO_BUCKET else 0
        assert below <= rank < below + inside.size
    assert h.bucket_of(0.0) == ZERO_BUCKET and h.bounds(ZERO_BUCKET) == (0.0, ZERO)
    # a value exactly on an upper edge belongs to that bucket
    i = h.bucket_of(1.0)
    assert h.bounds(i)[0] < 1.0 <= h.bounds(i)[1]
    with pytest.raises(ValueError):
        h.rank_bucket(xs.size)


def test_scalar_and_batch_adds_agree():
    xs = _data("lognormal")[:500]
    a, b = LogHistogram(), LogHistogram()
    a.add_array(xs)
    for x in xs:
        b.add(float(x))
    assert a.buckets() == b.buckets()
