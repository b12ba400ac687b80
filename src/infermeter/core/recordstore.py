"""Finished records of a run, kept compactly, and spilled to disk past a bound.

A ``RequestRecord`` costs about 0.8 KB in memory (an object, float objects, lists,
strings).  Every record is written to the ``.records.jsonl`` file the moment it
finishes, so the runner keeps only what the metrics and the result need, in flat
typed columns: about 130 bytes per request plus 8 per token event.  Rare or
variable fields (errors, anomalies, Retry-After) are kept per row only where set;
the generated text only for the first ``keep_text`` rows (what the token-count
cross-check samples), so memory does not grow with the output length.

Past ``memory_rows`` rows the columns are written, a block of rows at a time, to
an anonymous temporary file and dropped from memory: a run of any length holds at
most ``memory_rows + BLOCK_ROWS`` rows in memory (about 40 MB with short outputs),
and iterating the store reads the blocks back one at a time.  A spilled store
stays in completion order (``sort_by_index`` sorts only a store still in memory).
"""

from __future__ import annotations

import math
import pickle
import tempfile
from array import array
from typing import Any, BinaryIO, Iterator, Sequence, overload

import numpy as np

from infermeter.core.records import _FLOAT_COLS, _INT_COLS, _RARE, _VALUE_COLS, RequestRecord

_NAN = float("nan")
_FLOAT_ONLY = {float}
_STORED_FLOATS = _FLOAT_COLS + _VALUE_COLS
_NONE_INT = -(2 ** 62)  # stands for None in the integer columns
MEMORY_ROWS = 200_000  # rows kept in memory before the store spills to disk
BLOCK_ROWS = 65_536  # rows per spilled block


class _Block:
    """Rows ``start..start+len`` in typed columns (in memory, or read back from the spill file)."""

    __slots__ = ("start", "f", "i", "ok", "warmup", "tt", "tt_start", "finish", "rare")

    def __init__(self, start: int) -> None:
        self.start = start
        self.f = {name: array("d") for name in _STORED_FLOATS}
        self.i = {name: array("q") for name in _INT_COLS}
        self.ok = bytearray()
        self.warmup = bytearray()
        self.tt = array("d")  # every row's token_times, back to back
        self.tt_start = array("q", [0])  # local row r's token times are tt[tt_start[r]:tt_start[r + 1]]
        self.finish = array("I")
        self.rare: dict[int, dict[str, Any]] = {}  # global row -> the rare fields that are set

    def __len__(self) -> int:
        return len(self.ok)

    def dump(self) -> bytes:
        return pickle.dumps({
            "start": self.start, "f": {k: v.tobytes() for k, v in self.f.items()},
            "i": {k: v.tobytes() for k, v in self.i.items()}, "ok": bytes(self.ok), "warmup": bytes(self.warmup),
            "tt": self.tt.tobytes(), "tt_start": self.tt_start.tobytes(), "finish": self.finish.tobytes(),
            "rare": self.rare}, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, data: bytes) -> "_Block":
        d = pickle.loads(data)
        b = cls(d["start"])
        for k, raw in d["f"].items():
            b.f[k].frombytes(raw)
        for k, raw in d["i"].items():
            b.i[k].frombytes(raw)
        b.ok, b.warmup, b.rare = bytearray(d["ok"]), bytearray(d["warmup"]), d["rare"]
        b.tt.frombytes(d["tt"])
        b.tt_start = array("q")
        b.tt_start.frombytes(d["tt_start"])
        b.finish.frombytes(d["finish"])
        return b


class RecordStore(Sequence[RequestRecord]):
    """Finished records, compactly: a sequence of ``RequestRecord`` rebuilt on access.

    ``append`` takes a finished record (it is not kept); indexing and iteration
    give back equal ``RequestRecord`` objects (``generated_text`` only for the
    first ``keep_text`` rows), in append order until ``sort_by_index``.
    """

    KEEP_TEXT = 1024

    def __init__(self, keep_text: int | None = None, memory_rows: int | None = None, spill: bool = True) -> None:
        self._mem = _Block(0)
        self._finish_codes: dict[str | None, int] = {None: 0}
        self._finish_names: list[str | None] = [None]
        self._text: dict[int, str | None] = {}
        self._keep_text = self.KEEP_TEXT if keep_text is None else keep_text
        self._order: array | None = None  # row of each position, after sort_by_index
        # rows held in memory before the store spills (None: never)
        self._memory_rows = (MEMORY_ROWS if memory_rows is None else memory_rows) if spill else None
        self._file: BinaryIO | None = None  # the spill file, once the store spilled
        self._blocks: list[tuple[int, int, int, int]] = []  # (first row, rows, file offset, bytes)
        self._cached: _Block | None = None

    # -- writing -----------------------------------------------------------------------
    def append(self, rec: RequestRecord) -> None:
        b = self._mem
        row = b.start + len(b)
        odd: dict[str, Any] = {}  # a value the typed column cannot hold exactly is kept as it is
        for name, col in b.f.items():
            v = getattr(rec, name)
            if v is None or type(v) is not float or v != v:
                col.append(_NAN)
                if v is not None:
                    odd[name] = v
            else:
                col.append(v)
        for name, col in b.i.items():
            v = getattr(rec, name)
            if v is None or type(v) is not int or not -_NONE_INT > v > _NONE_INT:
                col.append(_NONE_INT)
                if v is not None:
                    odd[name] = v
            else:
                col.append(v)
        b.ok.append(1 if rec.ok else 0)
        b.warmup.append(1 if rec.warmup else 0)
        rare = {name: v for name in _RARE if (v := getattr(rec, name)) is not None}
        if not rec.anomalies:  # the default, an empty list
            rare.pop("anomalies", None)
        rare.update(odd)
        tt = rec.token_times
        if not tt or set(map(type, tt)) == _FLOAT_ONLY:
            b.tt.extend(tt)
        else:  # kept as given
            rare["token_times"] = list(tt)
        b.tt_start.append(len(b.tt))
        code = self._finish_codes.get(rec.finish_reason)
        if code is None:
            code = self._finish_codes[rec.finish_reason] = len(self._finish_names)
            self._finish_names.append(rec.finish_reason)
        b.finish.append(code)
        if rare:
            b.rare[row] = rare
        if row < self._keep_text and rec.generated_text is not None:
            self._text[row] = rec.generated_text
        if self._order is not None:
            self._order.append(row)
        if self._memory_rows is not None and len(b) >= BLOCK_ROWS and row + 1 >= self._memory_rows:
            self._spill()

    def _spill(self) -> None:
        b = self._mem
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="infermeter-records-")
            self._order = None  # a spilled store keeps completion order
        data = b.dump()
        offset = self._file.seek(0, 2)
        self._file.write(data)
        self._blocks.append((b.start, len(b), offset, len(data)))
        self._mem = _Block(b.start + len(b))

    @property
    def spilled(self) -> bool:
        """Are some rows on disk (not in memory)?"""
        return bool(self._blocks)

    def close(self) -> None:
        """Drop the spill file (the store is empty of spilled rows afterwards)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def sort_by_index(self) -> None:
        if self.spilled:  # completion order: sorting would hold one entry per row in memory
            return
        index = self._mem.i["index"]
        self._order = array("q", sorted(range(len(index)), key=index.__getitem__))

    # -- reading -----------------------------------------------------------------------
    def _block_of(self, row: int) -> _Block:
        if row >= self._mem.start:
            return self._mem
        if self._cached is not None and self._cached.start <= row < self._cached.start + len(self._cached):
            return self._cached
        for start, n, offset, size in self._blocks:
            if start <= row < start + n:
                self._cached = self._read(offset, size)
                return self._cached
        raise IndexError(row)

    def _read(self, offset: int, size: int) -> _Block:
        assert self._file is not None, "the spill file was closed"
        self._file.seek(offset)
        return _Block.load(self._file.read(size))

    def blocks(self) -> Iterator[_Block]:
        """Every block of rows in append order: the spilled ones read back one at a time."""
        for _, _, offset, size in self._blocks:
            yield self._read(offset, size)
        yield self._mem

    def _build(self, b: _Block, row: int) -> RequestRecord:
        r = row - b.start
        kw: dict[str, Any] = {}
        for name, col in b.f.items():
            v = col[r]
            kw[name] = None if math.isnan(v) else v
        for name, col in b.i.items():
            v = col[r]
            kw[name] = None if v == _NONE_INT else v
        rare = b.rare.get(row)
        if rare:
            kw.update(rare)
            for name in ("anomalies", "token_times"):  # fresh lists: callers may mutate them
                if name in rare:
                    kw[name] = list(rare[name])
        if "token_times" not in kw:
            kw["token_times"] = b.tt[b.tt_start[r]:b.tt_start[r + 1]].tolist()
        return RequestRecord(
            warmup=bool(b.warmup[r]), ok=bool(b.ok[r]),
            finish_reason=self._finish_names[b.finish[r]], generated_text=self._text.get(row), **kw)

    def __len__(self) -> int:
        return self._mem.start + len(self._mem)

    @overload
    def __getitem__(self, pos: int) -> RequestRecord: ...
    @overload
    def __getitem__(self, pos: slice) -> list[RequestRecord]: ...

    def __getitem__(self, pos):
        if isinstance(pos, slice):
            return [self[p] for p in range(*pos.indices(len(self)))]
        n = len(self)
        if pos < 0:
            pos += n
        if not 0 <= pos < n:
            raise IndexError("record index out of range")
        row = pos if self._order is None else self._order[pos]
        return self._build(self._block_of(row), row)

    def __iter__(self) -> Iterator[RequestRecord]:
        if self._order is not None:
            for row in self._order:
                yield self._build(self._mem, row)
            return
        for b in self.blocks():
            for row in range(b.start, b.start + len(b)):
                yield self._build(b, row)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (RecordStore, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    # -- columns, for callers that want no objects -------------------------------------
    def column(self, name: str) -> list[float | None]:
        """One timestamp column (``sent``, ``end``, ...), None where unset, in sequence order."""
        if self._order is not None:
            col = self._mem.f[name]
            return [v if v == v else self._odd(self._mem, r, name) for r, v in ((r, col[r]) for r in self._order)]
        out: list[float | None] = []
        for b in self.blocks():
            col = b.f[name]
            out.extend(v if v == v else self._odd(b, b.start + r, name) for r, v in enumerate(col))
        return out

    def column_chunks(self, name: str) -> Iterator[np.ndarray]:
        """One float column, a block at a time (NaN where unset), in append order."""
        for b in self.blocks():
            yield np.frombuffer(b.f[name], dtype=float) if len(b) else np.empty(0)

    @staticmethod
    def _odd(b: _Block, row: int, name: str) -> Any:
        """A value kept aside (not a float: None, an int, NaN) for a NaN slot of a float column."""
        rare = b.rare.get(row)
        return rare.get(name) if rare else None


def run_duration(records: Sequence[RequestRecord]) -> float:
    """First send to last end, in seconds (0.0 when nothing was sent or nothing ended)."""
    if isinstance(records, RecordStore):  # no record objects needed
        first, last, any_sent, any_end = math.inf, -math.inf, False, False
        for sent, end in zip(records.column_chunks("sent"), records.column_chunks("end")):
            s, e = sent[~np.isnan(sent)], end[~np.isnan(end)]
            if s.size:
                any_sent, first = True, min(first, float(s.min()))
            if e.size:
                any_end, last = True, max(last, float(e.max()))
        if not any_sent or not any_end:
            return 0.0
        return max(last - first, 1e-9) if not math.isinf(last) else 0.0
    sent_l = [r.sent for r in records if r.sent is not None]
    ends_l = [r.end for r in records if r.end is not None]
    if not sent_l or not ends_l:
        return 0.0
    return max(max(ends_l) - min(sent_l), 1e-9) if not math.isinf(max(ends_l)) else 0.0
