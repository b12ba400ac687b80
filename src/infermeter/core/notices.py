"""Structured warnings and validity reasons: ``{code, message, figures}``.

Everything that a result says about itself (a warning on the terminal, a reason
a run is INVALID, a note in a merged result) is a ``Notice``: a stable ``code``
that programs match on, a one-line ``message`` for people, and the ``figures``
behind it.  Code that judges a result matches codes, never message text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable


@dataclass(frozen=True)
class Notice:
    code: str  # stable, kebab-case: "unequal-work", "client-bound", "too-few-samples", ...
    message: str  # one line, for people
    figures: dict[str, Any] = field(default_factory=dict)  # the numbers behind it

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "figures": dict(self.figures)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str) -> "Notice":
        """A notice from its JSON form; a bare string (older results) gets the code ``note``."""
        if isinstance(data, str):
            return cls("note", data)
        return cls(str(data.get("code") or "note"), str(data.get("message") or ""), dict(data.get("figures") or {}))

    def __str__(self) -> str:
        return self.message


def codes(notices: Iterable[Notice | dict[str, Any] | str]) -> set[str]:
    """The codes of ``notices``, whatever form they come in."""
    return {n.code if isinstance(n, Notice) else Notice.from_dict(n).code for n in notices}


def dedupe(notices: Iterable[Notice]) -> list[Notice]:
    """One notice per (code, message), first kept, order kept."""
    seen: set[tuple[str, str]] = set()
    out = []
    for n in notices:
        key = (n.code, n.message)
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out
