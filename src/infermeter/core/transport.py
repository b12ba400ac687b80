"""The transport contract: bytes to a server and timestamps back, nothing parsed.

Two implementations live in ``infermeter.clients``: the protocol-level fast
transport (the default) and the aiohttp one.  The load generator is typed for
this interface only.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from infermeter.core.exchange import RawExchange


@runtime_checkable
class Transport(Protocol):
    """An HTTP client that stamps every read.

    ``post`` fills ``raw`` (status, send/head/chunk/end times, error class) and
    returns it; it never raises for a failed exchange.  ``request_id`` is this
    request's index, sent as the ``request_id_header`` when that is set.
    """

    request_id_header: str | None

    async def __aenter__(self) -> "Transport": ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def post(self, path: str, body: bytes, raw: RawExchange, request_id: int | None = None) -> RawExchange: ...

    async def get_json(self, path: str, timeout: float = 10.0) -> tuple[int, object | None]: ...
