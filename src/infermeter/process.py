"""Server child processes: the plumbing shared by the embedded engine and the launchers.

A server runs in its own process group (``start_new_session=True``) so that stopping it
also stops whatever it forked; Linux is asked to SIGTERM it if infermeter dies, even by
SIGKILL; a finalizer ends a server that was dropped without being stopped.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any, Callable

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to a process group; nothing if it is gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process's group, wait up to ``timeout`` s, then SIGKILL; and SIGKILL
    whatever is left in the group either way."""
    if proc.poll() is None:
        signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    signal_group(proc.pid, signal.SIGKILL)


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """Finalizer: end a server whose owner was dropped, or at interpreter exit."""
    stop_group(proc, timeout=5)


def free_port(host: str) -> int:
    """A TCP port nothing listens on at ``host`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read() if exc.fp is not None else b""
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child if this process dies (even by
    SIGKILL, when no finalizer runs).  Only from the main thread: the signal fires when
    the *thread* that started the child exits.  None elsewhere."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl: Any = ctypes.CDLL(None, use_errno=True).prctl  # libc is loaded already
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)

    return preexec
