"""Choosing a transport: named by the run (``--transport``), never by the environment."""

from __future__ import annotations

from typing import Any

from infermeter.core.transport import Transport

KINDS = ("fast", "aiohttp")


def make_transport(base_url: str, kind: str = "fast", *, request_id_header: str | None = None,
                   **kwargs: Any) -> Transport:
    """The fast ``asyncio.Protocol`` transport (default) or the aiohttp one.

    ``request_id_header`` tags each request with its index (``infermeter selfcheck`` joins the test
    server's ground truth request by request on it)."""
    if kind == "aiohttp":
        from infermeter.clients.http import HttpTransport

        return HttpTransport(base_url, request_id_header=request_id_header, **kwargs)
    if kind == "fast":
        from infermeter.clients.fasthttp import FastTransport

        return FastTransport(base_url, request_id_header=request_id_header, **kwargs)
    raise ValueError(f"unknown transport {kind!r}: use one of {', '.join(KINDS)}")
