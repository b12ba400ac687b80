"""The stale keep-alive rule, one copy for every transport.

A pooled keep-alive connection that the server closed before our request
reached it fails before any response byte (llama-server closes after every
streamed response without saying ``Connection: close``).  Such a request is
sent once more on a fresh connection; after ``LIMIT`` such failures every
request gets its own connection, and the result says so once.
"""

from __future__ import annotations

from infermeter.core.exchange import RawExchange

LIMIT = 3  # stale keep-alive failures before every request gets its own connection
NOTE = ("the server closes kept-alive connections after a response; infermeter opened one connection per "
        "request from then on")


class StaleRule:
    """Counts stale failures and says when to stop reusing connections."""

    __slots__ = ("failures", "notes")

    def __init__(self, notes: list[str]) -> None:
        self.failures = 0
        self.notes = notes

    @property
    def fresh_only(self) -> bool:
        """Every request on its own connection from now on."""
        return self.failures >= LIMIT

    def retry(self, raw: RawExchange) -> None:
        """Count one stale failure and clear ``raw`` for the second try (the same request, not a new one)."""
        self.failures += 1
        if self.failures == LIMIT:
            self.notes.append(NOTE)
        raw.retries += 1
        raw.error = raw.error_detail = None
        raw.sent = raw.headers = raw.end = raw.status = None
