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


NoticeLike = Notice | dict[str, Any] | str


def as_notice(item: NoticeLike) -> Notice:
    """A ``Notice`` from any of its forms (a Notice, its dict, or an older result's bare string)."""
    return item if isinstance(item, Notice) else Notice.from_dict(item)


def message(item: NoticeLike) -> str:
    """The plain-text view of a notice in any form: what a person (or a string-only format) reads."""
    return as_notice(item).message


def codes(notices: Iterable[NoticeLike]) -> set[str]:
    """The codes of ``notices``, whatever form they come in."""
    return {as_notice(n).code for n in notices}


def dedupe(notices: Iterable[NoticeLike]) -> list[Notice]:
    """One notice per (code, message), first kept, order kept (any form in, Notices out)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for n in map(as_notice, notices):
        key = (n.code, n.message)
        if key not in seen:
            seen.add(key)
            out.append(n)
    return out
