"""Process limits a large load needs: open files (one socket per request in flight).

The soft RLIMIT_NOFILE is often 1024 while the hard limit is far higher; an
unprivileged process may raise its soft limit up to the hard one, so a load
that needs more descriptors raises it itself.  When even the hard limit is
too low the run refuses to start, with one line saying how to fix it, instead
of failing requests with EMFILE halfway through.
"""

from __future__ import annotations

from infermeter.errors import UserError

FILE_MARGIN = 128  # descriptors besides sockets: files, pipes, the event loop, tokenizer threads


def open_files_needed(width: int) -> int:
    """Descriptors for ``width`` requests in flight, plus the margin."""
    return max(0, width) + FILE_MARGIN


def ensure_open_files(width: int, *, strict: bool = True, what: str | None = None) -> str | None:
    """Make sure ``width`` concurrent connections fit under RLIMIT_NOFILE.

    Raises the soft limit (up to the hard one) when needed and returns a note
    saying so, or None when nothing changed.  When the hard limit is too low:
    a ``UserError`` if ``strict`` (the load certainly keeps ``width`` requests
    in flight), else the soft limit is raised as far as it goes and the note
    says the run may hit it.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    need = open_files_needed(width)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    ceiling = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if ceiling < need and strict:
        raise UserError(
            f"{what or f'{width} concurrent requests'} need about {need} open files, but this process may "
            f"open at most {hard} (ulimit -Hn)",
            f"run 'ulimit -n {need}' first (raising the hard limit needs root or "
            f"/etc/security/limits.conf), or lower --max-concurrency")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    except (ValueError, OSError) as exc:
        if strict:
            raise UserError(f"cannot raise the open-file limit from {soft} to {need}: {exc}",
                            f"run 'ulimit -n {need}' first, or lower --max-concurrency") from None
        return f"open-file limit stays at {soft}: {exc}"
    if ceiling < need:
        return (f"open-file limit raised from {soft} to its hard maximum {ceiling}; up to {width} requests "
                f"could be in flight and need about {need}: raise it with 'ulimit -n {need}'")
    return f"open-file limit raised from {soft} to {ceiling} for {width} concurrent requests"
