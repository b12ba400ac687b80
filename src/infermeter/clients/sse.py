"""Server-sent events framing, scanned from timestamped network reads.

The hot path only stores ``(arrival time, bytes)`` pairs; this module turns
them into events afterwards.  Each event is timed by the read that completed
it, which is when a client could first have acted on it.

Per the SSE spec: lines end in CRLF, LF or CR; a blank line ends an event;
lines starting with ``:`` are comments; ``data:`` lines of one event are
joined with newlines, with one leading space after the colon removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

MAX_EVENT_BYTES = 1 << 20  # an event larger than this is a protocol fault


@dataclass(slots=True)
class SSEEvent:
    time: float
    data: str | None  # None: the event had no data lines (e.g. only a comment or a named ping)
    event: str | None = None
    size: int = 0
    terminated: bool = True  # False for bytes left over at the end of the stream


class OversizedEvent(Exception):
    def __init__(self, size: int, time: float) -> None:
        super().__init__(f"an SSE event of {size} bytes exceeds the {MAX_EVENT_BYTES}-byte limit")
        self.size = size
        self.time = time


def iter_event_blocks(
    times: Sequence[float], chunks: Sequence[bytes], max_event_bytes: int = MAX_EVENT_BYTES
) -> Iterator[tuple[float, bytes, bool]]:
    """Yield ``(time, raw event block, terminated)`` with line endings normalised to LF."""
    buf = b""
    t = 0.0
    skip_lf = False  # the previous read ended in CR: an LF starting this one completes a CRLF
    for t, chunk in zip(times, chunks):
        if skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        skip_lf = chunk[-1:] == b"\r"
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf += chunk
        if b"\n\n" in buf:
            *blocks, buf = buf.split(b"\n\n")  # one split per read, whatever the events in it
            for block in blocks:
                if len(block) > max_event_bytes:
                    raise OversizedEvent(len(block), t)
                if block:
                    if block[:1] == b"\n":
                        block = block.lstrip(b"\n")
                        if not block:
                            continue
                    yield t, block, True
        if len(buf) > max_event_bytes:
            raise OversizedEvent(len(buf), t)
    rest = buf.strip(b"\n")
    if rest:
        yield t, rest, False


def block_data(block: bytes) -> bytes | None:
    """The data of one event block, as bytes (None: no data lines).

    The common case, a single ``data: ...`` line, takes one slice; anything
    else goes through the full field parser.
    """
    if block[:5] == b"data:" and b"\n" not in block:
        return block[6:] if block[5:6] == b" " else block[5:]
    lines = []
    for raw in block.split(b"\n"):
        if raw[:4] != b"data" or raw[:1] == b":":
            continue
        name, sep, value = raw.partition(b":")
        if name != b"data":
            continue
        lines.append(value[1:] if value[:1] == b" " else value)
    return b"\n".join(lines) if lines else None


def simple_events(times: Sequence[float], chunks: Sequence[bytes]) -> tuple[list[float], list[bytes]] | None:
    """``(event times, data)`` of a stream in the common shape, framed with a few C calls per read.

    The shape: LF line ends only, every event one ``data: ...`` line, the
    stream ending with a complete event.  Anything else (CR, comments, named
    events, multi-line data, leftovers, an event near the size limit) returns
    None, and the caller uses :func:`iter_event_blocks`, which gives the same
    result for streams of this shape.  Each event is timed by the read that
    brought its closing blank line, as there.
    """
    body = b"".join(chunks)
    if body[:6] != b"data: " or body[-2:] != b"\n\n" or b"\r" in body:
        return None
    data = body[6:-2].split(b"\n\ndata: ")
    if max(map(len, data)) + 8 > MAX_EVENT_BYTES:  # one event near the limit: the general path judges it
        return None
    # Every LF is then one of a pair that ends an event, and the n-th pair
    # ends the n-th event: a read that brings the stream's LF count from a
    # to b closes events a // 2 .. b // 2 - 1.
    event_times: list[float] = []
    lfs = 0
    for t, chunk in zip(times, chunks):
        k = chunk.count(b"\n")
        if k:
            closed = (lfs + k) // 2 - lfs // 2
            lfs += k
            if closed:
                event_times += [t] * closed
    if lfs != 2 * len(data):  # an event without data, of more than one line, or a stray blank line
        return None
    return event_times, data


def parse_block(time: float, block: bytes, terminated: bool = True) -> SSEEvent:
    data_lines: list[str] = []
    event: str | None = None
    for raw in block.split(b"\n"):
        if not raw or raw[:1] == b":":
            continue
        name, sep, value = raw.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data_lines.append(value.decode("utf-8", errors="replace"))
        elif name == b"event":
            event = value.decode("utf-8", errors="replace")
    data = "\n".join(data_lines) if data_lines else None
    return SSEEvent(time=time, data=data, event=event, size=len(block), terminated=terminated)


def parse_events(times: Sequence[float], chunks: Sequence[bytes]) -> list[SSEEvent]:
    """All events of a stream (raises ``OversizedEvent``)."""
    return [parse_block(t, b, term) for t, b, term in iter_event_blocks(times, chunks)]


def events_from_bytes(data: bytes | Iterable[bytes], time: float = 0.0) -> list[SSEEvent]:
    """Convenience for tests: parse a whole payload (or pieces) read at one time."""
    pieces = [data] if isinstance(data, bytes) else list(data)
    return parse_events([time] * len(pieces), pieces)
