"""Where a run's files go, and the promise that a run never replaces another run's files.

A run's files share one stem: ``STEM.json`` (the result), ``STEM.records.jsonl``,
``STEM.telemetry.jsonl`` and, with ``--workers``, ``STEM.shards/``.  The records
file is created first, with ``O_EXCL``: creating it claims the stem, so two runs
started in the same second never share one.

* a generated name (``if_exists="next"``) that is taken moves on to
  ``STEM-2``, ``STEM-3``, ...;
* an explicit name (``--result-filename``) that is taken is refused
  (``"refuse"``), unless the user asked to replace it (``"overwrite"``).

Server-supplied text (a model name) enters a file name only as a ``slug``:
ASCII letters, digits and ``._+=-``, at most ``SLUG_MAX`` characters.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path

from infermeter.errors import FieldError, StorageError, UserError

SLUG_MAX = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")
_MAX_TRIES = 10_000
IF_EXISTS = ("refuse", "overwrite", "next")
PLAIN_NAME_FIX = "give a plain file name (no folder, no '..'); put the folder in {output.result_dir}"


def slug(text: str, limit: int = SLUG_MAX, empty: str = "model") -> str:
    """``text`` safe in a file name: unsafe runs of characters become ``_``; a name
    longer than ``limit`` keeps its start and ends in a short hash of the whole."""
    s = _UNSAFE.sub("_", text).strip("._-") or empty
    if len(s) > limit:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        s = s[: limit - 9].rstrip("._-") + "-" + digest
    return s


def check_plain_name(name: str) -> None:
    """A file name inside the result folder: no folder part, no ``..``, not absolute."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name
            or (os.altsep and os.altsep in name) or "\0" in name):
        raise FieldError("output.result_filename", name, "{output.result_filename} {value!r} is not a plain file "
                         "name inside {output.result_dir}", PLAIN_NAME_FIX)


def sibling(result_path: Path, suffix: str) -> Path:
    """``STEM<suffix>`` beside ``STEM.json`` (suffix e.g. ``.records.jsonl``)."""
    return result_path.with_name(result_path.stem + suffix)


def _taken(result_path: Path) -> bool:
    return any(p.exists() or p.is_symlink() for p in (
        result_path, sibling(result_path, ".records.jsonl"), sibling(result_path, ".telemetry.jsonl"),
        sibling(result_path, ".shards")))


def check_result_place(result_dir: Path, filename: str | None, if_exists: str) -> None:
    """Before anything starts: the folder can hold files, and an explicit name is free
    (or may be replaced)."""
    check_writable_dir(result_dir)
    if filename is not None and if_exists == "refuse" and _taken(result_dir / filename):
        _refuse(result_dir / filename)


def _refuse(path: Path) -> None:
    raise UserError(f"{path} is already there (from an earlier run)",
                    "choose another --result-filename, or pass --overwrite to replace it "
                    "(--append-result appends to it, as in vLLM)")


def check_writable_dir(folder: Path) -> None:
    """The folder (or, where it does not exist yet, its nearest existing parent) is a
    writable folder: a user error otherwise, before any server is started."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():  # a dangling link: mkdir would fail on it
            raise UserError(f"result folder {folder} is a broken link", "choose another --result-dir")
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"result folder {folder} cannot be made: {probe} is a file, not a folder",
                        "choose another --result-dir, or move the file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"result folder {folder} is not writable ({probe}: permission denied)",
                        "choose a writable --result-dir")


def _folder(folder: Path) -> Path:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, folder, folder=True) from None
    return folder


def _candidates(first: Path):
    """``first``, then ``STEM-2.SUFFIX``, ``STEM-3.SUFFIX``, ... beside it (at most ``_MAX_TRIES``)."""
    yield first
    for k in range(2, _MAX_TRIES + 1):
        yield first.with_name(f"{first.stem}-{k}{first.suffix}")


def _none_free(first: Path, fix: str) -> StorageError:
    return StorageError(f"no free name after {first.stem}-{_MAX_TRIES} in {first.parent}", fix)


def claim(result_dir: Path, filename: str, if_exists: str, opener) -> tuple[Path, object]:
    """Claim ``result_dir/filename`` (or the next free stem): ``opener(records_path, replace)``
    creates the records file (with O_EXCL unless ``replace``) and returns its writer."""
    if if_exists not in IF_EXISTS:
        raise ValueError(f"if_exists {if_exists!r}")
    first = _folder(result_dir) / filename
    replace = if_exists == "overwrite"
    for path in _candidates(first):
        try:
            if not replace and _taken(path):
                raise FileExistsError(path)
            return path, opener(sibling(path, ".records.jsonl"), replace)
        except FileExistsError:  # an earlier run's, or another run claimed it a moment ago
            if if_exists == "refuse":
                _refuse(path)
            continue
        except OSError as exc:
            raise storage_error(exc, sibling(path, ".records.jsonl")) from None
    raise _none_free(first, "choose another --result-dir or --result-filename")


def write_new(folder: Path, filename: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/filename``, or to the next free ``STEM-2``, ``STEM-3``, ... (created
    with O_EXCL): a file another run wrote is never replaced.  Returns the path written."""
    first = _folder(folder) / filename
    for path in _candidates(first):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise storage_error(exc, path) from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise storage_error(exc, path) from None
        return path
    raise _none_free(first, "choose another folder")


def storage_error(exc: OSError, path: Path, *, folder: bool = False) -> UserError:
    """An OS error writing ``path`` as one line naming the problem and the fix."""
    code = exc.errno
    what = "result folder" if folder else "file"
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return StorageError(f"no space left on device writing {path}",
                            "free some space, or choose another --result-dir")
    if code in (errno.EACCES, errno.EPERM):
        return UserError(f"cannot write {what} {path}: permission denied", "choose a writable --result-dir")
    if code == errno.EROFS:
        return UserError(f"cannot write {what} {path}: read-only file system", "choose a writable --result-dir")
    if code in (errno.ENOTDIR, errno.EEXIST) and folder:
        return UserError(f"result folder {path} cannot be made: a file is in the way",
                         "choose another --result-dir, or move the file")
    if code == errno.ENAMETOOLONG:
        return UserError(f"file name too long: {path.name[:60]}...", "choose a shorter --result-filename")
    return StorageError(f"cannot write {path}: {exc.strerror or exc}", "check the disk and the --result-dir")
