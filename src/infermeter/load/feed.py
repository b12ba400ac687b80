"""The measured requests' bodies, in send order, made shortly before they are sent.

A run of N requests does not build N prompts before its first send.  The
feed hands the load generator one item per request, ``(body, input_len,
output_len)``, in the order the generator sends them:

* :class:`ListFeed` holds the bodies of a list of prompts: the warm-up, a run
  whose prompts take under ``HEAD_S`` to build (most runs: nothing changes for
  them), and the workloads read whole from files (their list already exists).
* :func:`open_feed` builds prompts in this process for up to ``HEAD_S``
  seconds, in chunks that grow from ``CHUNK_MIN``; if that was not all of them,
  a forked child process (niced, so the client and the server win the CPU when
  they want it) builds the rest, chunk by chunk, and streams them through a
  pipe.  The parent reads the pipe in its event loop and keeps at most
  ``AHEAD_MAX`` items ahead of the sends (the pipe and the child's one chunk
  in progress hold a little more), so memory does not grow with the request
  count and the first request goes out after ``HEAD_S`` or less.

The prompts are the same ones :func:`~infermeter.workloads.make_prompts` would
build for the same seed (each is drawn from its own stream: see
``workloads/__init__.py``).  A send that finds its prompt not yet built waits
for it; the waits are counted (``waits``, ``wait_s``) and the result says so.
A prompt the child finds longer than the server's context stops the run with
that message, as the same prompt would have before the run.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import os
import signal
import struct
import time
import traceback
from typing import Any, Callable, Sequence

from infermeter.core.prompt import Prompt
from infermeter.core.protocol import Protocol, RequestOptions
from infermeter.errors import UserError

# Building in-process before the first send.  Infinite by default: every prompt is built before the
# start, as before, until the forked builder is proven inside full runs (INFERMETER_FEED_HEAD_S=0.3
# turns it on; in a full run it has been seen to stall, which STALL_S turns into a stopped run).
HEAD_S = float(os.environ.get("INFERMETER_FEED_HEAD_S", "inf"))
STALL_S = 30.0  # a builder that sends nothing this long while a send waits has failed
CHUNK_MIN, CHUNK_MAX = 16, 1024  # prompts per chunk; a chunk aims at CHUNK_S of building
CHUNK_S = 0.05
AHEAD_MAX = 8192  # items read ahead of the sends (reading pauses beyond, resumes at half)
CHILD_NICE = int(os.environ.get("INFERMETER_FEED_NICE", "10"))
PIPE_BYTES = 1 << 20

_ITEM = struct.Struct("<iiI")  # input_len (-1: an error message follows), output_len (-1: none), body length

Item = tuple[bytes, int, "int | None"]
ContextCheck = Callable[[Sequence[Prompt]], None]


class FeedError(Exception):
    """The feed cannot give the next prompt (the builder failed or stopped): the run stops with it."""


class Feed:
    """Items ``(body, input_len, output_len)`` in send order; ``count`` per pass."""

    count: int
    lazy = False

    def __init__(self) -> None:
        self.waits = 0  # sends that found their prompt not yet built
        self.wait_s = 0.0  # seconds they waited in all

    def take(self) -> Item | None:
        raise NotImplementedError

    async def wait(self) -> Item:
        raise NotImplementedError

    async def start(self) -> None:
        """Attach to the running event loop (before the first take)."""

    def close(self) -> None:
        """Stop building and free what is left."""

    def describe(self) -> dict[str, Any]:
        return {"lazy": self.lazy, "waits": self.waits, "wait_s": round(self.wait_s, 6)}


class ListFeed(Feed):
    """The bodies of a list of prompts; ``cycle``: after the last, the first again (a timed closed loop)."""

    def __init__(self, prompts: Sequence[Prompt], protocol: Protocol, options: RequestOptions, *,
                 cycle: bool = False) -> None:
        super().__init__()
        self._items: list[Item | None] = [item_of(p, protocol, options) for p in prompts]
        self.count = len(self._items)
        self.cycle = cycle
        self._k = 0

    @classmethod
    def of_items(cls, items: list[Item], *, cycle: bool = False) -> "ListFeed":
        feed = cls.__new__(cls)
        Feed.__init__(feed)
        feed._items, feed.count, feed.cycle, feed._k = list(items), len(items), cycle, 0
        return feed

    def take(self) -> Item | None:
        k = self._k
        if k >= self.count:
            if not self.cycle or not self.count:
                return None
            k %= self.count
        self._k += 1
        item = self._items[k]
        if not self.cycle:
            self._items[k] = None  # sent: its body is not needed again
        return item

    async def wait(self) -> Item:
        raise FeedError(f"all {self.count} prompts were sent")


class ChildFeed(Feed):
    """Items built in this process first (``head``), then streamed from a forked builder."""

    lazy = True

    def __init__(self, head: list[Item], count: int, fd: int, pid: int) -> None:
        super().__init__()
        self.count = count
        self._items: collections.deque[Item] = collections.deque(head)
        self.head = len(head)
        self._fd: int | None = fd
        self._pid: int | None = pid
        self._buf = bytearray()
        self._transport: asyncio.ReadTransport | None = None
        self._paused = False
        self._eof = False
        self._error: str | None = None
        self._waiter: asyncio.Future | None = None
        self.received = 0  # items read from the child

    async def start(self) -> None:
        if self._fd is None or self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(self._fd, "rb", buffering=0)
        self._fd = None
        self._transport, _ = await loop.connect_read_pipe(lambda: _Reader(self), pipe)

    # -- the event loop's side -------------------------------------------
    def take(self) -> Item | None:
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if self._paused and len(items) <= AHEAD_MAX // 2:
            self._paused = False
            if self._transport is not None:
                self._transport.resume_reading()
        return item

    async def wait(self) -> Item:
        t0 = time.perf_counter()
        self.waits += 1
        try:
            while not self._items:
                if self._error is not None:
                    raise FeedError(self._error)
                if self._eof or self._transport is None:
                    raise FeedError(f"the prompt builder stopped after {self.head + self.received} of "
                                    f"{self.count} prompts")
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await asyncio.wait_for(self._waiter, STALL_S)
                except asyncio.TimeoutError:
                    raise FeedError(f"the prompt builder sent nothing for {STALL_S:g} s after "
                                    f"{self.head + self.received} of {self.count} prompts") from None
        finally:
            self.wait_s += time.perf_counter() - t0
        item = self.take()
        assert item is not None
        return item

    def _received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        items, size, pos, n = self._items, _ITEM.size, 0, len(buf)
        while n - pos >= size:
            in_len, out_len, length = _ITEM.unpack_from(buf, pos)
            end = pos + size + length
            if end > n:
                break
            body = bytes(buf[pos + size:end])
            pos = end
            if in_len < 0:
                self._error = body.decode("utf-8", "replace")
                break
            items.append((body, in_len, None if out_len < 0 else out_len))
            self.received += 1
        del buf[:pos]
        if len(items) >= AHEAD_MAX and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def _ended(self) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def close(self) -> None:
        if self._transport is not None:
            try:
                self._transport.close()
            except RuntimeError:  # its event loop is closed already: close the pipe itself
                pipe = self._transport.get_extra_info("pipe")
                if pipe is not None:
                    pipe.close()
            self._transport = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._pid is not None:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(self._pid, 0)
            except ChildProcessError:
                pass
            self._pid = None
        self._items.clear()

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["built_before_start"] = self.head
        return out


class _Reader(asyncio.Protocol):
    def __init__(self, feed: ChildFeed) -> None:
        self.feed = feed

    def data_received(self, data: bytes) -> None:
        self.feed._received(data)

    def eof_received(self) -> bool:
        self.feed._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.feed._ended()


def item_of(p: Prompt, protocol: Protocol, options: RequestOptions) -> Item:
    return _compact(protocol.build_body(p, options)), p.input_len, p.output_len


def _compact(body: bytes) -> bytes:
    # An exact-size copy: orjson's result keeps its working buffer (measured ~3.7 KB per 200-byte
    # body, 366 MB per 100k requests).
    return bytes(bytearray(body)) if type(body) is bytes else body


def open_feed(builder: Any, order: Sequence[int], protocol: Protocol, options: RequestOptions, *,
              check: ContextCheck | None = None, cycle: bool = False, head_s: float | None = None) -> Feed:
    """A feed of ``builder``'s prompts at request numbers ``order`` (cycled when ``cycle``).

    Builds in this process for up to ``head_s`` (``HEAD_S``) seconds; what is left is built by a
    forked child.  ``check(prompts)`` raises for prompts the server cannot take (its context).
    """
    head_s = HEAD_S if head_s is None else head_s
    n = len(order)
    items: list[Item] = []
    pos, chunk = 0, CHUNK_MIN
    t0 = time.perf_counter()
    while pos < n:
        stop = min(n, pos + chunk)
        t = time.perf_counter()
        prompts = builder.at([order[k] for k in range(pos, stop)])
        if check is not None:
            check(prompts)
        items.extend(item_of(p, protocol, options) for p in prompts)
        pos = stop
        chunk = _next_chunk(chunk, time.perf_counter() - t)
        if time.perf_counter() - t0 >= head_s:
            break
    if pos >= n or not getattr(builder, "lazy", False):
        while pos < n:  # a list workload: its prompts exist already
            stop = min(n, pos + CHUNK_MAX)
            prompts = builder.at([order[k] for k in range(pos, stop)])
            if check is not None:
                check(prompts)
            items.extend(item_of(p, protocol, options) for p in prompts)
            pos = stop
        return ListFeed.of_items(items, cycle=cycle)
    fd, pid = _fork_builder(builder, order, pos, chunk, protocol, options, check, cycle)
    return ChildFeed(items, n, fd, pid)


def _next_chunk(chunk: int, took: float) -> int:
    if took < CHUNK_S / 2:
        return min(CHUNK_MAX, chunk * 2)
    if took > CHUNK_S * 2:
        return max(CHUNK_MIN, chunk // 2)
    return chunk


def _fork_builder(builder: Any, order: Sequence[int], pos: int, chunk: int, protocol: Protocol,
                  options: RequestOptions, check: ContextCheck | None, cycle: bool) -> tuple[int, int]:
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, 1031, PIPE_BYTES)  # F_SETPIPE_SZ: more built ahead before the loop reads
    except OSError:
        pass
    # The tokenizers library warns in a forked child after it has used threads unless this is set.
    had = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = had or "false"
    try:
        pid = os.fork()
    finally:
        if had is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
    if pid == 0:  # the child: build, write, exit (never return into the caller)
        code = 0
        try:
            os.close(r)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if CHILD_NICE:
                os.nice(CHILD_NICE)
            _build_into(w, builder, order, pos, chunk, protocol, options, check, cycle)
        except BrokenPipeError:
            pass  # the parent is done with us
        except BaseException as exc:  # noqa: BLE001 - told to the parent, which stops the run
            code = 1
            if isinstance(exc, UserError):
                msg = str(exc)
            else:
                msg = f"the prompt builder failed: {traceback.format_exception_only(exc)[-1].strip()}"
            try:
                data = msg.encode()
                _write_all(w, _ITEM.pack(-1, -1, len(data)) + data)
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(w)
    return r, pid


def _build_into(w: int, builder: Any, order: Sequence[int], pos: int, chunk: int, protocol: Protocol,
                options: RequestOptions, check: ContextCheck | None, cycle: bool) -> None:
    n = len(order)
    pack = _ITEM.pack
    while cycle or pos < n:
        stop = pos + chunk if cycle else min(n, pos + chunk)
        t = time.perf_counter()
        prompts = builder.at([order[k % n] for k in range(pos, stop)])
        if check is not None:
            check(prompts)
        out = bytearray()
        for p in prompts:
            body = protocol.build_body(p, options)
            out += pack(p.input_len, -1 if p.output_len is None else p.output_len, len(body))
            out += body
        chunk = _next_chunk(chunk, time.perf_counter() - t)
        pos = stop
        _write_all(w, out)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
