"""GPU telemetry of a remote server host: an agent there, a puller here.

``infermeter telemetry agent --port P`` runs ``TelemetryAgent`` on the server's host:
it samples the local GPUs on an interval into a ring buffer and serves

* ``GET /info``: ``{"agent": "infermeter-telemetry", "version", "host", "pid", "now",
  "interval_s", "samplers": [{"name", "available", "reason"?}, ...], "loops": {...}}``
* ``GET /samples?since=T[&limit=N]``: ``{"now": epoch, "samples": [...]}``, the samples
  taken after T (agent wall clock), oldest first, each with its own ``t``.

``RemoteAgentSampler`` (here) pulls them.  The two clocks differ: it estimates the
agent's offset NTP-style from each exchange (agent ``now`` minus the midpoint of the
request), keeps the estimate from the fastest round trip, and moves every sample onto
the local clock (``t``), keeping the agent's reading as ``t_agent``.

The agent is read-only and has no authentication: it binds 127.0.0.1 unless told
otherwise (``--host 0.0.0.0``), for use over an SSH tunnel or a trusted network.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence

from infermeter import __version__
from infermeter.secrets import redact_url
from infermeter.telemetry.base import Availability, Sampler, SamplerUnavailable, http_get
from infermeter.telemetry.loop import SamplerLoop

AGENT_NAME = "infermeter-telemetry"


class TelemetryAgent:
    def __init__(self, samplers: Sequence[Sampler], tried: Sequence[Availability] = (), *,
                 host: str = "127.0.0.1", port: int = 0, interval: float = 0.5,
                 keep: int = 100_000) -> None:
        self.samplers = list(samplers)
        self.tried = list(tried)
        self.interval = interval
        self._buf: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        self._loops = [SamplerLoop(s, interval, self._deliver) for s in self.samplers]
        agent = self

        class Handler(BaseHTTPRequestHandler):
            server_version = f"{AGENT_NAME}/{__version__}"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return None

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/info":
                    self._json(200, agent.info())
                elif url.path == "/samples":
                    q = urllib.parse.parse_qs(url.query)
                    try:
                        since = float(q.get("since", ["0"])[0])
                        limit = int(q.get("limit", ["10000"])[0])
                    except ValueError:
                        self._json(400, {"error": "since must be a number (epoch seconds), limit an integer"})
                        return
                    self._json(200, {"now": time.time(), "samples": agent.samples_since(since, limit)})
                else:
                    self._json(404, {"error": "not found; GET /info or /samples?since=T"})

            def _json(self, status: int, data: Any) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._http_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}"

    def _deliver(self, sampler: Sampler, samples: list[dict[str, Any]], t: float) -> None:
        with self._lock:
            for s in samples:
                s.setdefault("t", t)
                self._buf.append(s)

    def samples_since(self, since: float, limit: int = 10000) -> list[dict[str, Any]]:
        with self._lock:
            out = [s for s in self._buf if s["t"] > since]
        return out[: max(limit, 0)]

    def info(self) -> dict[str, Any]:
        return {"agent": AGENT_NAME, "version": __version__, "host": socket.gethostname(), "pid": os.getpid(),
                "now": time.time(), "interval_s": self.interval,
                "samplers": [a.to_dict() for a in self.tried],
                "loops": {loop.sampler.name: loop.stats() for loop in self._loops}}

    def start(self) -> "TelemetryAgent":
        for loop in self._loops:
            loop.start()
        self._http_thread = threading.Thread(target=self._server.serve_forever, name="infermeter-telemetry-agent",
                                             daemon=True)
        self._http_thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for loop in self._loops:
            loop.stop()
        for s in self.samplers:
            s.close()

    def __enter__(self) -> "TelemetryAgent":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RemoteAgentSampler(Sampler):
    """Pull GPU samples from an ``infermeter telemetry agent``."""

    name = "agent"
    kind = "gpu"
    min_interval = 0.2

    def __init__(self, url: str, *, timeout: float = 3.0) -> None:
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        self.url = url
        self.shown_url = redact_url(url)
        self.timeout = timeout
        self.offset: float | None = None  # agent clock minus local clock, seconds
        self.best_rtt: float | None = None
        self.since = 0.0
        self.remote: dict[str, Any] = {}

    def _get(self, path: str) -> dict[str, Any]:
        t0 = time.time()
        status, body = http_get(self.url + path, self.timeout)
        t1 = time.time()
        if status != 200:
            raise SamplerUnavailable(f"GET {self.shown_url}{path} " + (f"answered HTTP {status}" if status
                                                                 else "did not answer"))
        data = json.loads(body)
        now = data.get("now")
        if isinstance(now, (int, float)):
            rtt = t1 - t0
            if self.best_rtt is None or rtt <= self.best_rtt:
                self.best_rtt = rtt
                self.offset = float(now) - (t0 + t1) / 2
        return data

    def open(self) -> None:
        try:
            info = self._get("/info")
        except ValueError:
            raise SamplerUnavailable(f"{self.shown_url}/info is not JSON: not an infermeter telemetry agent") from None
        if info.get("agent") != AGENT_NAME:
            raise SamplerUnavailable(f"{self.shown_url} is not an infermeter telemetry agent")
        self.remote = info
        usable = [s for s in info.get("samplers", []) if s.get("available")]
        if not usable:
            reasons = "; ".join(f"{s.get('name')}: {s.get('reason')}" for s in info.get("samplers", []))
            raise SamplerUnavailable(f"the agent at {self.shown_url} has no working GPU sampler ({reasons or 'none'})")
        # only what is sampled from now on (agent clock)
        self.since = float(info.get("now") or 0.0)

    def sample(self) -> list[dict[str, Any]]:
        data = self._get(f"/samples?since={self.since!r}")
        out = []
        offset = self.offset or 0.0
        for s in data.get("samples", []):
            t_agent = float(s["t"])
            self.since = max(self.since, t_agent)
            s = dict(s)
            s["t_agent"] = t_agent
            s["t"] = t_agent - offset
            s["source"] = f"agent:{s.get('source')}"
            out.append(s)
        return out

    def describe(self) -> dict[str, Any]:
        return {"url": self.shown_url, "agent_host": self.remote.get("host"),
                "agent_samplers": self.remote.get("samplers"),
                "clock_offset_s": self.offset, "best_rtt_s": self.best_rtt}
