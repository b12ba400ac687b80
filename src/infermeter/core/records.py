"""Per-request records: what happened to each request, timestamps first.

Times are seconds on the run's monotonic clock (``time.perf_counter``)
relative to the run's start; ``RunClock.epoch`` maps them to wall time.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence, overload


@dataclass(slots=True)
class RequestRecord:
    index: int
    warmup: bool
    scheduled: float  # when the plan said to send it
    input_len: int  # prompt tokens by the client's tokenizer
    requested_output_len: int | None
    queued: float | None = None  # when the dispatcher released it (concurrency slots may delay the send)
    sent: float | None = None  # just before the request bytes were handed to the connection
    headers: float | None = None  # response headers arrived
    first_token: float | None = None  # first content-carrying event arrived
    # The end of the request is the end of its stream, not of the HTTP body: the last
    # content-carrying event's arrival (the whole body, without streaming; the failure's
    # sighting for a failed request).  A server that holds the body open after [DONE], or
    # sends the usage chunk late, does not lengthen E2EL or TPOT; those arrivals are kept apart.
    end: float | None = None
    done_time: float | None = None  # the stream's end marker arrived ([DONE]; TGI's final event)
    usage_time: float | None = None  # the usage chunk arrived
    body_end: float | None = None  # transport figure: the last byte of the HTTP body arrived
    token_times: list[float] = field(default_factory=list)  # arrival of each content-carrying event
    status: int | None = None  # HTTP status
    retry_after: str | None = None  # the Retry-After header of an error response (429/503), as sent
    ok: bool = False
    error: str | None = None  # error class, see infermeter.core.exchange.ErrorClass
    error_detail: str | None = None
    output_tokens_server: int | None = None  # server's usage / details count
    prompt_tokens_server: int | None = None
    output_tokens_client: int | None = None  # client tokenizer count of the generated text
    output_events: int = 0  # content-carrying events (chunks) received
    finish_reason: str | None = None
    anomalies: list[str] = field(default_factory=list)  # protocol oddities that did not fail the request
    generated_text: str | None = None
    # vLLM's client definitions (vllm/benchmarks/lib/endpoint_request_func.py), kept beside ours:
    # it takes TTFT at the first event whose ``choices`` is non-empty (even a role-only or
    # empty-text one), an ITL gap between every two such events, and the end at the last one.
    first_choice: float | None = None  # first event with non-empty choices
    last_choice: float | None = None  # last event with non-empty choices
    choice_events: int = 0  # events with non-empty choices
    # workload and load context (docs/workloads.md): a multi-turn request's session and turn
    # (0 = first), and the rate the load offered when it was scheduled (requests/s; None for
    # burst, concurrency and trace replay)
    session_id: int | None = None
    turn: int | None = None
    offered_rate: float | None = None

    @property
    def output_tokens(self) -> int:
        """Best count of generated tokens: server's usage, else tokenizer, else events."""
        if self.output_tokens_server is not None:
            return self.output_tokens_server
        if self.output_tokens_client is not None:
            return self.output_tokens_client
        return self.output_events

    @property
    def dispatch_lag(self) -> float | None:
        """How late the dispatcher released the request, past its scheduled time (client lag)."""
        if self.queued is None:
            return None
        return max(0.0, self.queued - self.scheduled)

    @property
    def queue_wait(self) -> float | None:
        """Time spent waiting in the client's own queue for a concurrency slot."""
        if self.sent is None or self.queued is None:
            return None
        return max(0.0, self.sent - self.queued)

    def shift(self, origin: float) -> None:
        """Make absolute clock readings relative to ``origin`` (the run's start)."""
        for name in _FLOAT_COLS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value - origin)
        self.token_times = [t - origin for t in self.token_times]

    @property
    def ttft(self) -> float | None:
        if self.sent is None or self.first_token is None:
            return None
        return self.first_token - self.sent

    @property
    def e2el(self) -> float | None:
        if self.sent is None or self.end is None:
            return None
        return self.end - self.sent

    @property
    def itls(self) -> list[float]:
        tt = self.token_times
        return [b - a for a, b in zip(tt, tt[1:])]

    @property
    def tpot(self) -> float | None:
        n = self.output_tokens
        ttft, e2el = self.ttft, self.e2el
        if n < 2 or ttft is None or e2el is None:
            return None
        return (e2el - ttft) / (n - 1)

    def to_json(self, *, keep_text: bool = False) -> dict[str, Any]:
        """One line of the .records.jsonl file: the fields, then the derived columns
        (``output_tokens``, ``ttft_ms``, ``tpot_ms``, ``e2el_ms``).  Unset text fields
        are written as "" so that a column no request filled still loads as text."""
        # A shallow dict (orjson serialises the lists as they are): dataclasses.asdict
        # deep-copies every list and cost a quarter of the client's CPU at high load.
        data = {name: getattr(self, name) for name in _FIELDS}
        if not keep_text:
            data.pop("generated_text", None)
        for name in TEXT_FIELDS:
            if data.get(name, "") is None:
                data[name] = ""
        data["output_tokens"] = self.output_tokens
        data["ttft_ms"] = _ms(self.ttft)
        data["tpot_ms"] = _ms(self.tpot)
        data["e2el_ms"] = _ms(self.e2el)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RequestRecord":
        names = cls.__dataclass_fields__.keys()
        kept = {k: v for k, v in data.items() if k in names}
        for name in TEXT_FIELDS:
            if kept.get(name) == "":
                kept[name] = None
        return cls(**kept)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


_FIELDS = tuple(RequestRecord.__dataclass_fields__)
#: Text fields that are often unset: "" in the JSONL file, None in a record.
TEXT_FIELDS = ("error", "error_detail", "retry_after", "finish_reason")


# -- compact storage for long runs -------------------------------------------
# A RequestRecord costs about 0.8 KB in memory (an object, six float objects,
# two lists, strings); kept for every request of a long run that grows the
# client by ~0.8 GB per million requests.  Every record is written to the
# .records.jsonl file the moment it finishes, so in memory the runner keeps
# only what the metrics and the result need, in flat typed arrays: about
# 130 bytes per request plus 8 bytes per token event.  Rare or variable
# fields (errors, anomalies, Retry-After) are kept per row only where set;
# the generated text only for the first KEEP_TEXT rows (what the token-count
# cross-check samples), so memory does not grow with the output length.

_NAN = float("nan")
_FLOAT_ONLY = {float}
_FLOAT_COLS = ("scheduled", "queued", "sent", "headers", "first_token", "end", "first_choice", "last_choice",
               "done_time", "usage_time", "body_end")
_VALUE_COLS = ("offered_rate",)  # floats that are not clock readings (never shifted)
_STORED_FLOATS = _FLOAT_COLS + _VALUE_COLS
_INT_COLS = ("index", "input_len", "requested_output_len", "status", "output_tokens_server",
             "prompt_tokens_server", "output_tokens_client", "output_events", "choice_events",
             "session_id", "turn")
_NONE_INT = -(2 ** 62)  # stands for None in the integer columns
_RARE = ("retry_after", "error", "error_detail", "anomalies")


class RecordStore(Sequence[RequestRecord]):
    """Finished records, compactly: a sequence of ``RequestRecord`` rebuilt on access.

    ``append`` takes a finished record (it is not kept); indexing and iteration
    give back equal ``RequestRecord`` objects (``generated_text`` only for the
    first ``keep_text`` rows), in append order until ``sort_by_index``.
    """

    KEEP_TEXT = 1024

    def __init__(self, keep_text: int | None = None) -> None:
        self._f = {name: array("d") for name in _STORED_FLOATS}
        self._i = {name: array("q") for name in _INT_COLS}
        self._ok = bytearray()
        self._warmup = bytearray()
        self._tt = array("d")  # every record's token_times, back to back
        self._tt_start = array("q", [0])  # row r's token times are _tt[_tt_start[r]:_tt_start[r + 1]]
        self._finish_codes: dict[str | None, int] = {None: 0}
        self._finish_names: list[str | None] = [None]
        self._finish = array("I")
        self._rare: dict[int, dict[str, Any]] = {}  # row -> the rare fields that are set
        self._text: dict[int, str | None] = {}
        self._keep_text = self.KEEP_TEXT if keep_text is None else keep_text
        self._order: array | None = None  # row of each position, after sort_by_index

    def append(self, rec: RequestRecord) -> None:
        row = len(self._ok)
        odd: dict[str, Any] = {}  # a value the typed column cannot hold exactly is kept as it is
        for name, col in self._f.items():
            v = getattr(rec, name)
            if v is None or type(v) is not float or v != v:
                col.append(_NAN)
                if v is not None:
                    odd[name] = v
            else:
                col.append(v)
        for name, col in self._i.items():
            v = getattr(rec, name)
            if v is None or type(v) is not int or not -_NONE_INT > v > _NONE_INT:
                col.append(_NONE_INT)
                if v is not None:
                    odd[name] = v
            else:
                col.append(v)
        self._ok.append(1 if rec.ok else 0)
        self._warmup.append(1 if rec.warmup else 0)
        rare = {name: v for name in _RARE if (v := getattr(rec, name)) is not None}
        if not rec.anomalies:  # the default, an empty list
            rare.pop("anomalies", None)
        rare.update(odd)
        tt = rec.token_times
        if not tt or set(map(type, tt)) == _FLOAT_ONLY:
            self._tt.extend(tt)
        else:  # kept as given
            rare["token_times"] = list(tt)
        self._tt_start.append(len(self._tt))
        code = self._finish_codes.get(rec.finish_reason)
        if code is None:
            code = self._finish_codes[rec.finish_reason] = len(self._finish_names)
            self._finish_names.append(rec.finish_reason)
        self._finish.append(code)
        if rare:
            self._rare[row] = rare
        if row < self._keep_text and rec.generated_text is not None:
            self._text[row] = rec.generated_text
        if self._order is not None:
            self._order.append(row)

    def sort_by_index(self) -> None:
        index = self._i["index"]
        self._order = array("q", sorted(range(len(index)), key=index.__getitem__))

    def _row(self, pos: int) -> int:
        return pos if self._order is None else self._order[pos]

    def _build(self, row: int) -> RequestRecord:
        f, i = self._f, self._i
        fv = [f[name][row] for name in _STORED_FLOATS]
        iv = [i[name][row] for name in _INT_COLS]
        kw: dict[str, Any] = {name: (None if math.isnan(v) else v) for name, v in zip(_STORED_FLOATS, fv)}
        kw.update({name: (None if v == _NONE_INT else v) for name, v in zip(_INT_COLS, iv)})
        rare = self._rare.get(row)
        if rare:
            kw.update(rare)
            for name in ("anomalies", "token_times"):  # fresh lists: callers may mutate them
                if name in rare:
                    kw[name] = list(rare[name])
        if "token_times" not in kw:
            kw["token_times"] = self._tt[self._tt_start[row]:self._tt_start[row + 1]].tolist()
        return RequestRecord(
            warmup=bool(self._warmup[row]), ok=bool(self._ok[row]),
            finish_reason=self._finish_names[self._finish[row]], generated_text=self._text.get(row), **kw)

    def __len__(self) -> int:
        return len(self._ok)

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
        return self._build(self._row(pos))

    def __iter__(self) -> Iterator[RequestRecord]:
        for pos in range(len(self)):
            yield self._build(self._row(pos))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (RecordStore, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    # -- columns, for callers that want no objects -----------------------------
    def column(self, name: str) -> list[float | None]:
        """One timestamp column (``sent``, ``end``, ...), None where unset, in sequence order."""
        col = self._f[name]
        rows = range(len(self)) if self._order is None else self._order
        return [v if v == v else self._odd(r, name) for r, v in ((r, col[r]) for r in rows)]

    def _odd(self, row: int, name: str) -> Any:
        """A value kept aside (not a float: None, an int, NaN) for a NaN slot of a float column."""
        rare = self._rare.get(row)
        return rare.get(name) if rare else None


def run_duration(records: Sequence[RequestRecord]) -> float:
    """First send to last end, in seconds (0.0 when nothing was sent or nothing ended)."""
    if isinstance(records, RecordStore):  # no record objects needed
        sent = [t for t in records.column("sent") if t is not None]
        ends = [t for t in records.column("end") if t is not None]
    else:
        sent = [r.sent for r in records if r.sent is not None]
        ends = [r.end for r in records if r.end is not None]
    if not sent or not ends:
        return 0.0
    return max(max(ends) - min(sent), 1e-9) if not math.isinf(max(ends)) else 0.0
