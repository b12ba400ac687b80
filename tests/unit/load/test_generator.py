"""The load runner's fidelity mechanisms, with a scripted in-process transport."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from infermeter.clients.protocols import OpenAIProtocol
from infermeter.core.protocol import RequestOptions
from infermeter.load.schedule import arrival_offsets, make_plan
from infermeter.load.generator import LoadRunner
from infermeter.load.shard import Shard
from infermeter.core.prompt import Prompt

STREAM = [b'data: {"choices":[{"text":" a"}]}\n\n', b'data: {"choices":[{"text":" b","finish_reason":"length"}],'
          b'"usage":{"completion_tokens":2,"prompt_tokens":3}}\n\n', b"data: [DONE]\n\n"]


class FakeTransport:
    """Answers every POST after ``delay`` seconds with a two-token stream."""

    request_id_header = None  # the Transport contract (core/transport.py): no request tagging

    def __init__(self, delay=0.002):
        self.delay = delay
        self.bodies: list[bytes] = []
        self.notes: list[str] = []

    async def post(self, path, body, raw):
        self.bodies.append(body)
        raw.sent = time.perf_counter()
        raw.status = 200
        await asyncio.sleep(self.delay)
        raw.headers = time.perf_counter()
        for chunk in STREAM:
            raw.times.append(time.perf_counter())
            raw.chunks.append(chunk)
        raw.end = time.perf_counter()
        return raw


def prompts(n):
    return [Prompt(text=f"p{i}", input_len=3, output_len=2) for i in range(n)]


def test_completed_responses_are_interpreted_in_slices_between_loop_iterations():
    proto = OpenAIProtocol(chat=False)
    slow = proto.interpret

    def interpret(raw, rec, opts):  # 3 ms of CPU per response, like a long stream
        end = time.perf_counter() + 0.003
        while time.perf_counter() < end:
            pass
        slow(raw, rec, opts)

    proto.interpret = interpret
    plan = make_plan(40)  # a burst: all 40 complete together

    async def go():
        runner = LoadRunner(FakeTransport(delay=0.01), proto, RequestOptions(model="m"), plan, prompts(40))
        ticks = []
        stop = False

        def tick():
            ticks.append(time.perf_counter())
            if not stop:
                asyncio.get_running_loop().call_later(0, tick)

        tick()
        outcome = await runner.run()
        stop = True
        window = np.array([t for t in ticks if t > runner._origin])  # after the pre-window gc.collect()
        return outcome, runner, np.diff(window)

    outcome, runner, gaps = asyncio.run(go())
    assert len(outcome.records) == 40 and all(r.ok for r in outcome.records)
    assert [r.output_tokens for r in outcome.records] == [2] * 40
    assert runner.backlog_max >= 10  # they queued up instead of being parsed back to back inline
    # Inline, one iteration would have parsed all 40 (120 ms) with no poll in between.
    assert gaps.max() < 0.06
    assert outcome.client.finish_backlog_max == runner.backlog_max


def test_a_shard_sends_its_global_requests_on_the_global_schedule():
    plan = make_plan(9, 300.0, arrival="constant")
    shard = Shard(1, 3)
    local = shard.local_plan(plan)
    all_prompts = prompts(9)
    mine = [all_prompts[i] for i in shard.indices(9)]

    async def go():
        transport = FakeTransport()
        runner = LoadRunner(transport, OpenAIProtocol(chat=False), RequestOptions(model="m"), local, mine,
                            indices=shard.indices(9), offsets=shard.offsets(plan, 0),
                            start_at=time.time() + 0.05)
        return await runner.run(), transport

    (outcome, transport) = asyncio.run(go())
    assert [r.index for r in outcome.records] == [1, 4, 7]
    want = arrival_offsets(plan, 0)[1::3]
    assert np.allclose([r.scheduled for r in outcome.records], want, atol=1e-9)
    assert all(r.sent >= r.scheduled - 1e-4 for r in outcome.records)  # never early
    assert [b'"prompt":"p1"' in b for b in transport.bodies] == [True, False, False]


def test_runner_refuses_mismatched_shard_inputs():
    plan = make_plan(2)
    with pytest.raises(ValueError):
        LoadRunner(FakeTransport(), OpenAIProtocol(chat=False), RequestOptions(model="m"), plan, prompts(2),
                   indices=[0])
    with pytest.raises(ValueError):
        LoadRunner(FakeTransport(), OpenAIProtocol(chat=False), RequestOptions(model="m"), plan, prompts(2),
                   offsets=[0.0, 1.0, 2.0])


def test_the_open_loop_keeps_no_finished_request_alive():
    # Kept until the end, finished tasks (and their records) were walked by
    # every garbage collection in the window, each a pause sends waited on.
    import gc
    import weakref

    n = 300
    plan = make_plan(n, 2000.0, arrival="constant")  # 150 ms of sends; each request takes ~0.5 ms
    refs: list[weakref.ref] = []
    alive_done: list[int] = []
    holder: list[LoadRunner] = []

    def sink(rec):
        if rec.index >= n // 3 and rec.index % 10 == 0 and holder[0].counters.sent < n:  # still sending
            gc.collect()  # what is left is reachable
            alive_done.append(sum(1 for r in refs if (t := r()) is not None and t.done()))

    async def go():
        loop = asyncio.get_running_loop()

        def factory(loop, coro, **kw):
            task = asyncio.Task(coro, loop=loop, **kw)
            refs.append(weakref.ref(task))
            return task

        loop.set_task_factory(factory)
        runner = LoadRunner(FakeTransport(delay=0.0005), OpenAIProtocol(chat=False), RequestOptions(model="m"),
                            plan, prompts(n), sink=sink)
        holder.append(runner)
        return await runner.run()

    outcome = asyncio.run(go())
    assert len(outcome.records) == n and all(r.ok for r in outcome.records)
    assert len(refs) >= n and alive_done
    # Only those whose done-callbacks have yet to run: a handful on a quiet core, a few
    # more when the machine is busy.  Keeping finished tasks, as before, holds ~n/3 here.
    assert max(alive_done) <= 20


def test_after_warmup_runs_between_the_warmup_and_the_window():
    # A telemetry scrape here may block the loop for a while: it must come before the window's
    # origin, or every measured request would start late on its own schedule.
    calls = []
    plan = make_plan(6, max_concurrency=2, warmup_requests=2)

    async def go():
        runner = LoadRunner(FakeTransport(), OpenAIProtocol(chat=False), RequestOptions(model="m"), plan,
                            prompts(6), prompts(2), after_warmup=lambda: calls.append(time.perf_counter()))
        outcome = await runner.run()
        return runner, outcome

    runner, outcome = asyncio.run(go())
    assert len(calls) == 1 and calls[0] < runner._origin
    assert all(w.end is not None and w.end <= 0 for w in outcome.warmup_records)  # ran before the origin
    assert all(r.sent >= 0 for r in outcome.records)


def test_the_live_histograms_hold_the_measured_successful_requests():
    plan = make_plan(30)

    async def go():
        runner = LoadRunner(FakeTransport(), OpenAIProtocol(chat=False), RequestOptions(model="m"), plan,
                            prompts(30))
        return runner, await runner.run()

    runner, outcome = asyncio.run(go())
    snap = runner.counters.snapshot()
    ok = [r for r in outcome.records if r.ok]
    assert snap.ttft.count == snap.e2el.count == len(ok) == 30
    assert snap.itl.count == sum(len(r.itls) for r in ok) > 0
    assert snap.e2el.max == max(r.e2el for r in ok)
