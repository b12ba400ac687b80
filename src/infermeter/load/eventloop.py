"""The event loop the load generator runs on: uvloop where it is installed."""

from __future__ import annotations

import asyncio


def use_uvloop() -> bool:
    """Make uvloop the event-loop policy for ``asyncio.run``; False where uvloop is missing."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
