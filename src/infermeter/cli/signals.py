"""Signal handling shared by the long-running commands."""

from __future__ import annotations


def raise_keyboard_interrupt(signum, frame) -> None:
    """A SIGTERM handler: stop the way Ctrl-C does, so that the same cleanup runs."""
    raise KeyboardInterrupt
