"""Multi-turn sessions: each conversation sends its turns in order, every turn carrying the
history so far, the next one only after the previous completed (plus an optional think time).

A separate runner, so single-turn runs keep ``LoadRunner``'s hot path as it is: the
bodies of later turns can only be built once the previous answer is in, so they are
serialised at send time here (a chat body of the history: microseconds to a millisecond),
and the prompt of such a turn is counted then by ``count_input`` (the chat template over
the history with the server's answers), off the timed request itself.

Sessions are scheduled as single requests are: under a concurrency C, C sessions are in
progress at once and a worker takes the next session when one ends; under a rate, sessions
*start* at the plan's arrival times (one arrival per session) and ``--max-concurrency`` caps
the requests in flight; a burst starts every session at once.  A ``--duration`` run starts
no turn after the duration, then works as ``LoadRunner`` does (grace, then cut off).

Records carry ``session_id`` and ``turn`` (0 for the first); request indices are numbered
session by session (session s's turn t is ``sum(turns of sessions < s) + t``).  A turn that
fails ends its session: its later turns are not sent (``turns_not_sent``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Callable, Sequence

from infermeter.core.prompt import Conversation, Prompt
from infermeter.core.records import RequestRecord
from infermeter.core.recordstore import RecordStore
from infermeter.load.generator import LoadRunner
from infermeter.load.schedule import LoadMode, arrival_offsets

CountInput = Callable[[Sequence[dict[str, str]]], int]


class SessionRunner(LoadRunner):
    def __init__(self, transport, protocol, options, plan, conversations: Sequence[Conversation],
                 warmup_prompts: Sequence[Prompt] = (), *, use_server_answers: bool = True,
                 think_time_s: float = 0.0, count_input: CountInput | None = None, **kw) -> None:
        if len(conversations) != plan.num_requests:
            raise ValueError("one conversation per planned session")
        super().__init__(transport, protocol, options, replace(plan, num_requests=0), (), warmup_prompts,
                         rates=(), **kw)
        self.plan = plan
        self.conversations = list(conversations)
        self.use_server_answers = use_server_answers
        self.think_time_s = think_time_s
        self.count_input = count_input
        self.turns_not_sent = 0
        self._bases: list[int] = []
        total = 0
        for c in self.conversations:
            self._bases.append(total)
            total += len(c.turns)
        self.total_turns = total
        self._done: dict[int, asyncio.Future] = {}

    def _finish(self, rec: RequestRecord, raw) -> None:
        super()._finish(rec, raw)
        fut = self._done.pop(id(rec), None)
        if fut is not None and not fut.done():
            fut.set_result(rec)

    async def _turn(self, conv: Conversation, t: int, answers: list[str], scheduled: float,
                    slot: asyncio.Semaphore | None) -> RequestRecord:
        turn = conv.turns[t]
        messages = conv.history(t, answers)
        input_len = turn.input_len
        if t and self.use_server_answers and self.count_input is not None:
            input_len = self.count_input(messages)
        prompt = Prompt(text=turn.content, input_len=input_len, output_len=turn.output_len, messages=messages)
        body = self.protocol.build_body(prompt, self.options)
        rec = RequestRecord(index=self._bases[conv.session_id] + t, warmup=False, scheduled=scheduled,
                            input_len=input_len, requested_output_len=turn.output_len)
        rec.session_id, rec.turn = conv.session_id, t
        self._open[id(rec)] = rec
        fut = asyncio.get_running_loop().create_future()
        self._done[id(rec)] = fut
        await self._request(rec, body, slot)
        return await fut  # interpreted: its generated text is the next turn's history

    async def _session(self, conv: Conversation, start: float, slot: asyncio.Semaphore | None,
                       deadline: float | None) -> None:
        answers: list[str] = []
        due = start
        clock = time.perf_counter
        for t, turn in enumerate(conv.turns):
            if self._stop.is_set() or (deadline is not None and clock() >= deadline):
                self.turns_not_sent += len(conv.turns) - t
                return
            wait = due - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            rec = await self._turn(conv, t, answers, due, slot)
            if not rec.ok:
                self.turns_not_sent += len(conv.turns) - t - 1
                return
            if self.use_server_answers:
                answers.append(rec.generated_text or "")
            else:
                answers.append(turn.answer if turn.answer is not None else (rec.generated_text or ""))
            due = clock() + self.think_time_s

    async def _measured(self) -> RecordStore:
        plan = self.plan
        c = self.counters
        c.phase = "measuring"
        c.total = self.total_turns
        c.sent = c.finished = c.failed = c.output_tokens = 0
        deadline = self._origin + plan.duration_s if plan.duration_s else None
        if plan.mode is LoadMode.CONCURRENCY:
            queue = iter(self.conversations)

            async def worker() -> None:
                for conv in queue:
                    if self._stop.is_set() or (deadline is not None and time.perf_counter() >= deadline):
                        self.turns_not_sent += len(conv.turns)
                        continue
                    await self._session(conv, time.perf_counter(), None, deadline)

            tasks = [asyncio.ensure_future(worker()) for _ in range(min(plan.max_concurrency or 1, len(self.conversations)))]
        else:
            offsets = (arrival_offsets(plan, self.seed) if plan.mode is LoadMode.RATE
                       else [0.0] * len(self.conversations))
            slot = asyncio.Semaphore(plan.max_concurrency) if plan.max_concurrency else None
            tasks = [asyncio.ensure_future(self._session(conv, self._origin + float(off), slot, deadline))
                     for conv, off in zip(self.conversations, offsets)]
        if plan.duration_s:
            await self._wait_or_cut(tasks)
        else:
            await self._wait_or_stop(tasks)
        await self._drain()
        for rec in self._open.values():
            self._store.append(rec)
        self._open.clear()
        return self._store
