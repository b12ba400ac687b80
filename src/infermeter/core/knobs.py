"""Tuning knobs read from the environment (``INFERMETER_FEED_HEAD_S`` and the like).

They are for debugging and measurement, not user flags; a value that is not a number >= 0
is said in one line on stderr and the default is used, so a typo never becomes a
traceback at import.
"""

from __future__ import annotations

import os
import sys


def env_number(name: str, default: float, kind: type = float) -> float:
    """``name``'s value as ``kind`` (float or int), or ``default`` when unset or not a number >= 0."""
    raw = os.environ.get(name)
    if raw is None:
        return kind(default)
    try:
        value = kind(raw)
        if not value >= 0:  # negative or NaN
            raise ValueError
        return value
    except ValueError:
        sys.stderr.write(f"infermeter: {name}={raw!r} is not a number >= 0; using {default:g} "
                         f"(unset it, or give a number such as {default:g})\n")
        return kind(default)
