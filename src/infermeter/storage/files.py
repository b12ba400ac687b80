"""Crash-safe files.

* ``RecordWriter`` appends one whole JSON line per finished request and hands
  it to the OS at once: a killed process loses no completed request, and a
  line is never half-written by us (a torn last line from a power cut is
  skipped on read).  A write that fails (disk full) cuts the file back to
  its last whole line, and the writer refuses further lines.
* ``write_json_atomic`` writes to a temporary file in the same folder, fsyncs,
  and renames over the target: readers see the old file or the new one.

Files are created as ordinary files are: mode 0666 less the umask (0644
under the usual umask 022), the records, the result and the telemetry alike.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from infermeter.core.records import RequestRecord

FILE_MODE = 0o666  # less the umask, as open() creates files


class RecordWriter:
    """``replace=False`` creates the file with O_EXCL (an existing file raises
    ``FileExistsError``: it is another run's); ``replace=True`` truncates it.
    ``columns``: values written on every line (the run's ``target`` and ``cell_id``)."""

    def __init__(self, path: Path, *, keep_text: bool = False, replace: bool = False,
                 columns: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if replace else os.O_EXCL)
        self._fd = os.open(self.path, flags, FILE_MODE)
        self.keep_text = keep_text
        self.columns = dict(columns or {})
        self.count = 0
        self.size = 0  # bytes of whole lines written
        self.error: OSError | None = None  # the first write that failed; no line is written after it

    def __call__(self, rec: RequestRecord) -> None:
        if self.error is not None:
            raise self.error
        data = rec.to_json(keep_text=self.keep_text)
        data.update(self.columns)
        line = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        try:
            n = os.write(self._fd, line)  # one write(2) of a whole line: O_APPEND keeps lines whole
            while n < len(line):  # a short write (rare: a signal, a nearly full disk): finish the line
                n += os.write(self._fd, line[n:])
        except OSError as exc:  # disk full, I/O error: keep only whole lines
            self.error = exc
            try:
                os.ftruncate(self._fd, self.size)
            except OSError:
                pass
            raise
        self.size += len(line)
        self.count += 1

    def close(self) -> None:
        """Flush to disk and close; an error flushing (a disk that filled late) is kept in
        ``error`` rather than raised: the lines written are whole either way."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.fsync(fd)
            except OSError as exc:
                if self.error is None:
                    self.error = exc
            finally:
                os.close(fd)

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
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
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
