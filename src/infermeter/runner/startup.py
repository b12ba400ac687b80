"""How long a run took to send its first request, and where that time went.

A run of any size sends its first request within about a second of the work
that must come first (docs/soak.md): the process's start (imports, argument
parsing), the tokenizer's load, the server's start (the embedded engine) and
probe, and the first prompts.
``result["infermeter"]["startup"]`` records each phase in seconds, and
``first_request_s``: from the process's start to the start of the measured
load (its first request; warm-up requests and a ``--start-at`` gate come
before it and are named).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field


def process_age_s() -> float | None:
    """Seconds since this process started (Linux: /proc, to the clock tick; None elsewhere)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        ticks = int(stat[stat.rindex(b")") + 2:].split()[19])  # field 22, starttime
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


@dataclass
class Startup:
    """Phases before the measured load, in seconds (None: not measured or not done)."""

    process_s: float | None = None  # the process's start to the run's start (imports, arguments)
    tokenizer_s: float | None = None  # loading the tokenizer
    server_s: float | None = None  # starting the embedded engine, or reaching the server under test
    probe_s: float | None = None  # asking the server for its models and context
    prompts_s: float | None = None  # the prompts built before the first send (load/feed.py)
    warmup_s: float | None = None  # warm-up requests, and waiting for a start gate or --start-at
    first_request_s: float | None = None  # the process's start to the measured load's start
    _wall0: float = field(default_factory=time.time, repr=False)  # when the run started here
    _ready: float | None = field(default=None, repr=False)  # wall clock: the prompts ready

    @classmethod
    def begin(cls) -> "Startup":
        age = process_age_s()
        return cls(process_s=None if age is None else round(age, 3))

    def phase(self, name: str, since: float) -> float:
        """Record ``name`` as the time from ``since`` (a perf_counter) to now; returns now."""
        now = time.perf_counter()
        setattr(self, f"{name}_s", round(now - since, 3))
        return now

    def prompts_ready(self, since: float) -> None:
        self.phase("prompts", since)
        self._ready = time.time()

    def started(self, start_epoch: float | None) -> None:
        """The measured load started at ``start_epoch`` (wall clock: the run's origin)."""
        if not start_epoch:
            return
        if self._ready is not None:
            self.warmup_s = round(max(0.0, start_epoch - self._ready), 3)
        if self.process_s is not None:
            self.first_request_s = round(self.process_s + (start_epoch - self._wall0), 3)

    def to_dict(self) -> dict[str, float | None]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}
