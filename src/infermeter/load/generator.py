"""The load generator: sends prompts on a plan and records what came back.

It knows nothing of the server beyond a transport (bytes over HTTP) and a
protocol (bodies out, records in), the same line MLPerf LoadGen draws
between the load generator and the system under test.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import time
from typing import Awaitable, Callable, Sequence

import numpy as np

from infermeter.core.exchange import ErrorClass, RawExchange
from infermeter.core.knobs import env_number
from infermeter.core.outcome import Counters, RunOutcome, StopPolicy
from infermeter.core.prompt import Prompt
from infermeter.core.protocol import Protocol, RequestOptions
from infermeter.core.records import RequestRecord
from infermeter.core.recordstore import RecordStore, run_duration
from infermeter.core.samplecolumn import SampleColumn
from infermeter.core.transport import Transport
from infermeter.load.feed import Feed, FeedError, ListFeed, item_of
from infermeter.load.monitor import GcPauses, LoopMonitor
from infermeter.load.pacing import ArrivalWaiter
from infermeter.load.schedule import LoadMode, LoadPlan, arrival_offsets, offered_rates
from infermeter.load.shard import sleep_until_epoch

STOP_CHECK_S = 0.25  # gaps longer than this wait on the stop event

RecordSink = Callable[[RequestRecord], None]
StartGate = Callable[[], Awaitable[float]]  # returns the wall-clock epoch to start at


class LoadRunner:
    def __init__(
        self,
        transport: Transport,
        protocol: Protocol,
        options: RequestOptions,
        plan: LoadPlan,
        prompts: Sequence[Prompt] | Feed,
        warmup_prompts: Sequence[Prompt] = (),
        *,
        seed: int = 0,
        sink: RecordSink | None = None,
        stop_policy: StopPolicy | None = None,
        counters: Counters | None = None,
        count_tokens: Callable[[str], int] | None = None,
        indices: Sequence[int] | None = None,
        offsets: Sequence[float] | None = None,
        start_at: float | StartGate | None = None,
        after_warmup: Callable[[], None] | None = None,
        rates: Sequence[float] | None = None,
    ) -> None:
        timed_loop = plan.mode is LoadMode.CONCURRENCY and bool(plan.duration_s)
        # The bodies in send order: a feed (built as the run goes: load/feed.py) or a list's.
        self.feed = prompts if isinstance(prompts, Feed) else ListFeed(prompts, protocol, options, cycle=timed_loop)
        if self.feed.count != plan.num_requests:
            raise ValueError("one prompt per planned request")
        # A shard runs a slice of a larger plan: ``indices`` are the global
        # request numbers of ``prompts`` and ``offsets`` their global send times.
        self._indices = (range(plan.num_requests) if indices is None
                         else indices if isinstance(indices, range) else list(indices))
        if len(self._indices) != plan.num_requests:
            raise ValueError("one global index per planned request")
        self._offsets = None if offsets is None else np.asarray(offsets, dtype=float)
        if self._offsets is not None and len(self._offsets) != plan.num_requests:
            raise ValueError("one send offset per planned request")
        self.start_at = start_at
        self.after_warmup = after_warmup  # called between the warm-up and the window (telemetry samples)
        # The rate offered at each request (a record field); a shard passes its slice.
        if rates is None and offsets is None:
            rates = offered_rates(plan)
        self._rates = None if rates is None else _compact_rates(rates)
        self._cutting = False  # a --duration run's grace is over: what is cancelled now is cut off
        self.transport = transport
        self.protocol = protocol
        self.options = options
        self.plan = plan
        self.warmup_prompts = list(warmup_prompts)
        self.seed = seed
        self.sink = sink
        self.stop_policy = stop_policy or StopPolicy()
        self.counters = counters or Counters()
        self.count_tokens = count_tokens  # used only when the server reports no usage
        self._warmup_bodies = [item_of(p, protocol, options)[0] for p in self.warmup_prompts]
        self._stop = asyncio.Event()
        self._stop_reason: str | None = None
        self.sink_error: Exception | None = None  # why the sink stopped taking records
        self._origin = 0.0
        self._backlog: collections.deque[tuple[RequestRecord, RawExchange]] = collections.deque()
        self._backlog_scheduled = False
        self._drained: asyncio.Future | None = None
        self.backlog_max = 0  # most completed responses waiting to be interpreted at once
        self._tag_requests = transport.request_id_header is not None
        # Measured records: created ones wait in _open (bounded by what is in
        # flight); finished ones go to the sink (the JSONL file) and are kept
        # only compactly, in _store, so memory stays flat over long runs.
        self._open: dict[int, RequestRecord] = {}
        self._store = RecordStore()

    # -- one request ---------------------------------------------------------
    async def _request(self, rec: RequestRecord, body: bytes, slot: asyncio.Semaphore | None) -> RequestRecord:
        raw = RawExchange()
        rec.queued = time.perf_counter()
        try:
            if slot is not None:
                async with slot:
                    if self._stop.is_set():
                        raise asyncio.CancelledError
                    self.counters.sent += 1
                    await self._post(body, raw, rec)
            else:
                self.counters.sent += 1
                await self._post(body, raw, rec)
        except asyncio.CancelledError:
            if self._cutting and raw.error in (None, ErrorClass.CANCELLED):
                raw.error = ErrorClass.CUT_OFF
                raw.error_detail = "in flight at the end of --duration and its grace"
            elif raw.error is None:
                raw.error = ErrorClass.CANCELLED
                raw.error_detail = self._stop_reason or "the run was stopped"
            if raw.end is None:
                raw.end = time.perf_counter()
        self._finish_later(rec, raw)
        if len(self._backlog) > self.BACKLOG_MAX:  # a closed loop must not outrun the interpreting
            await self._drain()  # of its answers (the backlog would grow with the request count)
        return rec

    def _post(self, body: bytes, raw: RawExchange, rec: RequestRecord):
        if self._tag_requests:
            return self.transport.post(self.protocol.stream_path, body, raw, request_id=rec.index)
        return self.transport.post(self.protocol.stream_path, body, raw)

    # -- completed responses, interpreted between reads ----------------------
    # Interpreting a response (SSE framing, one JSON decode per event) costs
    # far more than receiving it.  Done inline, every response that completes
    # in one loop iteration would be parsed back to back; with many streams
    # finishing together (a closed loop of equal lengths) that blocks the loop
    # for a long time, and every read arriving meanwhile is stamped late.  So
    # completed exchanges queue up, and the queue is worked in slices of
    # about ``FINISH_SLICE_S`` (at least one response), one slice per loop
    # iteration: between slices the loop polls the sockets and stamps reads.
    FINISH_SLICE_S = 0.0003
    BACKLOG_MAX = 1024  # completed answers waiting; past it a request's task waits for the backlog

    def _finish_later(self, rec: RequestRecord, raw: RawExchange) -> None:
        self._backlog.append((rec, raw))
        if len(self._backlog) > self.backlog_max:
            self.backlog_max = len(self._backlog)
        if not self._backlog_scheduled:
            self._backlog_scheduled = True
            asyncio.get_running_loop().call_soon(self._work_backlog)

    def _work_backlog(self) -> None:
        backlog = self._backlog
        clock = time.perf_counter
        deadline = clock() + self.FINISH_SLICE_S
        while backlog:
            rec, raw = backlog.popleft()
            self._finish(rec, raw)
            if clock() >= deadline:
                break
        if backlog:
            asyncio.get_running_loop().call_soon(self._work_backlog)
            return
        self._backlog_scheduled = False
        waiter = self._drained
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _drain(self) -> None:
        """Wait until every completed exchange has been interpreted."""
        while self._backlog or self._backlog_scheduled:
            if self._drained is None or self._drained.done():  # one future, awaited by every drainer
                self._drained = asyncio.get_running_loop().create_future()
            if not self._backlog_scheduled:
                self._backlog_scheduled = True
                asyncio.get_running_loop().call_soon(self._work_backlog)
            await asyncio.shield(self._drained)  # a cancelled drainer must not cancel the others

    def _finish(self, rec: RequestRecord, raw: RawExchange) -> None:
        # Off the byte path: the response is complete, parse it now.
        try:
            self.protocol.interpret(raw, rec, self.options)
        except Exception as exc:  # a parser bug must not lose the record
            rec.error = ErrorClass.CLIENT.value
            rec.error_detail = f"{type(exc).__name__}: {exc}"
            rec.ok = False
        if self._cutting and rec.error == ErrorClass.CUT_OFF.value:
            rec.end = None  # it never ended: the run's window closes at the last real end
        if rec.ok and rec.output_tokens_server is None and self.count_tokens and rec.generated_text:
            rec.output_tokens_client = self.count_tokens(rec.generated_text)
        c = self.counters
        c.finished += 1
        if rec.ok:
            c.output_tokens += rec.output_tokens
        else:
            c.failed += 1
        if rec.warmup:  # its times go on the measured window's origin once that is known (run)
            return
        rec.shift(self._origin)
        c.observe(rec)  # live TTFT/ITL/E2EL histograms (successful requests only)
        try:
            if self.sink is not None:
                self.sink(rec)
        except Exception as exc:  # the records file cannot be written (disk full): stop, never hang
            self.sink = None
            self.sink_error = exc
            self.request_stop(f"records could not be written ({exc.strerror or exc})"
                              if isinstance(exc, OSError) else f"records could not be written ({exc})")
        finally:  # kept even if the sink fails, as the full list kept it before
            if not rec.warmup and self._open.pop(id(rec), None) is not None:
                self._store.append(rec)
        if (not rec.warmup and not self._stop.is_set() and rec.error != ErrorClass.CANCELLED.value
                and rec.error != ErrorClass.CUT_OFF.value):
            reason = self.stop_policy.should_stop(c.finished, c.failed)
            if reason:
                self._stop_reason = reason
                self._stop.set()

    # -- phases --------------------------------------------------------------
    async def _warmup(self) -> list[RequestRecord]:
        if not self._warmup_bodies:
            return []
        self.counters.phase = "warm-up"
        width = min(len(self._warmup_bodies), self.plan.max_concurrency or len(self._warmup_bodies))
        slot = asyncio.Semaphore(width)
        start = time.perf_counter()  # every warm-up is due at once; times stay on the clock until run() shifts them
        recs = [
            RequestRecord(index=-1 - i, warmup=True, scheduled=start, input_len=p.input_len,
                          requested_output_len=p.output_len)
            for i, p in enumerate(self.warmup_prompts)
        ]
        await asyncio.gather(*(self._request(r, b, slot) for r, b in zip(recs, self._warmup_bodies)))
        await self._drain()
        return recs

    def _place_warmups(self, warm: list[RequestRecord]) -> None:
        """Put the warm-up records on the measured window's origin (they ran before it: negative
        times) and hand them to the sink; the one origin of every record is documented."""
        for rec in warm:
            rec.shift(self._origin)
            if self.sink is not None:
                self.sink(rec)

    async def _waited(self) -> tuple | None:
        """The next prompt when it was not built yet (None: the builder failed, and the run stops)."""
        try:
            return await self.feed.wait()
        except FeedError as exc:
            self.request_stop(str(exc))
            return None

    def _new_record(self, i: int, scheduled: float, item: tuple) -> RequestRecord:
        rec = RequestRecord(index=self._indices[i], warmup=False, scheduled=scheduled, input_len=item[1],
                            requested_output_len=item[2])
        if self._rates is not None:
            rec.offered_rate = self._rates if type(self._rates) is float else float(self._rates[i])
        self._open[id(rec)] = rec
        return rec

    async def _measured(self) -> RecordStore:
        plan = self.plan
        n = plan.num_requests
        self.counters.phase = "measuring"
        self.counters.total = n
        self.counters.sent = self.counters.finished = self.counters.failed = self.counters.output_tokens = 0
        if plan.mode is LoadMode.CONCURRENCY and plan.duration_s:
            await self._closed_loop_timed()
        elif plan.mode is LoadMode.CONCURRENCY:
            await self._closed_loop()
        else:
            await self._open_loop()
        await self._drain()
        # A task cancelled before it ever ran never reached _finish: its record
        # is reported as it stands (unsent), as before.
        for rec in self._open.values():
            self._store.append(rec)
        self._open.clear()
        return self._store

    async def _closed_loop(self) -> None:
        assert self.plan.max_concurrency
        n = self.plan.num_requests
        next_index = 0
        take = self.feed.take

        async def worker() -> None:
            nonlocal next_index
            while not self._stop.is_set():
                i = next_index
                if i >= n:
                    return
                next_index += 1
                item = take() or await self._waited()
                if item is None:
                    return
                # Closed loop: a request is due the moment a slot frees.
                rec = self._new_record(i, time.perf_counter(), item)
                await self._request(rec, item[0], None)

        workers = [asyncio.ensure_future(worker()) for _ in range(min(self.plan.max_concurrency, n))]
        await self._wait_or_stop(workers)

    async def _closed_loop_timed(self) -> None:
        """A closed loop for ``duration_s``: the prompts are a pool, cycled; request i is the
        i-th sent.  Nothing is sent after the duration (see ``_wait_or_cut``)."""
        assert self.plan.max_concurrency and self.plan.duration_s
        take = self.feed.take
        deadline = self._origin + self.plan.duration_s
        clock = time.perf_counter
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while not self._stop.is_set() and clock() < deadline:
                i = next_index
                next_index += 1
                item = take() or await self._waited()  # the pool of prompts, cycled
                if item is None:
                    return
                rec = RequestRecord(index=i, warmup=False, scheduled=clock(), input_len=item[1],
                                    requested_output_len=item[2])
                self._open[id(rec)] = rec
                self.counters.total = next_index
                await self._request(rec, item[0], None)

        workers = [asyncio.ensure_future(worker()) for _ in range(self.plan.max_concurrency)]
        await self._wait_or_cut(workers)

    async def _wait_or_cut(self, tasks: list) -> None:
        """A time-bounded run's end: what is in flight at the duration gets ``duration_grace_s``
        more, then is cancelled and recorded as cut off (not a failure)."""
        plan = self.plan
        assert plan.duration_s is not None
        end = self._origin + plan.duration_s + plan.duration_grace_s
        pending = {t for t in tasks if not t.done()}
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            while pending and not self._stop.is_set():
                left = end - time.perf_counter()
                if left <= 0:
                    break
                _, pending = await asyncio.wait(pending | {stopper}, timeout=left,
                                                return_when=asyncio.FIRST_COMPLETED)
                pending.discard(stopper)
        finally:
            stopper.cancel()
        if pending:
            self._cutting = not self._stop.is_set()
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _open_loop(self) -> None:
        plan = self.plan
        offsets = self._offsets if self._offsets is not None else arrival_offsets(plan, self.seed)
        slot = asyncio.Semaphore(plan.max_concurrency) if plan.max_concurrency else None
        clock = time.perf_counter
        origin = self._origin
        loop = asyncio.get_running_loop()
        # Tasks in flight only: a finished one is dropped at once, so the
        # garbage collector never walks thousands of finished requests (each
        # young-generation pass did, for tens of milliseconds).
        tasks: set[asyncio.Task] = set()
        waiter = ArrivalWaiter(loop)
        i = 0
        n = plan.num_requests
        take = self.feed.take
        try:
            while i < n and not self._stop.is_set():
                now = clock() - origin
                # Send everything that is due: one wake-up may cover several arrivals.
                while i < n and offsets[i] <= now:
                    item = take() or await self._waited()
                    if item is None:
                        break
                    rec = self._new_record(i, origin + float(offsets[i]), item)
                    task = loop.create_task(self._request(rec, item[0], slot))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    i += 1
                if i < n:
                    due = origin + float(offsets[i])
                    if due - clock() > STOP_CHECK_S:  # a long gap: wake early if the run is stopped
                        try:
                            await asyncio.wait_for(self._stop.wait(), timeout=due - clock() - STOP_CHECK_S / 2)
                        except asyncio.TimeoutError:
                            pass
                    else:
                        await waiter.until(due)
        finally:
            waiter.close()
        if plan.duration_s:
            await self._wait_or_cut(list(tasks))
        else:
            await self._wait_or_stop(list(tasks))

    async def _wait_or_stop(self, tasks: list) -> None:
        if not tasks:
            return
        stopper = asyncio.ensure_future(self._stop.wait())
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                pending.discard(stopper)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                return
            pending.discard(stopper)
        stopper.cancel()

    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop.set()

    async def run(self) -> RunOutcome:
        try:
            await self.feed.start()  # a feed built as the run goes reads its builder from now on
            return await self._run()
        finally:
            self.feed.close()

    async def _run(self) -> RunOutcome:
        warm = await self._warmup()
        if warm and self.after_warmup is not None:
            self.after_warmup()  # before the window's origin: it may block the loop for a scrape
        start_at = self.start_at
        if start_at is not None and not isinstance(start_at, (int, float)):
            start_at = await start_at()  # e.g. a worker waiting for its siblings
        monitor = LoopMonitor()
        gc.collect()
        gc.freeze()  # objects made so far are never scanned again during the window
        if start_at is not None:
            self.counters.phase = "waiting"
            self._origin = await sleep_until_epoch(float(start_at))
            start_epoch = float(start_at)
        else:
            self._origin = time.perf_counter()
            start_epoch = time.time()
        self._place_warmups(warm)
        # Fewer, later collections in the window: the hot path allocates
        # containers (events, records) at a high rate, and each young-generation
        # collection is a pause every read waiting meanwhile is stamped after.
        thresholds = gc.get_threshold()
        gc.set_threshold(max(thresholds[0], GC_YOUNG_THRESHOLD), *thresholds[1:])
        gc_pauses = GcPauses()
        gc.callbacks.append(gc_pauses)
        monitor.start()
        try:
            records = await self._measured()
        finally:
            client = await monitor.stop()
            gc.callbacks.remove(gc_pauses)
            gc.set_threshold(*thresholds)
            gc.unfreeze()
        client.gc_pause_total_ms = gc_pauses.total * 1e3
        client.gc_pause_max_ms = gc_pauses.longest * 1e3
        client.gc_collections = gc_pauses.count
        client.finish_backlog_max = self.backlog_max
        feed = self.feed
        if feed.lazy:
            client.prompts_built_ahead = getattr(feed, "head", None)
        client.prompt_waits, client.prompt_wait_s = feed.waits, feed.wait_s
        records.sort_by_index()
        duration = run_duration(records)
        if self.plan.mode is LoadMode.RATE:  # dispatch lag from the columns, a block at a time
            with SampleColumn() as lags:
                for queued, scheduled in zip(records.column_chunks("queued"), records.column_chunks("scheduled")):
                    lag = queued - scheduled
                    lags.extend(np.maximum(lag[~np.isnan(lag)], 0.0))
                if len(lags):
                    client.dispatch_lag_p99_ms = lags.percentile([99])[0] * 1e3
                    client.dispatch_lag_max_ms = lags.max() * 1e3
        return RunOutcome(records=records, warmup_records=warm, start_epoch=start_epoch,
                          duration=duration, client=client, stopped_early=self._stop_reason)


GC_YOUNG_THRESHOLD = env_number("INFERMETER_GC_THRESHOLD", 50000, int)


def _compact_rates(rates: Sequence[float]) -> float | np.ndarray:
    """Each request's offered rate: one float when they are all the same (a plain rate run: no
    array of millions of equal floats), else a float array."""
    arr = np.asarray(rates, dtype=float)
    return float(arr[0]) if arr.size and (arr == arr[0]).all() else arr


