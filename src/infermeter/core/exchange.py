"""What every protocol client shares: error classes and the raw exchange."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class ErrorClass(str, Enum):
    CONNECT = "connect"  # connection refused / DNS / no route
    TIMEOUT = "timeout"  # whole-request timeout
    STALL = "stall"  # no bytes for longer than the stall timeout
    RESET = "reset"  # connection closed or reset mid-response
    HTTP_429 = "http_429"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    SERVER_ERROR = "server_error"  # an error event inside a 200 stream
    OVERLOADED = "overloaded"  # TGI's overloaded error event
    MALFORMED = "malformed"  # undecodable event / body
    OVERSIZED = "oversized"  # one event above the size limit
    INCOMPLETE = "incomplete"  # the stream ended before its end marker
    CANCELLED = "cancelled"  # the run stopped before the request finished
    CUT_OFF = "cut_off"  # a --duration run's end (plus its grace) came before the request finished
    CLIENT = "client"  # a bug or local failure in the client itself


@dataclass(slots=True)
class RawExchange:
    """What the transport saw, with timestamps; nothing parsed yet."""

    status: int | None = None
    sent: float | None = None  # None: never handed to a connection
    headers: float | None = None
    times: list[float] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    end: float | None = None
    error: ErrorClass | None = None
    error_detail: str | None = None
    retry_after: str | None = None
    retries: int = 0  # resent after a stale keep-alive connection failed before any response byte

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def http_error_class(status: int) -> ErrorClass:
    if status == 429:
        return ErrorClass.HTTP_429
    if 400 <= status < 500:
        return ErrorClass.HTTP_4XX
    return ErrorClass.HTTP_5XX
