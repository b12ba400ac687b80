"""An append-only column of float samples with exact statistics in bounded memory.

Up to ``memory_limit`` values live in memory (numpy does the statistics); past that the column
spills to an anonymous temp file and statistics come from streaming passes over its chunks:
mean and population std within 1e-12 relative of numpy (two passes), order statistics, median
and percentiles (numpy's default "linear" method) exact.  Several ranks are selected at once on
the floats' order-preserving 64-bit keys: a pass counts the values in up to 65536 equal-width key
bins; the bins holding wanted ranks are collected next pass when they fit in ``memory_limit``,
else binned again 16 bits finer.  A one-key bin holds equal values and needs no collection, so
any data (all-equal, heavy-tailed, negative) is settled in at most five selection passes.
"""

from __future__ import annotations

import heapq
import math
import struct
import tempfile
from array import array
from itertools import islice
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

_TOP = 1 << 63
_LOW63 = _TOP - 1
_BIN_BITS = 16


MEMORY_VALUES = 1_000_000  # values a column holds in memory before it spills (8 MB)


def pct_label(p: float) -> str:
    """``99`` -> ``"99"``, ``99.9`` -> ``"99.9"`` (vLLM's key spelling)."""
    return str(int(p)) if float(p).is_integer() else str(p)


def _keys(x: np.ndarray) -> np.ndarray:
    """uint64 keys whose unsigned order is the floats' order (-0.0 just below 0.0)."""
    s = x.view(np.int64)
    return (s ^ ((s >> 63) & _LOW63)).view(np.uint64) ^ np.uint64(_TOP)


def _key(x: float) -> int:
    return int(_keys(np.array([x], dtype=np.float64))[0])


def _from_key(k: int) -> float:
    s = k ^ _TOP
    s ^= _LOW63 * (s >> 63)
    return struct.unpack("<d", s.to_bytes(8, "little"))[0]


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's ``_lerp`` for scalars, including its branch for t >= 0.5."""
    d = b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


def _pct_points(n: int, ps: Sequence[float]) -> list[tuple[int, int, float]]:
    """(lower rank, upper rank, weight) of each percentile, as np.percentile computes them."""
    vis = [(n - 1) * (float(p) / 100) for p in ps]
    return [(n - 1, n - 1, 0.0) if vi >= n - 1 else (math.floor(vi), math.floor(vi) + 1, vi - math.floor(vi))
            for vi in vis]


def _median_ranks(n: int) -> list[int]:
    return [n // 2 - 1, n // 2] if n % 2 == 0 else [n // 2]


class SampleColumn:
    """Append-only float64 column; spills past ``memory_limit`` values to a temp file.

    A ``scale`` argument (1e3: milliseconds) gives the statistic of ``values * scale``."""

    def __init__(self, memory_limit: int | None = None, spill_dir: str | Path | None = None) -> None:
        memory_limit = MEMORY_VALUES if memory_limit is None else memory_limit
        if int(memory_limit) < 1:
            raise ValueError(f"memory_limit must be at least 1 value, got {memory_limit}")
        self._limit = int(memory_limit)
        self._spill_dir = None if spill_dir is None else str(spill_dir)
        self._buf, self._nfile, self._closed, self._cache_n = array("d"), 0, False, -1
        self._file: IO[bytes] | None = None
        self._cache: dict[object, float] = {}

    def append(self, x: float) -> None:
        if x != x:
            raise ValueError(f"a SampleColumn holds numbers only, got {x!r}")
        if self._closed:
            raise ValueError("this SampleColumn is closed")
        self._buf.append(x)
        if len(self._buf) > self._limit:
            self._flush()

    def extend(self, xs: Iterable[float] | np.ndarray) -> None:
        if isinstance(xs, (np.ndarray, list, tuple, array)):
            return self._extend_array(np.ascontiguousarray(xs, dtype=np.float64).ravel())
        it = iter(xs)
        while (part := np.fromiter(islice(it, 1 << 16), dtype=np.float64)).size:
            self._extend_array(part)

    def _extend_array(self, arr: np.ndarray) -> None:
        if np.isnan(arr).any():
            raise ValueError("a SampleColumn holds numbers only; got NaN")
        if self._closed:
            raise ValueError("this SampleColumn is closed")
        if len(self._buf) + arr.size <= self._limit:
            self._buf.frombytes(arr.view(np.uint8))
        else:
            self._flush()
            self._write(arr)

    def _flush(self) -> None:
        self._write(np.frombuffer(self._buf, dtype=np.float64))
        self._buf = array("d")

    def _write(self, arr: np.ndarray) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="infermeter-samples-", dir=self._spill_dir)
        self._file.seek(0, 2)
        self._file.write(memoryview(arr).cast("B"))
        self._nfile += arr.size

    def __len__(self) -> int:
        return self._nfile + len(self._buf)

    @property
    def count(self) -> int:
        return len(self)

    @property
    def spilled(self) -> bool:
        """True once the values no longer all fit in memory (they live in a temp file)."""
        return self._file is not None

    def chunks(self, size: int = 1 << 20) -> Iterator[np.ndarray]:
        """All values in append order, as fresh arrays of at most ``size`` values."""
        for part in self._blocks(size):
            yield part if part.base is None else part.copy()

    def _blocks(self, size: int) -> Iterator[np.ndarray]:
        if self._closed:
            raise ValueError("this SampleColumn is closed")
        size, nfile, f = max(1, int(size)), self._nfile, self._file
        for start in range(0, nfile, size):
            part = np.empty(min(size, nfile - start), dtype=np.float64)
            assert f is not None
            f.seek(start * part.itemsize)
            if f.readinto(part) != part.nbytes:  # type: ignore[attr-defined]
                raise OSError("the spill file of a SampleColumn was cut short")
            yield part
        mem = np.frombuffer(self._buf, dtype=np.float64)
        yield from (mem[start:start + size] for start in range(0, mem.size, size))

    def _pass_blocks(self) -> Iterator[np.ndarray]:
        return self._blocks(min(1 << 18, max(1 << 14, self._limit)))

    def sorted_values(self) -> Iterator[float]:
        """Every value in ascending order, in bounded memory: sorted runs of at most
        ``memory_limit`` values on disk, merged (one block per run in memory)."""
        if not self.spilled:
            arr = np.sort(self._in_memory())
            for start in range(0, arr.size, 1 << 16):
                yield from arr[start:start + (1 << 16)].tolist()
            return
        with tempfile.TemporaryFile(prefix="infermeter-sorted-", dir=self._spill_dir) as runs:
            spans = []
            for part in self._blocks(self._limit):
                part = np.sort(part)
                spans.append((runs.seek(0, 2), part.size))
                runs.write(memoryview(part).cast("B"))

            def run(offset: int, n: int) -> Iterator[float]:
                for start in range(0, n, 1 << 14):
                    block = np.empty(min(1 << 14, n - start), dtype=np.float64)
                    runs.seek(offset + start * block.itemsize)
                    runs.readinto(block)  # type: ignore[attr-defined]
                    yield from block.tolist()

            yield from heapq.merge(*(run(offset, n) for offset, n in spans))

    def close(self) -> None:
        """Drop the values and delete the spill file."""
        if self._file is not None:
            self._file.close()
        self._file, self._nfile, self._buf, self._closed = None, 0, array("d"), True

    def __enter__(self) -> SampleColumn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _memo(self) -> dict[object, float]:
        if self._cache_n != len(self):
            self._cache_n, self._cache = len(self), {}
        return self._cache

    def _in_memory(self, scale: float = 1.0) -> np.ndarray:
        return np.frombuffer(self._buf, dtype=np.float64) * scale  # a new array, never a view

    def _summary(self) -> dict[object, float]:
        memo = self._memo()
        if "min" not in memo and len(self):
            lows, highs, sums = zip(*[(c.min(), c.max(), c.sum()) for c in self._pass_blocks()])
            memo.update(min=float(min(lows)), max=float(max(highs)), mean=math.fsum(sums) / len(self))
        return memo

    def min(self) -> float | None:
        return self._summary().get("min")

    def max(self) -> float | None:
        return self._summary().get("max")

    def mean(self, scale: float = 1.0) -> float | None:
        if not self.spilled:
            return float(self._in_memory(scale).mean()) if len(self) else None
        return self._summary()["mean"] * scale

    def std(self, scale: float = 1.0) -> float | None:
        """Population standard deviation (ddof=0), two passes when spilled."""
        if not self.spilled:
            return float(self._in_memory(scale).std()) if len(self) else None
        memo = self._summary()
        if "std" not in memo:
            m = memo["mean"]
            memo["std"] = math.sqrt(math.fsum(float(np.sum((c - m) ** 2)) for c in self._pass_blocks()) / len(self))
        return memo["std"] * scale

    def order_stat(self, k: int) -> float:
        """The k-th smallest value (0-based), exact."""
        return self._order_stats([k])[k]

    def median(self, scale: float = 1.0) -> float | None:
        """np.median: the middle value, or the mean of the two middle ones."""
        if not len(self):
            return None
        if not self.spilled:
            return float(np.median(self._in_memory(scale)))
        vals = [v * scale for v in self._order_stats(_median_ranks(len(self))).values()]
        return vals[0] if len(vals) == 1 else (vals[0] + vals[1]) / 2

    def percentile(self, ps: Iterable[float], scale: float = 1.0) -> list[float | None]:
        """np.percentile(values, ps) with numpy's default linear method (None each when empty)."""
        ps = list(ps)
        if not len(self):
            return [None] * len(ps)
        if not self.spilled:
            return [float(v) for v in np.percentile(self._in_memory(scale), ps)]
        points = _pct_points(len(self), ps)
        got = self._order_stats([r for lo, hi, _ in points for r in (lo, hi)])
        return [_lerp(got[lo] * scale, got[hi] * scale, t) for lo, hi, t in points]

    def _order_stats(self, ranks: list[int]) -> dict[int, float]:
        n = len(self)
        if bad := [r for r in ranks if not 0 <= r < n]:
            raise IndexError(f"rank {bad[0]} is outside a column of {n} values")
        memo = self._memo()
        want = sorted({r for r in ranks if ("rank", r) not in memo})
        if want and not self.spilled:
            part = np.partition(self._in_memory(), want)
            memo.update((("rank", r), float(part[r])) for r in want)
        elif want:
            memo.update((("rank", r), v) for r, v in self._select(want).items())
        return {r: memo[("rank", r)] for r in ranks}

    def _select(self, ranks: list[int]) -> dict[int, float]:
        """Exact order statistics of a spilled column, several ranks per pass."""
        mn, mx = self._summary()["min"], self._summary()["max"]
        lo, hi = _key(-0.0 if mn == 0 else mn), _key(0.0 if mx == 0 else mx)
        todo: list[tuple[int, int, int, list[int], int]] = [(lo, hi, 0, ranks, len(self))]
        found: dict[int, float] = {}
        while todo:
            grabs, bins, budget = [], [], self._limit
            for lo, hi, base, rs, cnt in sorted(todo, key=lambda t: t[4]):
                if lo == hi:  # one key: every value in it is equal
                    found.update((r, _from_key(lo)) for r in rs)
                elif cnt <= budget:
                    budget -= cnt
                    grabs.append((lo, hi, base, rs, []))
                else:
                    shift = max(0, (hi - lo).bit_length() - _BIN_BITS)
                    bins.append((lo, hi, base, rs, shift, np.zeros(((hi - lo) >> shift) + 1, np.int64)))
            if grabs or bins:
                self._scan(grabs, bins)
            for lo, hi, base, rs, got in grabs:
                vals = np.concatenate(got)
                part = np.partition(vals, sorted({r - base for r in rs}))
                found.update((r, float(part[r - base])) for r in rs)
            todo = [t for b in bins for t in _narrow(*b)]
        return found

    def _scan(self, grabs: list, bins: list) -> None:
        for chunk in self._pass_blocks():
            keys = _keys(chunk)
            for lo, hi, _, _, got in grabs:
                got.append(chunk[(keys >= lo) & (keys <= hi)])
            for lo, hi, _, _, shift, counts in bins:
                sel = keys[(keys >= lo) & (keys <= hi)]
                counts += np.bincount(((sel - np.uint64(lo)) >> np.uint64(shift)).astype(np.intp),
                                      minlength=counts.size)


def _narrow(lo: int, hi: int, base: int, rs: list[int], shift: int,
            counts: np.ndarray) -> list[tuple[int, int, int, list[int], int]]:
    """The key bins holding the wanted ranks, with the rank offset and count of each."""
    cum = np.cumsum(counts)
    by_bin: dict[int, list[int]] = {}
    for r in rs:
        by_bin.setdefault(int(np.searchsorted(cum, r - base, side="right")), []).append(r)
    return [(lo + (b << shift), min(hi, lo + ((b + 1) << shift) - 1), base + (int(cum[b - 1]) if b else 0),
             members, int(counts[b])) for b, members in by_bin.items()]


def describe_column(col: SampleColumn, percentiles: Iterable[float]) -> dict[str, float | None]:
    """stats.describe of a column (count, mean/median/std/min/max, p<label>; ms): numpy on the
    values times 1e3 in memory, the same exact order statistics and 1e-12-close mean/std spilled."""
    ps, n = list(percentiles), len(col)
    if col.spilled:  # every wanted rank in one selection
        points = _pct_points(n, ps)
        col._order_stats(_median_ranks(n) + [r for lo, hi, _ in points for r in (lo, hi)])
    mn, mx = col.min(), col.max()
    out: dict[str, float | None] = {
        "count": n, "mean": col.mean(1e3), "median": col.median(1e3), "std": col.std(1e3),
        "min": None if mn is None else mn * 1e3, "max": None if mx is None else mx * 1e3}
    out.update((f"p{pct_label(p)}", v) for p, v in zip(ps, col.percentile(ps, 1e3)))
    return out
