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


# The record's fields by kind (RecordStore keeps each kind in its own typed column).
_FLOAT_COLS = ("scheduled", "queued", "sent", "headers", "first_token", "end", "first_choice", "last_choice",
               "done_time", "usage_time", "body_end")  # clock readings (shifted to the run's origin)
_VALUE_COLS = ("offered_rate",)  # floats that are not clock readings (never shifted)
_INT_COLS = ("index", "input_len", "requested_output_len", "status", "output_tokens_server",
             "prompt_tokens_server", "output_tokens_client", "output_events", "choice_events",
             "session_id", "turn")
_RARE = ("retry_after", "error", "error_detail", "anomalies")  # often unset: kept per row only where set
