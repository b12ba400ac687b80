"""SampleColumn: numpy's statistics of a sample, in memory or spilled to a temp file."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from infermeter.core.samplecolumn import SampleColumn, describe_column
from infermeter.metrics.stats import describe

PS = [1, 25, 50, 90, 99, 99.9, 99.99]


def _data(name: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    n = 100_000
    return {
        "lognormal": lambda: rng.lognormal(-3.0, 1.5, n),
        "uniform": lambda: rng.uniform(-1.0, 1.0, n),
        "all_equal": lambda: np.full(n, 0.1),
        "zeros": lambda: np.where(rng.random(n) < 0.3, 0.0, rng.exponential(1.0, n)),
        "signed_zeros": lambda: np.concatenate([np.zeros(n // 2), -np.zeros(n // 2), rng.normal(0, 1, 1001)]),
        "duplicates": lambda: rng.integers(0, 50, n + 1) * 0.01,
        "heavy_tail": lambda: np.concatenate([rng.pareto(0.5, n), [1e150, 5e-324, 0.0]]),
        # one narrow cluster far from an outlier: the selection has to refine its bins
        "narrow_cluster": lambda: np.concatenate([1.0 + rng.integers(0, 3000, n) * 2.0**-52, [1e6, -1e6]]),
        "n1": lambda: np.array([0.25]),
        "n2": lambda: np.array([0.5, -2.0]),
        "n3": lambda: np.array([3.0, 1.0, 2.0]),
    }[name]()


def _column(values: np.ndarray, spill: bool, **kw: object) -> SampleColumn:
    limit = (1 if values.size < 100 else 1000) if spill else 1_000_000
    col = SampleColumn(memory_limit=limit, **kw)  # type: ignore[arg-type]
    half = values.size // 2
    col.extend(values[:half])  # an array, single appends, a list and a generator
    for x in values[half:half + 5]:
        col.append(float(x))
    col.extend(list(values[half + 5:half + 50]))
    col.extend(float(x) for x in values[half + 50:])
    return col


def _close(a: float | None, b: float, scale: float) -> bool:
    """Within 1e-12 relative, or of the data's scale where numpy's own value is rounding noise."""
    return a is not None and abs(a - b) <= 1e-12 * max(abs(b), scale)


@pytest.mark.parametrize("spill", [False, True], ids=["memory", "spilled"])
@pytest.mark.parametrize("name", ["lognormal", "uniform", "all_equal", "zeros", "signed_zeros", "duplicates",
                                  "heavy_tail", "narrow_cluster", "n1", "n2", "n3"])
def test_every_statistic_is_numpys(name: str, spill: bool) -> None:
    a = _data(name)
    with _column(a, spill) as col:
        assert col.spilled == (spill and a.size > 1)
        assert len(col) == col.count == a.size
        assert col.min() == a.min() and col.max() == a.max()
        scale = float(np.abs(a).mean())
        assert _close(col.mean(), float(np.mean(a)), 0.0)
        assert _close(col.std(), float(np.std(a)), scale)
        assert col.percentile(PS) == np.percentile(a, PS).tolist()  # exact, not approximate
        assert col.median() == np.median(a)
        ranks = sorted({0, a.size - 1, a.size // 2, a.size // 3, (a.size * 99) // 100})
        ordered = np.sort(a)
        assert [col.order_stat(k) for k in ranks] == [ordered[k] for k in ranks]
        got, want = describe(col, PS), describe(a, PS)
        assert got == describe_column(col, PS)
        assert set(got) == set(want)
        for key in want:
            if key in ("mean", "std") and spill:
                assert _close(got[key], want[key], scale * 1e3), key  # type: ignore[arg-type]
            else:
                assert got[key] == want[key], key


@pytest.mark.parametrize("spill", [False, True], ids=["memory", "spilled"])
def test_statistics_follow_later_appends(spill: bool) -> None:
    a = _data("uniform")
    with _column(a, spill) as col:
        assert col.max() == a.max() and col.percentile([50]) == [np.percentile(a, 50)]
        col.extend([5.0, 6.0, 7.0])
        b = np.concatenate([a, [5.0, 6.0, 7.0]])
        assert col.max() == 7.0 and col.percentile([50, 99.99]) == np.percentile(b, [50, 99.99]).tolist()
        assert _close(col.mean(), float(b.mean()), 0.0)


def test_an_empty_column_has_no_statistics() -> None:
    col = SampleColumn()
    assert len(col) == 0 and not col.spilled and list(col.chunks()) == []
    assert (col.min(), col.max(), col.mean(), col.std(), col.median()) == (None,) * 5
    assert col.percentile([50, 99]) == [None, None]
    d = describe_column(col, [50, 99.9])
    assert d == describe([], [50, 99.9]) and d["count"] == 0 and d["p99.9"] is None
    with pytest.raises(IndexError):
        col.order_stat(0)


@pytest.mark.parametrize("spill", [False, True], ids=["memory", "spilled"])
def test_chunks_give_every_value_in_append_order_as_fresh_arrays(spill: bool) -> None:
    a = _data("lognormal")
    with _column(a, spill) as col:
        parts = list(col.chunks(size=7000))
        assert all(0 < p.size <= 7000 for p in parts)
        assert np.array_equal(np.concatenate(parts), a)
        parts[-1][:] = -1.0  # a caller's array, not the column's storage
        col.append(1.0)
        assert np.array_equal(np.concatenate(list(col.chunks())), np.append(a, 1.0))


def _open_paths_under(folder: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    found = []
    for fd in os.listdir(fds):
        try:
            target = os.readlink(fds / fd)
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see open files")
def test_the_spill_file_is_anonymous_and_gone_on_close(tmp_path: Path) -> None:
    col = SampleColumn(memory_limit=1000, spill_dir=tmp_path)
    col.extend(np.arange(999.0))
    assert not col.spilled and _open_paths_under(tmp_path) == []
    col.extend(np.arange(5000.0))
    assert col.spilled and len(_open_paths_under(tmp_path)) == 1
    assert os.listdir(tmp_path) == []  # no name a crash could leave behind
    col.close()
    assert _open_paths_under(tmp_path) == []
    with SampleColumn(memory_limit=10, spill_dir=tmp_path) as other:
        other.extend(np.ones(100))
        assert len(_open_paths_under(tmp_path)) == 1
    assert _open_paths_under(tmp_path) == []


def test_bad_values_and_use_after_close_are_refused() -> None:
    col = SampleColumn(memory_limit=10)
    with pytest.raises(ValueError, match="NaN|numbers"):
        col.append(float("nan"))
    with pytest.raises(ValueError, match="NaN|numbers"):
        col.extend(np.array([1.0, float("nan")]))
    assert len(col) == 0
    col.append(float("inf"))  # a value numpy's statistics take too
    assert col.max() == float("inf")
    col = SampleColumn(memory_limit=10)
    col.close()
    with pytest.raises(ValueError, match="closed"):
        col.append(1.0)
    with pytest.raises(ValueError, match="closed"):
        col.extend([1.0])
    with pytest.raises(ValueError, match="memory_limit"):
        SampleColumn(memory_limit=0)


def test_a_spilled_column_stays_in_bounded_memory() -> None:
    """5M values (40 MB) with 100k in memory: the traced peak stays well below the data's size."""
    n, batch = 5_000_000, 50_000
    tracemalloc.start()
    try:
        rng = np.random.default_rng(3)
        with SampleColumn(memory_limit=100_000) as col:
            for _ in range(n // batch):
                col.extend(rng.lognormal(-3.0, 1.0, batch))
            got = describe(col, PS)
            assert col.spilled
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    rng = np.random.default_rng(3)
    a = np.concatenate([rng.lognormal(-3.0, 1.0, batch) for _ in range(n // batch)])
    want = describe(a, PS)
    assert [got[f"p{p}"] for p in ("50", "99", "99.99")] == [want[f"p{p}"] for p in ("50", "99", "99.99")]
    assert got["count"] == n and got["max"] == want["max"]


@pytest.mark.parametrize("limit", [10, 1000, 1_000_000])
def test_sorted_values_walks_every_value_in_order(limit: int) -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(0, 2, 4000), np.zeros(50), np.full(30, 1.5)])
    with SampleColumn(memory_limit=limit) as col:
        col.extend(values)
        assert col.spilled == (limit < values.size)
        assert list(col.sorted_values()) == np.sort(values).tolist()
