"""A background thread that runs one sampler on an interval.

One thread per source, so a slow ``/metrics`` (a busy server answers it late) or a CLI
fallback never delays the GPU samples.  ``poke()`` takes a sample now (a phase
change) and ``poke(wait=...)`` waits until it has been taken.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from infermeter.telemetry.base import Sampler

Deliver = Callable[[Sampler, list[dict[str, Any]], float], None]  # (sampler, samples, epoch)


class SamplerLoop:
    def __init__(self, sampler: Sampler, interval: float, deliver: Deliver) -> None:
        self.sampler = sampler
        self.interval = max(float(interval), sampler.min_interval, 0.001)
        self.deliver = deliver
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._generation = 0  # samples attempted so far
        self._busy = False  # a sample is being taken
        self._thread: threading.Thread | None = None
        self.samples = 0
        self.errors = 0
        self.last_error: str | None = None
        self.cost_total_s = 0.0
        self.cost_max_s = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"infermeter-telemetry-{self.sampler.name}",
                                        daemon=True)
        self._thread.start()

    def request(self) -> int:
        """Ask for a sample now; returns the generation to wait for (``wait_for``)."""
        with self._lock:  # one in flight began before this call: wait for the one after it
            target = self._generation + (2 if self._busy else 1)
        self._wake.set()
        return target

    def wait_for(self, target: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._done:
            while self._generation < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._done.wait(left)
        return True

    def poke(self, wait: float | None = None) -> bool:
        """Sample now; with ``wait``, block up to that many seconds until it is taken."""
        target = self.request()
        return self.wait_for(target, wait) if wait else False

    def _one(self, forced: bool) -> None:
        with self._lock:
            self._busy = True
        t = time.time()
        t0 = time.perf_counter()
        self.sampler.forced = forced
        try:
            samples = self.sampler.sample()
        except Exception as exc:  # transient: count it, keep sampling
            cost = time.perf_counter() - t0
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            samples = []
        else:
            cost = time.perf_counter() - t0
            self.samples += 1
        self.cost_total_s += cost
        self.cost_max_s = max(self.cost_max_s, cost)
        if samples:
            try:
                self.deliver(self.sampler, samples, t)
            except Exception as exc:  # a full disk must not kill the thread silently
                self.errors += 1
                self.last_error = f"deliver: {type(exc).__name__}: {exc}"[:300]
        with self._done:
            self._generation += 1
            self._busy = False
            self._done.notify_all()

    def _run(self) -> None:
        next_due = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_due or self._wake.is_set():
                forced = self._wake.is_set()
                self._wake.clear()
                self._one(forced)
                next_due = max(next_due + self.interval, time.monotonic() + self.interval * 0.5)
                continue
            self._wake.wait(next_due - now)

    def stop(self, final_sample: bool = False, timeout: float = 5.0) -> None:
        if final_sample and self._thread is not None and self._thread.is_alive():
            self.poke(wait=timeout)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        attempts = self.samples + self.errors
        return {"interval_s": self.interval, "samples": self.samples, "errors": self.errors,
                "last_error": self.last_error,
                "mean_cost_us": round(self.cost_total_s / attempts * 1e6, 1) if attempts else None,
                "max_cost_us": round(self.cost_max_s * 1e6, 1) if attempts else None}
