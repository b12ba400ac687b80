"""One path to a live target: every command gets its server under test through ``open_target``.

``infermeter run`` (a URL or the embedded engine), ``sweep`` (a URL, a launched
server or the embedded engine) and ``serve`` (a launched server, kept until
Ctrl-C) all hand a :class:`~infermeter.core.server.ServerUnderTest` to
:func:`open_target`, which starts it, yields it live with its start and ready
times, and always stops it, also after a failed start or an interrupt.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

from infermeter.core.server import ServerUnderTest
from infermeter.errors import UserError
from infermeter.secrets import redact_url


class ExistingServer:
    """A server that is already running at a URL: nothing to start or stop."""

    where = "url"

    def __init__(self, url: str, *, flag: str = "--base-url") -> None:
        self.url = url.rstrip("/")
        self.flag = flag
        self._running = False

    @property
    def base_url(self) -> str:
        return self.url

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> "ExistingServer":
        if not self.url.startswith(("http://", "https://")):
            raise UserError(f"{self.flag} {redact_url(self.url)!r} has no scheme", "write it as http://HOST:PORT")
        self._running = True
        return self

    def stop(self) -> None:
        self._running = False

    def provenance(self) -> dict[str, Any]:
        return {"where": self.where, "base_url": redact_url(self.url)}


@dataclass
class LiveTarget:
    """A started server under test, as the run and the sweep see it."""

    server: ServerUnderTest
    started_epoch: float
    ready_epoch: float

    @property
    def base_url(self) -> str:
        return self.server.base_url.rstrip("/")

    @property
    def startup_s(self) -> float:
        return round(self.ready_epoch - self.started_epoch, 3)


@contextlib.contextmanager
def open_target(server: ServerUnderTest,
                watch_start: Callable[[ServerUnderTest], ContextManager[Any]] | None = None) -> Iterator[LiveTarget]:
    """Start ``server``, yield it live, and stop it however the block ends.

    ``watch_start(server)``, if given, is a context manager entered just before the start
    and left once the server answers (a sweep samples GPU memory while a server loads)."""
    started = time.time()
    try:
        if watch_start is None:
            server.start()
        else:
            with watch_start(server):
                server.start()
        yield LiveTarget(server=server, started_epoch=started, ready_epoch=time.time())
    finally:
        server.stop()
