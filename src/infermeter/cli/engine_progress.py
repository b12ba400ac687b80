"""The embedded engine's build and model progress, as one line with an ETA.

``run``, ``sweep`` and ``engine build`` all show it the same way: on a terminal
one line that updates in place (``engine: compile 71/206 (34 %), 3m41s left``);
in a log or a pipe, one line per phase and one per tenth of the compile steps,
so a CI log shows progress without thousands of lines.
"""

from __future__ import annotations

import time
from typing import Callable

from rich.console import Console

Clock = Callable[[], float]


def eta_text(done: int, total: int, elapsed: float) -> str:
    """``"3m41s left"`` from the rate so far (after a few steps), else ``""``."""
    if done < 3 or elapsed <= 0 or done >= total:
        return ""
    left = elapsed / done * (total - done)
    minutes, seconds = divmod(int(round(left)), 60)
    return f"{minutes}m{seconds:02d}s left" if minutes else f"{seconds}s left"


class EngineProgress:
    """``progress(phase, done, total)`` for :func:`infermeter.embedded.build.ensure_llama_server`."""

    def __init__(self, console: Console, *, clock: Clock = time.monotonic, dim: bool = True) -> None:
        self.console = console
        self.clock = clock
        self.dim = dim
        self.live = console.is_terminal
        self._phase: str | None = None
        self._phase_start = clock()
        self._tenth = -1
        self._open = False  # a terminal line is being updated in place

    def __call__(self, phase: str, done: int | None, total: int | None) -> None:
        now = self.clock()
        if phase != self._phase:
            self._phase, self._phase_start, self._tenth = phase, now, -1
            if phase == "done":
                self._end_line()
                return
            if done is None or not total:
                self._print(f"engine: {phase}" + (" (another process is building it)" if phase == "wait" else ""))
                return
        if done is None or not total:
            return
        pct = 100 * done // total
        eta = eta_text(done, total, now - self._phase_start)
        text = f"engine: {phase} {done}/{total} ({pct} %)" + (f", {eta}" if eta else "")
        if self.live:
            self.console.file.write("\r\x1b[2K" + text)
            self.console.file.flush()
            self._open = True
            if done >= total:
                self._end_line()
            return
        tenth = 10 * done // total
        if tenth != self._tenth:
            self._tenth = tenth
            self._print(text)

    def _end_line(self) -> None:
        if self._open:
            self.console.file.write("\n")
            self.console.file.flush()
            self._open = False

    def _print(self, text: str) -> None:
        self._end_line()
        self.console.print(f"[dim]{text}[/dim]" if self.dim else text, highlight=False)
