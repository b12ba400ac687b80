"""Phases on the telemetry timeline.

``idle``      before the server is started (the GPU's baseline)
``loading``   the server is starting: weights, KV-cache allocation, warm-up/compilation
``ready``     loaded and answering, before any traffic: the "memory used" people quote
``warmup``    infermeter's warm-up requests (only when there were some)
``load``      the measured window: first send to last answer
``cooldown``  after the window, until telemetry stops

``peak`` is not a span but a moment: the sample with the most memory in use, reported
with the phase it fell in (summary ``gpu.*.peak``), so "peak memory" says whether it
came under load or, say, during loading.

Marks are wall-clock epochs (``time.time()``), the clock of ``infermeter.start_epoch``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

IDLE, LOADING, READY, WARMUP, LOAD, COOLDOWN = "idle", "loading", "ready", "warmup", "load", "cooldown"
PHASES = (IDLE, LOADING, READY, WARMUP, LOAD, COOLDOWN)


@dataclass
class PhaseTimeline:
    marks: list[tuple[float, str]] = field(default_factory=list)  # (epoch, name), sorted by time
    initial: str = IDLE

    def mark(self, name: str, t: float) -> None:
        bisect.insort(self.marks, (t, name))

    def phase_at(self, t: float) -> str:
        i = bisect.bisect_right(self.marks, (t, "\uffff"))
        return self.marks[i - 1][1] if i else self.initial

    def apply_window(self, start: float, end: float | None, *, warmup: bool) -> None:
        """Make the measured window exact: ``load`` from ``start`` to ``end``, then
        ``cooldown``.  A ``load`` mark made before ``start`` (the caller marks load before
        the run, warm-up included) becomes ``warmup`` when there were warm-up requests,
        else is dropped (the time until the window is still ``ready``)."""
        kept: list[tuple[float, str]] = []
        for t, name in self.marks:
            if name == LOAD and t <= start:
                if warmup and t < start:
                    kept.append((t, WARMUP))
                continue
            if end is not None and name == COOLDOWN:
                continue
            kept.append((t, name))
        self.marks = sorted(kept)
        self.mark(LOAD, start)
        if end is not None:
            self.mark(COOLDOWN, end)

    def spans(self, until: float | None = None, origin: float | None = None) -> list[dict[str, Any]]:
        """The phases in order, a repeated mark of the same phase merged into its span."""
        marks: list[tuple[float, str]] = []
        for t, name in self.marks:
            if not marks or marks[-1][1] != name:
                marks.append((t, name))
        out = []
        for i, (t, name) in enumerate(marks):
            end = marks[i + 1][0] if i + 1 < len(marks) else until
            span: dict[str, Any] = {"name": name, "start": t, "end": end}
            if origin is not None:
                span["start_rel"] = round(t - origin, 6)
                span["end_rel"] = round(end - origin, 6) if end is not None else None
            out.append(span)
        return out
