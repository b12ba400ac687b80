"""Scrape the server's own Prometheus ``/metrics`` and normalise it (backends.py).

Runs on the telemetry thread with urllib (no proxy), never on the load generator's
event loop.  The thread still shares the interpreter (the GIL) with the client, so a
scrape is kept cheap:

* the text is cut down to the metrics the backend's map uses (one regular expression
  per line, ~0.5 ms for a vLLM-sized 65 KB exposition);
* gauges and counters (a few lines) are parsed at every scrape;
* histogram lines (tens a histogram, ~50 µs each to parse) are kept *unparsed* for the
  samples that need them: every forced sample (phase changes and the end, which bracket
  the measured window) and one every ``hist_interval`` seconds, and parsed after the
  run (``resolve_histograms``), when no request is in flight.
"""

from __future__ import annotations

import time
from typing import Any

from infermeter.telemetry import prom
from infermeter.telemetry.backends import MetricMap, all_wanted, detect, metric_map, normalize, split_text
from infermeter.secrets import redact_url
from infermeter.telemetry.base import Sampler, SamplerUnavailable, http_get

HIST_TEXT = "_hist_text"  # a sample's unparsed histogram lines, until resolve_histograms()


def metrics_url(base_or_url: str) -> str:
    url = base_or_url.rstrip("/")
    return url if url.endswith("/metrics") else url + "/metrics"


class ServerMetricsSampler(Sampler):
    kind = "server"
    min_interval = 0.05
    name = "server-metrics"

    def __init__(self, url: str, backend: str | None = None, *, timeout: float = 2.0,
                 hist_interval: float = 10.0) -> None:
        self.url = metrics_url(url)
        self.shown_url = redact_url(self.url)  # what messages and results say: no user:password
        self.backend_hint = backend
        self.timeout = timeout
        self.hist_interval = hist_interval
        self.map: MetricMap | None = metric_map(backend)
        self.matched: dict[str, str] = {}
        self.last_scrape_s: float | None = None
        self._last_hist = -float("inf")

    def _fetch(self) -> str:
        t0 = time.perf_counter()
        status, body = http_get(self.url, self.timeout)
        self.last_scrape_s = time.perf_counter() - t0
        if status != 200:
            what = f"answered HTTP {status}" if status else "did not answer"
            raise SamplerUnavailable(f"GET {self.shown_url} {what}"
                                     + (" (llama-server needs --metrics, SGLang --enable-metrics)"
                                        if status in (404, 501) else ""))
        return body.decode("utf-8", errors="replace")

    def open(self) -> None:
        text = self._fetch()
        if self.map is None:
            self.map = detect(prom.parse(text, all_wanted()))
        if self.map is None:
            raise SamplerUnavailable(f"{self.shown_url} exports none of the vLLM, TGI, SGLang or llama.cpp "
                                     f"metrics infermeter knows")

    def sample(self) -> list[dict[str, Any]]:
        assert self.map is not None
        text = self._fetch()
        t0 = time.perf_counter()
        scalar_text, hist_text = split_text(text, self.map)
        values, matched = normalize(prom.parse(scalar_text), self.map, histograms=False)
        self.matched.update(matched)
        s: dict[str, Any] = {"kind": "server", "source": self.name, "backend": self.map.backend,
                             "scrape_ms": round((self.last_scrape_s or 0.0) * 1e3, 3), **values}
        now = time.monotonic()
        if hist_text.strip() and (self.forced or now - self._last_hist >= self.hist_interval):
            self._last_hist = now
            s[HIST_TEXT] = hist_text
        s["parse_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
        return [s]

    def resolve_histograms(self, sample: dict[str, Any]) -> None:
        """Parse a sample's kept histogram lines into ``sample["hist"]``."""
        text = sample.pop(HIST_TEXT, None)
        if text is None or self.map is None:
            return
        values, matched = normalize(prom.parse(text), self.map)
        self.matched.update({k: v for k, v in matched.items()})
        if values.get("hist"):
            sample["hist"] = values["hist"]

    def describe(self) -> dict[str, Any]:
        return {"url": self.shown_url, "backend": self.map.backend if self.map else None,
                "matched": dict(sorted(self.matched.items())),
                "notes": self.map.notes if self.map else None}


def resolve_all(samples: list[dict[str, Any]], samplers: list[Sampler]) -> None:
    """Parse the kept histogram text of every server sample (after the run)."""
    by_map = [s for s in samplers if isinstance(s, ServerMetricsSampler)]
    for sample in samples:
        if HIST_TEXT in sample:
            for sampler in by_map:
                if sampler.map is not None and sampler.map.backend == sample.get("backend"):
                    sampler.resolve_histograms(sample)
                    break
            else:
                sample.pop(HIST_TEXT, None)
