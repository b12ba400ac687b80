"""Live progress, refreshed from its own coroutine: a compact in-place view on a terminal,
and with ``--progress-interval`` a plain ``key=value`` line on stderr every so often
(whether or not there is a terminal, so a soak run's log shows its course).

It only reads the runner's counters (``Counters.snapshot()`` folds the buffered
latencies into their histograms); the request path never waits for it.  Percentiles
come from the live histograms, so they carry the histograms' relative error.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator

from rich.console import Console
from rich.live import Live
from rich.text import Text

from infermeter.core.livestats import LatencySnapshot
from infermeter.core.outcome import Counters

RECENT_S = 5.0  # the window of the "recent" rates
COUNTING_PHASES = ("warm-up", "measuring")  # the counters restart when one of these begins


@dataclass(frozen=True)
class Figures:
    """What one progress line says (times in seconds; None: nothing to say yet)."""

    phase: str
    done: int
    total: int
    in_flight: int
    failed: int
    error_rate: float | None
    req_s_recent: float | None
    req_s: float | None
    tok_s_recent: float | None
    tok_s: float | None
    ttft_p50: float | None
    ttft_p99: float | None
    itl_p50: float | None
    itl_p99: float | None
    e2el_p50: float | None
    rel_error: float
    elapsed: float
    rss_mib: float | None


def rss_mib() -> float | None:
    """This process's resident memory now (VmRSS), else its peak (getrusage); None if neither."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
    except (ImportError, OSError):
        return None


def figures(c: Counters, snap: LatencySnapshot, *, elapsed: float, recent: tuple[float, float] | None,
            rss: float | None) -> Figures:
    """The figures of a line from the counters, their latency snapshot, the seconds since the
    counting phase began and the recent (requests/s, output tokens/s)."""
    overall = elapsed > 0 and c.finished > 0
    return Figures(
        phase=c.phase, done=c.finished, total=c.total, in_flight=c.in_flight, failed=c.failed,
        error_rate=c.failed / c.finished if c.finished else None,
        req_s_recent=recent[0] if recent else None, req_s=c.finished / elapsed if overall else None,
        tok_s_recent=recent[1] if recent else None, tok_s=c.output_tokens / elapsed if overall else None,
        ttft_p50=snap.ttft.percentile(50), ttft_p99=snap.ttft.percentile(99),
        itl_p50=snap.itl.percentile(50), itl_p99=snap.itl.percentile(99),
        e2el_p50=snap.e2el.percentile(50), rel_error=snap.rel_error, elapsed=elapsed, rss_mib=rss)


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:.3g}" if value * 1e3 < 100 else f"{value * 1e3:.0f}"


def plain_line(f: Figures) -> str:
    """One grep-friendly line: ``progress key=value ...`` (``-``: no value yet; latencies in ms,
    within ``stats_rel_error`` of the exact percentile)."""
    fields = [
        ("phase", f.phase), ("done", str(f.done)), ("total", str(f.total)), ("in_flight", str(f.in_flight)),
        ("failed", str(f.failed)), ("error_rate", _num(f.error_rate, 4)),
        ("req_s_recent", _num(f.req_s_recent, 2)), ("req_s", _num(f.req_s, 2)),
        ("out_tok_s_recent", _num(f.tok_s_recent)), ("out_tok_s", _num(f.tok_s)),
        ("ttft_p50_ms", _ms(f.ttft_p50)), ("ttft_p99_ms", _ms(f.ttft_p99)),
        ("itl_p50_ms", _ms(f.itl_p50)), ("itl_p99_ms", _ms(f.itl_p99)), ("e2el_p50_ms", _ms(f.e2el_p50)),
        ("stats_rel_error", f"{f.rel_error:g}"), ("elapsed_s", f"{f.elapsed:.1f}"), ("rss_mib", _num(f.rss_mib)),
    ]
    return "progress " + " ".join(f"{k}={v}" for k, v in fields)


def _t(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.3g} ms" if value < 1.0 else f"{value:.3g} s"


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def live_text(f: Figures, width: int = 24) -> Text:
    """The terminal's in-place view: three lines."""
    total = f.total or 1
    filled = min(width, int(width * f.done / total))
    errors = f" ({f.error_rate:.1%})" if f.error_rate else ""
    rss = f"  RSS {f.rss_mib:,.0f} MiB" if f.rss_mib is not None else ""
    rates = (f"{_num(f.req_s_recent)} req/s, {_num(f.tok_s_recent, 0)} out tok/s (last {RECENT_S:g} s)   "
             f"{_num(f.req_s)} req/s, {_num(f.tok_s, 0)} out tok/s (all)")
    pct = f"±{f.rel_error:.0%}" if f.rel_error >= 0.01 else f"±{f.rel_error:.1%}"
    stats = (f"TTFT p50 ~{_t(f.ttft_p50)} p99 ~{_t(f.ttft_p99)}   ITL p50 ~{_t(f.itl_p50)} p99 ~{_t(f.itl_p99)}   "
             f"E2EL p50 ~{_t(f.e2el_p50)}   ({pct})")
    return Text(f"{f.phase:<9} {'█' * filled}{'░' * (width - filled)} {f.done:,}/{f.total:,} done  "
                f"{f.in_flight:,} in flight  {f.failed:,} failed{errors}  {_clock(f.elapsed)}{rss}\n"
                f"  {rates}\n  {stats}")


class ProgressView:
    """Reads a run's counters and remembers what the rates need: when the counting phase
    began (``Counters.phase_started``; a "waiting" phase goes on counting) and
    (time, finished, output tokens) samples of the last ``RECENT_S`` seconds."""

    def __init__(self, counters: Counters, clock=time.perf_counter) -> None:
        self.counters = counters
        self.clock = clock
        self.t0 = counters.phase_started
        self.samples: deque[tuple[float, int, int]] = deque()

    def figures(self) -> Figures:
        c, now = self.counters, self.clock()
        if c.phase in COUNTING_PHASES and c.phase_started != self.t0:  # the counters restarted
            self.t0 = c.phase_started
            self.samples.clear()
            self.samples.append((self.t0, 0, 0))
        self.samples.append((now, c.finished, c.output_tokens))
        while len(self.samples) > 2 and self.samples[1][0] <= now - RECENT_S:
            self.samples.popleft()
        t, done, tokens = self.samples[0]
        recent = ((c.finished - done) / (now - t), (c.output_tokens - tokens) / (now - t)) if now > t else None
        return figures(c, c.snapshot(), elapsed=now - self.t0, recent=recent, rss=rss_mib())


def live_progress(console: Console, refresh_hz: float = 4.0, *, live: bool = True,
                  interval: float | None = None):
    """The progress factory for the runner: ``live`` shows the in-place view when ``console``
    is a terminal; ``interval`` writes a plain line to it every so many seconds, and a last
    one when the load ends."""

    @contextlib.asynccontextmanager
    async def factory(counters: Counters) -> AsyncIterator[None]:
        show = live and console.is_terminal
        if not show and interval is None:
            yield
            return
        view = ProgressView(counters)
        period = min(1.0 / refresh_hz if show else math.inf, interval if interval is not None else math.inf)

        def emit(line: str) -> None:
            console.print(Text(line), soft_wrap=True, highlight=False)

        with Live(live_text(view.figures()), console=console, auto_refresh=False, transient=True) \
                if show else contextlib.nullcontext() as screen:
            async def tick() -> None:
                due = view.clock() + (interval or 0.0)
                while True:
                    await asyncio.sleep(period)
                    f = view.figures()
                    if screen is not None:
                        screen.update(live_text(f), refresh=True)
                    if interval is not None and view.clock() >= due:
                        emit(plain_line(f))
                        while due <= view.clock():
                            due += interval

            task = asyncio.ensure_future(tick())
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                if interval is not None:
                    emit(plain_line(view.figures()))

    return factory
