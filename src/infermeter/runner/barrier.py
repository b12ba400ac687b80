"""The start barrier and the collection channel that client nodes share with their master.

One load run by several client processes (``--workers N`` on one host) or
machines (a multi-node dstack task, see docs/scale-out.md) meets at one
master over TCP.  The protocol is JSON lines, one connection per node, held
for the node's whole life:

1. node -> master ``{"op": "ready", "rank": r, "nodes": n, "host": ...}`` once
   the node has prepared everything (prompts, connections, warm-up);
2. once every rank is ready (or the ready deadline passes: the absent ranks
   are *late*), the master measures each node's clock offset, NTP style:
   ``ping``/``pong`` round trips, ``SAMPLES`` of them; the sample with the
   shortest round trip is kept (its offset is off by at most half of it);
3. the master picks one start instant ``margin`` ahead on its own clock and
   sends every node ``{"op": "start", "start_at": ...}`` in the node's *own*
   clock (master instant + the node's offset), with the offset and the round
   trip, which the node records in its result's provenance;
4. after the run the node streams its files on the same connection:
   ``{"op": "result", "files": [{"name", "size"}, ...]}`` then the bytes, and
   the master answers ``{"op": "ack"}``; a node whose run failed sends
   ``{"op": "failed", ...}`` instead (a bad setting as its field path, template
   and values, so the master's user sees it named as they named it).

A node whose connection ends before its result arrives (killed, crashed,
network lost) is *missing*: the master names it and the merge marks its
share missing (runner/collect.py), never dropping it silently.  A node that
fails *before* the start (bad arguments fail the same everywhere) ends the
whole barrier with its error.

The master side runs an asyncio server in a thread of its own
(``Rendezvous``); the node side is a plain blocking socket (``NodeLink``),
so it outlives the event loop of the run it gates.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import orjson

from infermeter.errors import FieldError, UserError

DEFAULT_PORT = 29517  # INFERMETER_BARRIER_PORT overrides it on a cluster
SAMPLES = 8  # ping/pong round trips per node; the shortest is kept
MIN_MARGIN_S = 0.25  # between the last offset measured and the common start
READY_TIMEOUT_S = 600.0  # a node slower than this to prepare (or to be provisioned) is late
CONNECT_TIMEOUT_S = 600.0  # how long a node keeps trying to reach its master
CHUNK = 1 << 20


@dataclass
class NodeState:
    """What the master knows of one node; ``status`` ends as ``done``, ``missing`` or ``failed``."""

    rank: int
    status: str = "waiting"  # waiting, ready, started, done, missing, failed, late
    host: str | None = None
    reason: str | None = None
    offset_s: float | None = None  # node clock minus master clock
    rtt_s: float | None = None  # the round trip of the kept sample
    start_at: float | None = None  # in the node's clock
    files: list[Path] = field(default_factory=list)
    error: UserError | None = None  # what a node that failed before the start said

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "host": self.host, "status": self.status, "reason": self.reason,
                "clock_offset_s": self.offset_s, "offset_rtt_s": self.rtt_s, "start_at_node_clock": self.start_at,
                "files": [p.name for p in self.files]}


class Rendezvous:
    """The master side: waits for ``nodes`` ranks, starts them together, collects their files into ``dest``."""

    def __init__(self, nodes: int, dest: str | Path, *, host: str = "127.0.0.1", port: int = 0,
                 ready_timeout: float = READY_TIMEOUT_S, margin: float = MIN_MARGIN_S, samples: int = SAMPLES,
                 fixed_start: float | None = None, what: str = "node") -> None:
        if nodes < 1:
            raise UserError(f"{nodes} nodes: a barrier needs at least one", "give --nodes N with N >= 1")
        self.nodes, self.dest, self.host, self.port = nodes, Path(dest), host, port
        self.ready_timeout, self.margin, self.samples, self.fixed_start = ready_timeout, margin, samples, fixed_start
        self.what = what  # how errors name a rank: "node" (a machine) or "worker" (a local process)
        self.states = [NodeState(r) for r in range(nodes)]
        self.start_epoch: float | None = None  # the common start, master clock
        self.started = threading.Event()
        self.finished = threading.Event()
        self.error: UserError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._up = threading.Event()
        self._bind_error: OSError | None = None

    # ---- control, from the owning thread -------------------------------------------------------
    def start(self) -> int:
        """Listen (in a thread); returns the port."""
        self.dest.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._serve, name="infermeter-rendezvous", daemon=True)
        self._thread.start()
        self._up.wait()
        if self._bind_error is not None:
            raise UserError(f"cannot listen on {self.host}:{self.port}: {self._bind_error.strerror or self._bind_error}",
                            "free the port or set INFERMETER_BARRIER_PORT to another one")
        return self.port

    def give_up(self, rank: int, reason: str) -> None:
        """Mark ``rank`` gone (e.g. its process died before it connected)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._gone, rank, reason)

    def wait(self, timeout: float | None = None) -> bool:
        """True once every node is done, missing or failed."""
        return self.finished.wait(timeout)

    def close(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)

    # ---- the server -----------------------------------------------------------------------------
    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._all_ready = asyncio.Event()
        self._go = asyncio.Event()
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._readers: dict[int, asyncio.StreamReader] = {}
        try:
            server = await asyncio.start_server(self._handle, self.host, self.port, limit=CHUNK * 4)
        except OSError as exc:
            self._bind_error = exc
            self._up.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self._up.set()
        barrier = asyncio.create_task(self._barrier())
        async with server:
            await self._stop.wait()
        barrier.cancel()
        for w in list(self._writers.values()):
            w.close()

    def _settle(self) -> None:
        if not self.finished.is_set() and all(s.status in ("done", "missing", "failed", "late") for s in self.states):
            self.finished.set()

    def _gone(self, rank: int, reason: str) -> None:
        state = self.states[rank]
        if state.status in ("done", "missing", "failed", "late"):
            return
        state.status, state.reason = "missing", reason
        self._check_ready()
        self._settle()

    def _fail(self, err: UserError) -> None:
        if self.error is None:
            self.error = err
        for s in self.states:
            if s.status not in ("done", "failed"):
                s.status = "missing"
        self._go.set()
        self.started.set()
        self.finished.set()

    def _check_ready(self) -> None:
        if all(s.status != "waiting" for s in self.states):
            self._all_ready.set()

    async def _barrier(self) -> None:
        try:
            await asyncio.wait_for(self._all_ready.wait(), self.ready_timeout)
        except asyncio.TimeoutError:
            pass
        if self.error is not None:
            return
        for s in self.states:
            if s.status == "waiting":
                s.status, s.reason = "late", f"not ready within {self.ready_timeout:.0f} s of the master"
        ready = [s for s in self.states if s.status == "ready"]
        if not ready:
            why = "; ".join(f"{self.what} {s.rank}: {s.reason}" for s in self.states)
            self._fail(UserError(f"no {self.what} got ready ({why})",
                                 "check the nodes' logs and the network between them and the master"))
            return
        await asyncio.gather(*(self._measure(s) for s in ready))
        rtt = max((s.rtt_s or 0.0) for s in ready)
        now = time.time()
        start = self.fixed_start if self.fixed_start is not None else now + max(self.margin, 4 * rtt)
        self.start_epoch = start
        for s in ready:
            if s.status != "ready":
                continue
            s.start_at = start + (s.offset_s or 0.0)
            s.status = "started"
            await self._send(s.rank, {"op": "start", "start_at": s.start_at, "master_start_at": start,
                                      "clock_offset_s": s.offset_s, "offset_rtt_s": s.rtt_s, "nodes": self.nodes})
        self.started.set()
        self._go.set()
        self._settle()

    async def _measure(self, s: NodeState) -> None:
        reader, writer = self._readers[s.rank], self._writers[s.rank]
        best: tuple[float, float] | None = None
        try:
            for _ in range(self.samples):
                t1 = time.time()
                writer.write(b'{"op":"ping"}\n')
                await writer.drain()
                msg = orjson.loads(await asyncio.wait_for(reader.readline(), 30))
                t4 = time.time()
                rtt, offset = t4 - t1, float(msg["t"]) - (t1 + t4) / 2
                if best is None or rtt < best[0]:
                    best = (rtt, offset)
        except (OSError, ValueError, KeyError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            s.status, s.reason = "missing", f"lost while its clock was measured ({type(exc).__name__})"
            return
        s.rtt_s, s.offset_s = best

    async def _send(self, rank: int, msg: dict) -> None:
        writer = self._writers.get(rank)
        if writer is None:
            return
        try:
            writer.write(orjson.dumps(msg) + b"\n")
            await writer.drain()
        except OSError:
            pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rank = None
        try:
            hello = orjson.loads(await reader.readline())
            rank, nodes = int(hello["rank"]), int(hello["nodes"])
            fits = nodes == self.nodes and 0 <= rank < self.nodes
            if fits and self.states[rank].status == "late":
                writer.write(b'{"op":"late"}\n')
                await writer.drain()
                rank = None  # stays late: its share is missing
                return
            if not fits or self.states[rank].status != "waiting":
                writer.write(orjson.dumps({"op": "refused", "why": f"rank {rank} of {nodes} does not fit this "
                                           f"barrier of {self.nodes} (or is taken)"}) + b"\n")
                await writer.drain()
                writer.close()
                return
            state = self.states[rank]
            state.host = str(hello.get("host") or writer.get_extra_info("peername")[0])
            self._readers[rank], self._writers[rank] = reader, writer
            if hello.get("op") == "failed":  # it could not prepare: the same arguments fail everywhere
                state.status = "failed"
                state.error = received_error(hello, f"{self.what} {rank}: ")
                self._fail(state.error)
                return
            if self.started.is_set():
                state.status, state.reason = "late", "ready after the others had started"
                await self._send(rank, {"op": "late"})
                self._settle()
                return
            state.status = "ready"
            self._check_ready()
            await self._go.wait()
            if state.status != "started":
                return
            # the run goes on; the next line is its result or its failure
            head = orjson.loads(await reader.readuntil(b"\n"))
            if head.get("op") == "failed":
                state.status, state.reason = "failed", f"its run failed: {head.get('problem')}"
            else:
                state.files = await self._receive(reader, head.get("files") or [])
                state.status = "done"
            await self._send(rank, {"op": "ack"})
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError, KeyError, TypeError) as exc:
            if rank is not None:
                when = "during or after its run" if self.started.is_set() else "before the start"
                self._gone(rank, f"its connection ended {when} ({type(exc).__name__}): killed, crashed or cut off")
        finally:
            if rank is not None:
                self._settle()
            writer.close()

    async def _receive(self, reader: asyncio.StreamReader, files: Sequence[dict]) -> list[Path]:
        out = []
        for f in files:
            name, size = os.path.basename(str(f["name"])), int(f["size"])
            if not name or name.startswith("."):
                raise ValueError(f"bad file name {f['name']!r}")
            path = self.dest / name
            with open(path, "wb") as fh:
                left = size
                while left:
                    chunk = await reader.readexactly(min(CHUNK, left))
                    fh.write(chunk)
                    left -= len(chunk)
            out.append(path)
        return out


class NodeLink:
    """The node side: one blocking connection to the master, from ready to the last file sent."""

    def __init__(self, master: str, port: int, rank: int, nodes: int, *,
                 connect_timeout: float = CONNECT_TIMEOUT_S, clock=time.time) -> None:
        self.master, self.port, self.rank, self.nodes, self.clock = master, port, rank, nodes, clock
        self.info: dict[str, Any] = {}  # the barrier's provenance, once started
        deadline = time.monotonic() + connect_timeout
        while True:  # the master may come up after this node
            try:
                self.sock = socket.create_connection((master, port), timeout=10)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise UserError(f"cannot reach the master node at {master}:{port}: {exc.strerror or exc}",
                                    "check DSTACK_MASTER_NODE_IP, the port (INFERMETER_BARRIER_PORT) and the "
                                    "cluster network") from None
                time.sleep(0.5)
        self.sock.settimeout(None)
        self.file = self.sock.makefile("rb")

    def _send(self, msg: dict) -> None:
        self.sock.sendall(orjson.dumps(msg) + b"\n")

    def _recv(self) -> dict:
        line = self.file.readline()
        if not line:
            raise UserError(f"the master node ({self.master}:{self.port}) closed the connection",
                            "see the master node's log: it ended the run")
        return orjson.loads(line)

    def wait_start(self) -> float:
        """Say ready; answer the clock pings; return the start instant in this node's clock."""
        self._send({"op": "ready", "rank": self.rank, "nodes": self.nodes, "host": socket.gethostname(),
                    "pid": os.getpid()})
        while True:
            msg = self._recv()
            op = msg.get("op")
            if op == "ping":
                self.sock.sendall(orjson.dumps({"op": "pong", "t": self.clock()}) + b"\n")
            elif op == "start":
                self.info = {k: msg.get(k) for k in ("start_at", "master_start_at", "clock_offset_s",
                                                      "offset_rtt_s", "nodes")}
                self.info.update(rank=self.rank, master=f"{self.master}:{self.port}")
                return float(msg["start_at"])
            elif op == "late":
                raise UserError(f"node {self.rank} was ready after the others had started",
                                "its share is marked missing in the merged result; provision the nodes together")
            else:
                raise UserError(f"the master refused node {self.rank}: {msg.get('why', msg)}",
                                "give every node the same node count, each its own rank")

    def fail(self, problem: str, fix: str | None = None, exit_code: int = 1, *,
             field_error: dict | None = None) -> None:
        """Tell the master this node cannot run (before the start) or its run failed (after);
        ``field_error`` (``sent_error``) lets the master raise a bad setting as a FieldError."""
        msg = {"op": "failed", "rank": self.rank, "nodes": self.nodes, "host": socket.gethostname(),
               "problem": problem, "fix": fix, "exit_code": exit_code}
        if field_error is not None:
            msg["field_error"] = field_error
        try:
            self._send(msg)
        except OSError:
            pass

    def send_files(self, paths: Sequence[Path]) -> None:
        """Stream ``paths`` to the master and wait for its acknowledgement."""
        files = [{"name": Path(p).name, "size": Path(p).stat().st_size} for p in paths]
        self._send({"op": "result", "files": files})
        for p in paths:
            with open(p, "rb") as fh:
                self.sock.sendfile(fh)
        if self._recv().get("op") != "ack":
            raise UserError("the master did not acknowledge this node's result", "see the master node's log")

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


def sent_error(exc: UserError) -> dict | None:
    """A FieldError as JSON (field path, value, templates, figures), when JSON keeps its values
    as they are; None otherwise (the master then gets its text, worded with field paths)."""
    if not isinstance(exc, FieldError):
        return None
    data = {"field": exc.field, "value": exc.value, "templates": list(exc.templates), "figures": exc.figures}
    try:
        return data if orjson.loads(orjson.dumps(data)) == data else None
    except (TypeError, ValueError):
        return None


def received_error(msg: dict, prefix: str) -> UserError:
    """The error a ``failed`` message carries, ``prefix`` naming the rank; a FieldError stays one,
    so the caller words its field as its user named it (a flag, a spec file's key)."""
    fe = msg.get("field_error")
    err: UserError
    try:
        problem, fix = fe["templates"]
        err = FieldError(str(fe["field"]), fe.get("value"), prefix + problem, fix, **dict(fe.get("figures") or {}))
    except (TypeError, KeyError, ValueError, IndexError, AttributeError):  # absent, or not a FieldError's shape
        err = UserError(prefix + str(msg.get("problem")), msg.get("fix"))
    err.exit_code = int(msg.get("exit_code") or 1)
    return err
