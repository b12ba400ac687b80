"""The prompt builder process: ``python -m infermeter.load.feed_child`` (started by load/feed.py).

Reads from stdin the parent's ``sys.path`` and then the pickled builder, protocol, options,
context check and order; says it is ready; waits for the position to start at; then builds
the request bodies chunk by chunk and writes them to stdout as frames (load/feed.py's
``_ITEM``).  A failure is written as an error frame, which stops the run with its message.
The process ends when it has built every prompt, or when the parent closes the pipe.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
import traceback
from typing import Any, BinaryIO


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    out = os.dup(1)
    os.dup2(2, 1)  # a stray print must not land in the stream
    stdin: BinaryIO = sys.stdin.buffer
    try:
        path = pickle.load(stdin)
        sys.path[:0] = [p for p in path if p not in sys.path]
        from infermeter.load.feed import _ITEM, _READY, _START, _write_all

        job = pickle.load(stdin)
        if job.get("nice"):
            os.nice(job["nice"])
        _write_all(out, _ITEM.pack(_READY, -1, 0))
        start = stdin.read(_START.size)
        if len(start) < _START.size:
            return 0  # the parent built it all, or stopped
        pos, chunk = _START.unpack(start)
        build_into(out, job, pos, chunk)
    except BrokenPipeError:
        return 0  # the parent is done with us
    except BaseException as exc:  # noqa: BLE001 - told to the parent, which stops the run
        from infermeter.errors import UserError
        from infermeter.load.feed import _ITEM, _write_all

        if isinstance(exc, UserError):
            msg = str(exc)
        else:
            msg = f"the prompt builder failed: {traceback.format_exception_only(exc)[-1].strip()}"
        try:
            data = msg.encode()
            _write_all(out, _ITEM.pack(-1, -1, len(data)) + data)
        except OSError:
            pass
        return 1
    return 0


def build_into(w: int, job: dict[str, Any], pos: int, chunk: int) -> None:
    from infermeter.load.feed import _ITEM, _next_chunk, _write_all

    builder, order, protocol, options = job["builder"], job["order"], job["protocol"], job["options"]
    check, cycle = job["check"], job["cycle"]
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


if __name__ == "__main__":
    sys.exit(main())
