"""Where the embedded engine keeps what it builds and generates, and how it locks it.

The cache root is ``$INFERMETER_CACHE`` if set, else ``$XDG_CACHE_HOME/infermeter``,
else ``~/.cache/infermeter``.  Under it:

* ``engine/llama.cpp-<version>/llama-server`` (+ ``build.json``): the built server;
* ``models/<name>-<hash>/``: generated models (GGUF + Hugging Face tokenizer files);
* ``tokenizers/<key>/``: the trained tokenizer the generated models share.

Everything is written to a temporary sibling and renamed into place, under an
exclusive ``fcntl.flock`` lock, so parallel processes (e.g. pytest workers) never see
half-written files: the second one waits and reuses the first one's result.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from infermeter.errors import EngineError


def cache_root() -> Path:
    """The root of infermeter's user cache (not created here)."""
    explicit = os.environ.get("INFERMETER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "infermeter"
    return Path.home() / ".cache" / "infermeter"


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents); a one-line EngineError if that is impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EngineError(
            f"cannot create cache folder {str(path)!r}: {exc.strerror or exc}",
            "set INFERMETER_CACHE to a writable folder",
        ) from None
    return path


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Blocks until any other holder (another process) releases it; ``on_wait`` is called
    once first if the lock is held elsewhere.
    """
    ensure_dir(path.parent)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def replace_dir(src: Path, dest: Path) -> None:
    """Move the finished folder ``src`` to ``dest``, replacing a stale ``dest``.

    The caller holds the lock for ``dest``.  The final step is one ``rename``, so a
    reader sees either the old folder, nothing, or the complete new one.
    """
    if dest.exists():
        stale = dest.with_name(f".stale-{dest.name}-{os.getpid()}")
        os.rename(dest, stale)
        os.rename(src, dest)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.rename(src, dest)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
