"""The measured requests' bodies, in send order, made shortly before they are sent.

A run of N requests does not build N prompts before its first send.  The
feed hands the load generator one item per request, ``(body, input_len,
output_len)``, in the order the generator sends them:

* :class:`ListFeed` holds the bodies of a list of prompts: the warm-up, a run
  whose prompts take under ``HEAD_S`` to build (most runs: nothing changes for
  them), and the workloads read whole from files (their list already exists).
* :func:`open_feed` builds prompts in this process for ``HEAD_S`` seconds, in
  chunks that grow from ``CHUNK_MIN``.  If that will not be all of them, it
  starts a builder process (``load/feed_child.py``: a fresh, niced
  interpreter, so the client and the server win the CPU when they want it),
  keeps building here until that process is ready, and then leaves the rest to
  it: it builds chunk by chunk and streams them through a pipe.  The event loop
  reads the pipe and keeps at most ``AHEAD_MAX`` items ahead of the sends (the
  pipe and the chunk in progress hold a little more), so memory does not grow
  with the request count and the first request goes out after ``HEAD_S`` (or
  the builder's start-up, if longer).

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
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Sequence

from infermeter.core.knobs import env_number
from infermeter.core.prompt import Prompt
from infermeter.core.protocol import Protocol, RequestOptions

# Building in this process before the first send (INFERMETER_FEED_HEAD_S=inf: every prompt, up front).
HEAD_S = env_number("INFERMETER_FEED_HEAD_S", 0.3)
STALL_S = 30.0  # a builder that sends nothing this long while a send waits has failed
CHUNK_MIN, CHUNK_MAX = 16, 1024  # prompts per chunk; a chunk aims at CHUNK_S of building
CHUNK_S = 0.05
AHEAD_MAX = 8192  # items read ahead of the sends (reading pauses beyond, resumes at half)
CHILD_NICE = env_number("INFERMETER_FEED_NICE", 10, int)
PIPE_BYTES = 1 << 20

# The stream's frames: input_len (-1: an error message follows, -2: ready), output_len (-1: none), body length.
_ITEM = struct.Struct("<iiI")
_READY = -2
_START = struct.Struct("<qq")  # the parent's go: first position, first chunk size
F_SETPIPE_SZ = 1031
# Building in this process while the builder process starts: at most this long past HEAD_S.
READY_MAX_S = env_number("INFERMETER_FEED_READY_MAX_S", 2.0)
READY_COVER_S = 3.0  # ... unless the prompts built already last this long at the run's rate

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
    """Items built in this process first (``head``), then streamed from a builder process."""

    lazy = True

    def __init__(self, head: list[Item], count: int, fd: int, proc: subprocess.Popen) -> None:
        super().__init__()
        self.count = count
        self._items: collections.deque[Item] = collections.deque(head)
        self.head = len(head)
        self._fd: int | None = fd
        self._proc: subprocess.Popen | None = proc
        self._buf = bytearray()
        self._transport: asyncio.ReadTransport | None = None
        self._paused = False
        self._eof = False
        self._error: str | None = None
        self._waiters: list[asyncio.Future] = []  # sends waiting for a prompt (a closed loop has several)
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
                    raise FeedError(f"the prompt builder stopped after {self._built()}")
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    await asyncio.wait_for(waiter, STALL_S)
                except asyncio.TimeoutError:
                    raise FeedError(f"the prompt builder sent nothing for {STALL_S:g} s after "
                                    f"{self._built()}") from None
        finally:
            self.wait_s += time.perf_counter() - t0
        item = self.take()
        assert item is not None
        return item

    def _built(self) -> str:
        built = self.head + self.received
        return f"{built} prompts" if built > self.count else f"{built} of {self.count} prompts"  # (a cycled pool)

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
            if in_len == _READY:
                continue
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
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
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
        if self._proc is not None:
            _end(self._proc)
            self._proc = None
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
              check: ContextCheck | None = None, cycle: bool = False, head_s: float | None = None,
              rate: float | None = None) -> Feed:
    """A feed of ``builder``'s prompts at request numbers ``order`` (cycled when ``cycle``).

    Builds in this process for ``head_s`` (``HEAD_S``) seconds, and on until the builder
    process started meanwhile is ready (at most ``READY_MAX_S`` more) unless the prompts built
    already last ``READY_COVER_S`` at ``rate`` (requests/s; None: as fast as they can go);
    that process builds the rest.
    ``check(prompts)`` raises for prompts the server cannot take (its context); it, the builder,
    the protocol and the options are pickled to the builder process.
    """
    head_s = HEAD_S if head_s is None else head_s
    n = len(order)
    items: list[Item] = []
    pos, chunk = 0, CHUNK_MIN
    child: BuilderProcess | None = None
    lazy = bool(getattr(builder, "lazy", False))
    t0 = time.perf_counter()
    try:
        while pos < n:
            stop = min(n, pos + chunk)
            t = time.perf_counter()
            prompts = builder.at([order[k] for k in range(pos, stop)])
            if check is not None:
                check(prompts)
            items.extend(item_of(p, protocol, options) for p in prompts)
            took = time.perf_counter() - t
            pos, chunk = stop, _next_chunk(chunk, took)
            spent = time.perf_counter() - t0
            if not lazy or pos >= n:
                continue
            if child is None and spent / pos * n > head_s:  # more than the head: start the builder now
                child = BuilderProcess.start(builder, order, protocol, options, check, cycle)
                if child is None:  # it cannot be sent to another process: build it all here
                    lazy = False
                    continue
            if child is not None and spent >= head_s and (
                    child.ready() or spent >= head_s + READY_MAX_S or (rate and pos / rate >= READY_COVER_S)):
                break
        if pos >= n:
            if child is not None:
                child.close()
            return ListFeed.of_items(items, cycle=cycle)
        assert child is not None
        fd, proc = child.go(pos, chunk)
        feed = ChildFeed(items, n, fd, proc)
        feed._error = child.error
        return feed
    except BaseException:
        if child is not None:
            child.close()
        raise


def _next_chunk(chunk: int, took: float) -> int:
    if took < CHUNK_S / 2:
        return min(CHUNK_MAX, chunk * 2)
    if took > CHUNK_S * 2:
        return max(CHUNK_MIN, chunk // 2)
    return chunk


class BuilderProcess:
    """A fresh Python process (``python -m infermeter.load.feed_child``) that builds prompts.

    A fresh interpreter, not a fork: a fork copies the locks of the parent's threads (the
    tokenizer's thread pool among them) in whatever state they are, and a forked child that used
    the tokenizer after its pool had run in the parent blocked for good.  The builder is pickled
    to it (a writer thread feeds the pipe, so the parent builds its head meanwhile); it says when
    it is ready, then builds from the position it is given.
    """

    def __init__(self, proc: subprocess.Popen, writer: threading.Thread) -> None:
        self.proc = proc
        self.writer = writer
        self._ready = False
        self.error: str | None = None  # what it said instead of being ready

    @classmethod
    def start(cls, builder: Any, order: Sequence[int], protocol: Protocol, options: RequestOptions,
              check: ContextCheck | None, cycle: bool) -> "BuilderProcess | None":
        try:
            payload = pickle.dumps({"builder": builder, "order": order, "protocol": protocol, "options": options,
                                    "check": check, "cycle": cycle, "nice": CHILD_NICE},
                                   protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - any object that cannot travel (pickle raises many kinds)
            return None  # a builder that cannot be sent (a remote-code tokenizer, say): built here
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false")  # one core, niced: the client and server first
        proc = subprocess.Popen([sys.executable, "-m", "infermeter.load.feed_child"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env, bufsize=0, close_fds=True)
        try:
            fcntl.fcntl(proc.stdout.fileno(), F_SETPIPE_SZ, PIPE_BYTES)  # more built ahead of the reads
        except OSError:
            pass
        head = pickle.dumps(list(sys.path))

        def send() -> None:
            try:
                _write_all(proc.stdin.fileno(), head + payload)
            except (ValueError, OSError):
                pass  # it died (its error comes through its stdout) or was closed

        writer = threading.Thread(target=send, name="infermeter-feed-send", daemon=True)
        writer.start()
        return cls(proc, writer)

    def ready(self) -> bool:
        """Whether the process has loaded the builder, or failed to (non-blocking until it speaks)."""
        if self._ready:
            return True
        fd = self.proc.stdout.fileno()
        if not select.select([fd], [], [], 0)[0]:
            return False
        header = _read_exact(fd, _ITEM.size)
        self._ready = True
        if len(header) < _ITEM.size:
            self.error = "the prompt builder process ended before it was ready"
        else:
            code, _, length = _ITEM.unpack(header)
            if code != _READY:  # an error frame: its message follows at once
                self.error = _read_exact(fd, length).decode("utf-8", "replace")
        return True

    def go(self, pos: int, chunk: int) -> tuple[int, subprocess.Popen]:
        """Start building at ``pos``; returns (the read end of its stream, the process)."""
        self.writer.join()
        try:
            _write_all(self.proc.stdin.fileno(), _START.pack(pos, chunk))
            self.proc.stdin.close()
        except (ValueError, OSError):
            pass
        fd = os.dup(self.proc.stdout.fileno())
        self.proc.stdout.close()
        return fd, self.proc

    def close(self) -> None:
        _end(self.proc)


def _read_exact(fd: int, size: int) -> bytes:
    out = b""
    while len(out) < size:
        data = os.read(fd, size - len(out))
        if not data:
            break
        out += data
    return out


def _end(proc: subprocess.Popen) -> None:
    """Kill and reap a builder process (it holds nothing worth a graceful stop)."""
    for f in (proc.stdin, proc.stdout):
        try:
            if f is not None:
                f.close()
        except OSError:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
