"""Crash-safe files.

* ``RecordWriter`` appends one whole JSON line per finished request and hands
  it to the OS at once: a killed process loses no completed request, and a
  line is never half-written by us (a torn last line from a power cut is
  skipped on read).
* ``write_json_atomic`` writes to a temporary file in the same folder, fsyncs,
  and renames over the target: readers see the old file or the new one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from infermeter.core.records import RequestRecord


class RecordWriter:
    """``columns``: values written on every line (the run's ``target`` and ``cell_id``)."""

    def __init__(self, path: Path, *, keep_text: bool = False, columns: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.keep_text = keep_text
        self.columns = dict(columns or {})
        self.count = 0

    def __call__(self, rec: RequestRecord) -> None:
        data = rec.to_json(keep_text=self.keep_text)
        data.update(self.columns)
        line = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        n = os.write(self._fd, line)  # one write(2) of a whole line: O_APPEND keeps lines whole
        while n < len(line):  # a short write (rare: a signal, a nearly full disk): finish the line
            line = line[n:]
            n = os.write(self._fd, line)
        self.count += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path) -> Iterator[RequestRecord]:
    """Every whole record in a JSONL file; a torn final line is skipped."""
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            line = line.strip()
            if not line:
                continue
            try:
                yield RequestRecord.from_json(orjson.loads(line))
            except (ValueError, TypeError):
                continue


def write_json_atomic(path: Path, data: Any) -> None:
    payload = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    write_bytes_atomic(path, [payload])


def write_bytes_atomic(path: Path, pieces: Iterable[bytes]) -> None:
    """Write ``pieces`` to a temporary file beside ``path``, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for piece in pieces:
                fh.write(piece)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
