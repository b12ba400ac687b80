"""Per-request records: what happened to each request, timestamps first.

Times are seconds on the run's monotonic clock (``time.perf_counter``)
relative to the run's start; ``RunClock.epoch`` maps them to wall time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    end: float | None = None  # last byte arrived (or the failure was seen)
    token_times: list[float] = field(default_factory=list)  # arrival of each content-carrying event
    status: int | None = None  # HTTP status
    retry_after: str | None = None  # the Retry-After header of an error response (429/503), as sent
    ok: bool = False
    error: str | None = None  # error class, see infermeter.clients.base.ErrorClass
    error_detail: str | None = None
    output_tokens_server: int | None = None  # server's usage / details count
    prompt_tokens_server: int | None = None
    output_tokens_client: int | None = None  # client tokenizer count of the generated text
    output_events: int = 0  # content-carrying events (chunks) received
    finish_reason: str | None = None
    anomalies: list[str] = field(default_factory=list)  # protocol oddities that did not fail the request
    generated_text: str | None = None

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
        for name in ("scheduled", "queued", "sent", "headers", "first_token", "end"):
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
        # A shallow dict (orjson serialises the lists as they are): dataclasses.asdict
        # deep-copies every list and cost a quarter of the client's CPU at high load.
        data = {name: getattr(self, name) for name in _FIELDS}
        if not keep_text:
            data.pop("generated_text", None)
        data["output_tokens"] = self.output_tokens
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RequestRecord":
        data = dict(data)
        data.pop("output_tokens", None)
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in names})


_FIELDS = tuple(RequestRecord.__dataclass_fields__)
