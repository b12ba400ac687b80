"""Secrets never leave the process except to the target host.

API keys come from an environment variable (or a file) and go only into the
request headers.  Everything infermeter writes (results, logs, provenance)
passes through these helpers, which keep names and drop values.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from infermeter.errors import UserError

SENSITIVE_HEADERS = {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"}


def api_key_from(env_name: str | None, key_file: str | None = None) -> str | None:
    if key_file:
        try:
            value = Path(key_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"cannot read --api-key-file {key_file!r}: {exc.strerror}",
                            "give a readable file that holds only the key") from None
        return value or None
    if env_name:
        return os.environ.get(env_name) or None
    return None


def parse_headers(items: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--header {item!r} is not NAME: VALUE", "write e.g. --header 'X-Team: infra'")
        headers[name.strip()] = value.strip()
    return headers


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: ("<redacted>" if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers.items()}


def redact_url(url: str) -> str:
    """Drop user:password from a URL."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


_ARG_WITH_SECRET = {"--header", "-H", "--api-key"}


def redact_argv(argv: list[str]) -> list[str]:
    """The command line as recorded in provenance: header values and URLs' passwords removed."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            name = arg.partition(":")[0]
            out.append(f"{name}: <redacted>" if ":" in arg else "<redacted>")
            hide_next = False
            continue
        flag, eq, value = arg.partition("=")
        if flag in _ARG_WITH_SECRET:
            if eq:
                out.append(f"{flag}=<redacted>")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(redact_url(arg) if re.match(r"^[a-z]+://", arg) else arg)
    return out
