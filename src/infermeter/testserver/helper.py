"""Start the test server in a subprocess (its timing undisturbed by the caller)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from .config import TestServerConfig

_READY_PREFIX = "listening on "


class TestServerHandle:
    """A running test server subprocess.

    Use as a context manager (sync or async) or call :meth:`stop`.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, process: subprocess.Popen, base_url: str, config: TestServerConfig):
        self.process = process
        self.base_url = base_url
        self.config = config
        rest = base_url.split("://", 1)[1]
        host, _, port = rest.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=200)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def stderr_tail(self) -> str:
        """The last lines the server wrote on stderr."""
        return "".join(self._stderr_tail)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; return the exit code."""
        p = self.process
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)
            except ProcessLookupError:  # pragma: no cover
                pass
        if p.stdout is not None:
            p.stdout.close()
        return p.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    # ---- convenience (blocking; from async code use an HTTP client instead)
    def get_json(self, path: str, timeout: float = 10.0) -> Any:
        with urllib.request.urlopen(self.base_url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def stats(self, requests: bool = False) -> dict:
        return self.get_json("/stats?requests=1" if requests else "/stats")

    def reset_stats(self, timeout: float = 10.0) -> None:
        req = urllib.request.Request(self.base_url + "/stats/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()

    def __enter__(self) -> TestServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> TestServerHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        return f"TestServerHandle({self.base_url}, pid={self.pid}, alive={self.alive})"


def _pump(stream: Any, sink: Any) -> None:
    try:
        for line in iter(stream.readline, ""):
            sink(line)
    except (ValueError, OSError):  # closed
        pass


def run_test_server(
    config: TestServerConfig | None = None,
    *,
    startup_timeout: float = 20.0,
    python: str | None = None,
    extra_args: list[str] | None = None,
    **overrides: Any,
) -> TestServerHandle:
    """Start ``python -m infermeter.testserver`` and wait for its ``listening on`` line.

    ``overrides`` are TestServerConfig fields applied on top of ``config``
    (e.g. ``run_test_server(ttft_ms=20, itl_ms=2)``).  Raises RuntimeError
    (with the server's stderr) if it exits or does not get ready in time.
    """
    cfg = config or TestServerConfig()
    if overrides:
        cfg = TestServerConfig.model_validate({**cfg.model_dump(), **overrides})
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [python or sys.executable, "-m", "infermeter.testserver", "--config-json", cfg.to_json()]
    cmd += extra_args or []
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # a Ctrl-C in the terminal goes to the test, not the server
    )
    lines: queue.Queue[str | None] = queue.Queue()
    stderr_tail: collections.deque[str] = collections.deque(maxlen=200)

    def out_sink(line: str) -> None:
        lines.put(line)

    threading.Thread(target=_pump, args=(proc.stdout, out_sink), daemon=True).start()
    threading.Thread(target=_pump, args=(proc.stderr, stderr_tail.append), daemon=True).start()

    deadline = time.monotonic() + startup_timeout
    base_url = None
    while base_url is None:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            proc.wait()
            raise RuntimeError(
                f"test server not ready after {startup_timeout}s; stderr:\n"
                + "".join(stderr_tail)
            )
        try:
            line = lines.get(timeout=min(left, 0.05))
        except queue.Empty:
            if proc.poll() is not None:
                time.sleep(0.05)  # let the stderr pump finish
                raise RuntimeError(
                    f"test server exited with code {proc.returncode} before it was ready; "
                    "stderr:\n" + "".join(stderr_tail)
                ) from None
            continue
        if line is not None and line.startswith(_READY_PREFIX):
            base_url = line[len(_READY_PREFIX) :].strip()
    handle = TestServerHandle(proc, base_url, cfg)
    handle._stderr_tail = stderr_tail
    return handle


async def start_test_server(
    config: TestServerConfig | None = None, **kwargs: Any
) -> TestServerHandle:
    """:func:`run_test_server` without blocking the event loop."""
    return await asyncio.to_thread(run_test_server, config, **kwargs)
