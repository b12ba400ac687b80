"""The prompt feed (load/feed.py): prompts built in this process first, then by a builder process,
handed out in send order, bounded ahead, and a failure in the child stops the run with its message."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from infermeter.core.prompt import Prompt
from infermeter.errors import UserError
from infermeter.load import feed as feed_mod
from infermeter.load.feed import ChildFeed, FeedError, ListFeed, open_feed


@pytest.fixture(autouse=True)
def no_wait_for_ready(monkeypatch):
    # The head stops at head_s even when the builder process is not ready yet: these tests
    # exercise the stream (the prompts they build are so cheap that the head would take them all).
    monkeypatch.setattr(feed_mod, "READY_MAX_S", 0.0)


class Builder:
    """Prompt i: text 'p<i>', i + 1 input tokens; lazy like the seeded datasets."""

    lazy = True

    def __init__(self, slow_s: float = 0.0) -> None:
        self.slow_s = slow_s

    def at(self, indices):
        if self.slow_s:
            import time
            time.sleep(self.slow_s)
        return [Prompt(text=f"p{i}", input_len=i + 1, output_len=(i % 7) or None) for i in indices]


class Protocol:
    def build_body(self, p, options):
        return p.text.encode()


class Broken(Builder):
    def at(self, indices):
        if min(indices) >= 16:
            raise KeyError("boom")
        return super().at(indices)


def check_context(prompts):
    for p in prompts:
        if p.input_len > 300:
            raise UserError(f"a prompt of {p.input_len} tokens exceeds the server's context", "use shorter prompts")


def gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


async def drain(feed, count: int) -> list:
    await feed.start()
    out = []
    for _ in range(count):
        item = feed.take() or await feed.wait()
        out.append(item)
    return out


def expect(i: int) -> tuple:
    return (f"p{i}".encode(), i + 1, (i % 7) or None)


def test_small_runs_are_built_whole_before_the_start():
    feed = open_feed(Builder(), range(50), Protocol(), None, head_s=0.3)
    assert isinstance(feed, ListFeed) and not feed.lazy
    assert asyncio.run(drain(feed, 50)) == [expect(i) for i in range(50)]
    with pytest.raises(FeedError):
        asyncio.run(feed.wait())


def test_a_long_run_streams_its_prompts_from_a_child_in_order():
    feed = open_feed(Builder(), range(5000), Protocol(), None, head_s=0.0)
    try:
        assert isinstance(feed, ChildFeed) and feed.lazy
        assert feed_mod.CHUNK_MIN <= feed.head < 5000  # built here while the builder process started
        got = asyncio.run(drain(feed, 5000))
        assert got == [expect(i) for i in range(5000)]
        assert feed.received == 5000 - feed.head
    finally:
        feed.close()


def test_a_shards_slice_and_a_cycled_pool():
    feed = open_feed(Builder(), range(1, 400, 3), Protocol(), None, head_s=0.0)
    try:
        assert asyncio.run(drain(feed, len(range(1, 400, 3)))) == [expect(i) for i in range(1, 400, 3)]
    finally:
        feed.close()
    feed = open_feed(Builder(), range(40), Protocol(), None, head_s=0.0, cycle=True)
    try:
        assert asyncio.run(drain(feed, 130)) == [expect(k % 40) for k in range(130)]
    finally:
        feed.close()


def test_reading_pauses_ahead_of_the_sends_and_resumes(monkeypatch):
    monkeypatch.setattr(feed_mod, "AHEAD_MAX", 64)
    feed = open_feed(Builder(), range(20000), Protocol(), None, head_s=0.0)

    async def go():
        await feed.start()
        for _ in range(400):  # the builder fills the pipe; the loop reads until it pauses
            if feed._paused:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # paused: nothing more is read
        held = len(feed._items)
        paused = feed._paused
        rest = [feed.take() or await feed.wait() for _ in range(20000)]
        return held, paused, rest

    try:
        held, paused, rest = asyncio.run(go())
        assert paused and held < 64 + 8000  # bounded: AHEAD_MAX plus at most one read's worth
        assert rest == [expect(i) for i in range(20000)]
    finally:
        feed.close()


def test_a_prompt_the_server_cannot_take_stops_the_feed_with_its_message():
    feed = open_feed(Builder(), range(1000), Protocol(), None, head_s=0.0, check=check_context)

    async def go():
        await feed.start()
        got = []
        with pytest.raises(FeedError, match="exceeds the server's context — use shorter prompts"):
            while True:
                got.append(feed.take() or await feed.wait())
        return got

    try:
        got = asyncio.run(go())
        assert 0 < len(got) <= 300 and got == [expect(i) for i in range(len(got))]
    finally:
        feed.close()
    with pytest.raises(UserError):  # one in the first chunk stops before the run, as before
        open_feed(Builder(), range(400, 1000), Protocol(), None, head_s=0.0, check=check_context)


def test_a_builder_that_fails_is_reported_and_close_reaps_the_child():
    feed = open_feed(Broken(), range(100), Protocol(), None, head_s=0.0)

    async def go():
        await feed.start()
        with pytest.raises(FeedError, match="the prompt builder failed: KeyError: 'boom'"):
            for _ in range(100):
                feed.take() or await feed.wait()

    asyncio.run(go())
    pid = feed._proc.pid
    feed.close()
    assert gone(pid)


def test_a_stalled_builder_stops_the_wait(monkeypatch):
    monkeypatch.setattr(feed_mod, "STALL_S", 0.3)
    feed = open_feed(Builder(slow_s=5.0), range(100), Protocol(), None, head_s=0.0)

    async def go():
        await feed.start()
        with pytest.raises(FeedError, match="sent nothing for 0.3 s after"):
            for _ in range(100):
                feed.take() or await feed.wait()

    try:
        asyncio.run(go())
    finally:
        feed.close()


def test_waits_are_counted_when_the_builder_falls_behind():
    feed = open_feed(Builder(slow_s=0.02), range(200), Protocol(), None, head_s=0.0)
    try:
        asyncio.run(drain(feed, 200))
        assert feed.waits > 0 and feed.wait_s > 0
        assert feed.describe()["waits"] == feed.waits
    finally:
        feed.close()


def test_closing_early_kills_a_child_blocked_on_a_full_pipe():
    feed = open_feed(Builder(), range(10_000_000), Protocol(), None, head_s=0.0)
    pid = feed._proc.pid
    feed.close()  # never started: the child is blocked writing
    assert gone(pid)


def test_several_sends_waiting_at_once_are_all_served(monkeypatch):
    # A closed loop's workers wait for prompts together: each one must be woken, not only the last.
    monkeypatch.setattr(feed_mod, "STALL_S", 3.0)
    feed = open_feed(Builder(slow_s=0.2), range(200), Protocol(), None, head_s=0.0)

    async def worker(out):
        for _ in range(50):
            out.append(feed.take() or await feed.wait())

    async def go():
        await feed.start()
        out: list = []
        await asyncio.gather(*(worker(out) for _ in range(4)))
        return out

    try:
        got = asyncio.run(go())
        assert sorted(got) == sorted(expect(i) for i in range(200))
    finally:
        feed.close()


def test_a_builder_that_cannot_be_pickled_is_built_here():
    builder = Builder()
    builder.hook = lambda: None  # a lambda does not pickle
    feed = open_feed(builder, range(3000), Protocol(), None, head_s=0.0)
    assert isinstance(feed, ListFeed) and feed.count == 3000
    assert asyncio.run(drain(feed, 3000)) == [expect(i) for i in range(3000)]


def test_a_head_that_lasts_long_enough_at_the_runs_rate_does_not_wait_for_the_builder(monkeypatch):
    import time

    monkeypatch.setattr(feed_mod, "READY_MAX_S", 30.0)
    t = time.perf_counter()
    feed = open_feed(Builder(), range(10_000_000), Protocol(), None, head_s=0.05, rate=10.0)
    took = time.perf_counter() - t
    try:
        assert isinstance(feed, ChildFeed) and took < 0.5  # the builder process needs longer to start
        assert feed.head / 10.0 >= feed_mod.READY_COVER_S  # what was built lasts that long at 10 req/s
        assert asyncio.run(drain(feed, feed.head + 100)) == [expect(i) for i in range(feed.head + 100)]
    finally:
        feed.close()



@pytest.mark.parametrize(("module", "name", "knob"), [("infermeter.load.feed", "HEAD_S", "INFERMETER_FEED_HEAD_S"),
                                                      ("infermeter.load.generator", "GC_YOUNG_THRESHOLD",
                                                       "INFERMETER_GC_THRESHOLD")])
def test_a_bad_tuning_knob_does_not_stop_the_import(module: str, name: str, knob: str) -> None:
    proc = subprocess.run([sys.executable, "-c", f"import {module} as m; print(m.{name})"],
                          env={**os.environ, knob: "abc"}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() in ("0.3", "50000")
    assert proc.stderr.strip().startswith(f"infermeter: {knob}='abc' is not a number >= 0")
