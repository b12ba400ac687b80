"""The progress view's figures and lines, from counters with known latencies."""

from __future__ import annotations

import asyncio
import io

import numpy as np
from rich.console import Console

from infermeter.cli import progress
from infermeter.cli.progress import ProgressView, figures, live_progress, live_text, plain_line
from infermeter.core.outcome import Counters
from infermeter.core.records import RequestRecord


def _counters() -> Counters:
    c = Counters(total=200, sent=130, finished=120, failed=6, output_tokens=4000)
    c.phase = "measuring"
    for i in range(114):  # TTFT 20..133 ms, 3 gaps of 10 ms each, E2EL = TTFT + 30 ms
        ttft = 0.020 + i * 0.001
        times = [ttft + k * 0.010 for k in range(4)]
        c.observe(RequestRecord(index=i, warmup=False, scheduled=0.0, input_len=1, requested_output_len=4,
                                sent=0.0, first_token=ttft, end=times[-1], token_times=times, ok=True))
    return c


def test_plain_line_carries_every_figure_as_key_value():
    c = _counters()
    f = figures(c, c.snapshot(), elapsed=12.0, recent=(9.5, 310.0), rss=123.4)
    line = plain_line(f)
    assert "\n" not in line and line.startswith("progress ")
    kv = dict(p.split("=", 1) for p in line.split()[1:])
    assert kv["phase"] == "measuring" and kv["done"] == "120" and kv["total"] == "200"
    assert kv["in_flight"] == "10" and kv["failed"] == "6" and kv["error_rate"] == "0.0500"
    assert kv["req_s_recent"] == "9.50" and kv["req_s"] == "10.00"
    assert kv["out_tok_s_recent"] == "310.0" and kv["out_tok_s"] == "333.3"
    ttft = [0.020 + i * 0.001 for i in range(114)]
    for key, true in (("ttft_p50_ms", np.percentile(ttft, 50) * 1e3), ("ttft_p99_ms", np.percentile(ttft, 99) * 1e3),
                      ("e2el_p50_ms", np.percentile(ttft, 50) * 1e3 + 30), ("itl_p50_ms", 10.0),
                      ("itl_p99_ms", 10.0)):
        assert abs(float(kv[key]) - true) <= 0.011 * true, (key, kv[key], true)
    assert kv["stats_rel_error"] == "0.01" and kv["elapsed_s"] == "12.0" and kv["rss_mib"] == "123.4"


def test_nothing_yet_is_a_dash_never_zero():
    c = Counters(total=10)
    c.phase = "measuring"
    line = plain_line(figures(c, c.snapshot(), elapsed=0.0, recent=None, rss=None))
    kv = dict(p.split("=", 1) for p in line.split()[1:])
    for key in ("error_rate", "req_s", "req_s_recent", "out_tok_s", "ttft_p50_ms", "itl_p99_ms", "e2el_p50_ms",
                "rss_mib"):
        assert kv[key] == "-", key


def test_live_text_is_three_lines_with_the_bound():
    c = _counters()
    text = live_text(figures(c, c.snapshot(), elapsed=83.0, recent=(9.5, 310.0), rss=85.0)).plain
    lines = text.split("\n")
    assert len(lines) == 3
    assert "120/200 done" in lines[0] and "10 in flight" in lines[0] and "6 failed (5.0%)" in lines[0]
    assert "1m23s" in lines[0] and "RSS 85 MiB" in lines[0]
    assert "9.5 req/s, 310 out tok/s (last 5 s)" in lines[1] and "1.4 req/s, 48 out tok/s (all)" in lines[1]
    assert "TTFT p50 ~" in lines[2] and "ITL p50 ~10 ms" in lines[2] and "(±1%)" in lines[2]


def test_rates_restart_with_the_measured_phase_and_keep_counting_while_waiting():
    now = [100.0]
    c = Counters()
    c.phase = "warm-up"
    view = ProgressView(c, clock=lambda: now[0])
    c.phase_started = 90.0
    c.phase = "measuring"
    c.phase_started = 100.0  # as if stamped at the clock's 100 s
    for t in range(1, 21):  # 10 requests a second for 20 s
        now[0] = 100.0 + t
        c.finished, c.output_tokens = 10 * t, 100 * t
        f = view.figures()
    assert f.req_s == 10.0 and f.tok_s == 100.0 and f.elapsed == 20.0
    assert f.req_s_recent == 10.0 and len(view.samples) <= 7  # only the last ~5 s are kept
    c.phase = "waiting"  # the same counting goes on
    now[0] = 122.0
    f = view.figures()
    assert f.elapsed == 22.0 and f.req_s == 200 / 22.0


def test_rss_is_read():
    value = progress.rss_mib()
    assert value is not None and value > 1.0


def test_interval_lines_without_a_terminal():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=80)
    c = _counters()

    async def go():
        async with live_progress(console, interval=0.05)(c):
            await asyncio.sleep(0.18)

    asyncio.run(go())
    lines = out.getvalue().splitlines()
    assert 3 <= len(lines) <= 5  # about 3 on the interval, and a last one
    assert all(ln.startswith("progress phase=measuring done=120 ") for ln in lines)  # never wrapped at 80


def test_nothing_without_a_terminal_or_an_interval():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False)

    async def go():
        async with live_progress(console)(Counters()):
            await asyncio.sleep(0.3)

    asyncio.run(go())
    assert out.getvalue() == ""


def test_on_a_terminal_the_view_and_the_interval_lines_share_the_screen():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    c = _counters()

    async def go():
        async with live_progress(console, refresh_hz=20, interval=0.1)(c):
            await asyncio.sleep(0.25)

    asyncio.run(go())
    text = out.getvalue()
    assert "TTFT p50 ~" in text and "(±1%)" in text  # the in-place view was drawn
    assert text.count("progress phase=measuring done=120 ") >= 2
