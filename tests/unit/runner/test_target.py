"""runner.target: the one path to a live server under test."""

from __future__ import annotations

import contextlib

import pytest

from infermeter.core.server import ServerUnderTest
from infermeter.errors import UserError
from infermeter.runner.target import ExistingServer, open_target


class FakeServer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[str] = []
        self._running = False

    @property
    def base_url(self) -> str:
        return "http://127.0.0.1:9/"

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> "FakeServer":
        self.calls.append("start")
        if self.fail:
            raise UserError("the server exited with status 1", "see the log")
        self._running = True
        return self

    def stop(self) -> None:
        self.calls.append("stop")
        self._running = False

    def provenance(self) -> dict:
        return {"where": "fake"}


def test_every_server_kind_implements_the_contract():
    from infermeter.embedded.target import EmbeddedEngine
    from infermeter.servers.dstack import DstackServer
    from infermeter.servers.local import LocalServer

    for cls in (EmbeddedEngine, LocalServer, DstackServer, ExistingServer):
        missing = [m for m in ("start", "stop", "provenance", "base_url", "running") if not hasattr(cls, m)]
        assert not missing, f"{cls.__name__} lacks {missing}"
    assert isinstance(ExistingServer("http://h:1"), ServerUnderTest)


def test_open_target_yields_a_live_server_and_always_stops_it():
    server = FakeServer()
    with open_target(server) as live:
        assert server.running and live.base_url == "http://127.0.0.1:9" and live.startup_s >= 0
    assert server.calls == ["start", "stop"] and not server.running
    with pytest.raises(RuntimeError), open_target(server):
        raise RuntimeError("the run failed")
    assert server.calls[-1] == "stop"


def test_a_failed_start_is_still_stopped_and_the_watcher_sees_it():
    server = FakeServer(fail=True)
    seen: list[str] = []

    @contextlib.contextmanager
    def watch(srv):
        seen.append("before")
        yield
        seen.append("after")  # not reached: the start raised

    with pytest.raises(UserError), open_target(server, watch):
        pass
    assert server.calls == ["start", "stop"] and seen == ["before"]


def test_an_existing_server_needs_a_scheme_and_hides_its_password():
    with pytest.raises(UserError, match="has no scheme"), open_target(ExistingServer("localhost:8000")):
        pass
    s = ExistingServer("http://user:pw@h:8000/")
    assert s.base_url == "http://user:pw@h:8000" and "pw" not in str(s.provenance())
