"""Small option parsers shared by the CLI commands."""

from __future__ import annotations

from infermeter.errors import UserError


def parse_kv(items: list[str], flag: str, example: str) -> dict[str, str]:
    """Repeated ``KEY=VALUE`` options as a dict; a malformed one is a one-line error."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {item!r} is not KEY=VALUE", f"write e.g. {flag} {example}")
        out[key] = value
    return out
