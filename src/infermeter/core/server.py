"""The server-under-test contract: something infermeter can start, wait for, point load at and stop.

Implemented by the embedded llama-server (``embedded.target.EmbeddedEngine``), a
server launched on this machine from a launch profile (``servers.local.LocalServer``),
one launched as a dstack task (``servers.dstack.DstackServer``) and a server that is
already running at a URL (``runner.target.ExistingServer``).  The runner and sweeps
get a live server through ``runner.target.open_target`` and nothing else.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ServerUnderTest(Protocol):
    """A server's whole life as the benchmark sees it.

    ``start`` returns once the server answers (or raises a one-line ``UserError``);
    ``stop`` is idempotent and safe after a failed start.  ``provenance`` says what
    ran (program, version, command line with secrets redacted, settings), for the result.
    """

    @property
    def base_url(self) -> str: ...

    @property
    def running(self) -> bool: ...

    def start(self) -> "ServerUnderTest": ...

    def stop(self) -> None: ...

    def provenance(self) -> dict[str, Any]: ...
