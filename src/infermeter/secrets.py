"""Secrets never leave the process except to the target host.

API keys come from an environment variable (or a file) and go only into the
request headers.  Everything infermeter writes (results, logs, provenance)
passes through these helpers, which keep names and drop values.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from infermeter.errors import FieldError, UserError

SENSITIVE_HEADERS = {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"}
# Any header whose name says it carries a credential is redacted too (X-Auth-Token, X-Secret, ...).
_SENSITIVE_NAME = re.compile(r"auth|key|token|secret|passw|cookie|session|credential|signature", re.I)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token


def api_key_from(env_name: str | None, key_file: str | None = None) -> str | None:
    if key_file:
        try:
            value = Path(key_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"cannot read --api-key-file {key_file!r}: {exc.strerror}",
                            "give a readable file that holds only the key") from None
        return _checked_key(value, f"--api-key-file {key_file!r}")
    if env_name:
        return _checked_key((os.environ.get(env_name) or "").strip(), f"${env_name}")
    return None


def _checked_key(value: str, where: str) -> str | None:
    if not value:
        return None
    if any(not ch.isprintable() or ch.isspace() for ch in value):  # the key itself is never shown
        raise UserError(f"the API key in {where} contains spaces or control characters",
                        "store only the key, on one line")
    return value


def check_headers(headers: dict[str, str]) -> None:
    """Header names must be tokens and values one printable line (no CR/LF injection)."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise FieldError("target.headers", name, "{target.headers} name {value!r} is not a valid HTTP "
                             "header name", "use letters, digits and '-', e.g. {target.headers} 'X-Team: infra'")
        if any(not ch.isprintable() and ch != "\t" for ch in value):
            raise FieldError("target.headers", name, "{target.headers} {value!r} has a value with control "
                             "characters (CR/LF?)", "give the value on one line")


def parse_headers(items: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--header {item!r} is not NAME: VALUE", "write e.g. --header 'X-Team: infra'")
        headers[name.strip()] = value.strip()
    check_headers(headers)
    return headers


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: ("<redacted>" if is_sensitive_header(k) else v) for k, v in headers.items()}


def is_sensitive_header(name: str) -> bool:
    return name.lower() in SENSITIVE_HEADERS or bool(_SENSITIVE_NAME.search(name))


# Query parameters that carry credentials (?token=, ?api_key=, ?sig=, X-Amz-Signature, ...): any name
# that says so, plus the short ones that would match too much as a pattern.
_SECRET_QUERY_WORDS = {"sig", "pw", "pwd", "pass", "code", "jwt"}


def is_secret_query(name: str) -> bool:
    """True for a URL query parameter whose value is a credential (token, key, api_key, apikey,
    secret, password, sig, signature, access_token, auth, X-Amz-Credential, ...)."""
    return bool(_SENSITIVE_NAME.search(name)) or name.lower() in _SECRET_QUERY_WORDS


def redact_url(url: str) -> str:
    """Drop user:password from a URL and the values of its credential query parameters."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # not a URL we can take apart: hide what could be userinfo
        return re.sub(r"//[^/@?#]*@", "//", url)
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        netloc = netloc.rpartition("@")[2]
        host = parts.hostname or ""
        if ":" in host:  # IPv6
            host = f"[{host}]"
        netloc = host + (f":{port}" if port else "")
    if query:
        query = _redact_query(query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_query(query: str) -> str:
    out = []
    for pair in query.split("&"):
        name, eq, _value = pair.partition("=")
        out.append(f"{name}={REDACTED}" if eq and is_secret_query(unquote(name)) else pair)
    return "&".join(out)


def url_credentials(url: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """``(url, headers)`` with a URL's ``user:password@`` moved into a Basic Authorization header,
    which every request then carries (preflight and load alike).  A URL with credentials and an
    Authorization header as well (an API key, ``--header``) is refused: a request carries only one."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, headers
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if any(k.lower() == "authorization" for k in headers):
        raise UserError("--base-url carries user:password and an Authorization header is set as well "
                        "(the API key, or --header): a request can carry only one",
                        "drop user:password from --base-url, or unset the API key variable "
                        "(--api-key-env, default OPENAI_API_KEY) and any Authorization --header")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return (urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment)),
            {**headers, "Authorization": f"Basic {token}"})


def redact_text(text: str) -> str:
    """Every URL in a free text (a message, a command line word) with its credentials removed."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def redact_tree(value: Any) -> Any:
    """A copy of a JSON-like value for writing: URLs' credentials removed from every string,
    and the values of credential-named ``headers`` entries redacted."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "headers" and isinstance(v, dict):
                out[k] = redact_headers({str(n): redact_tree(x) for n, x in v.items()})
            else:
                out[k] = redact_tree(v)
        return out
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    return value


_HEADER_FLAGS = {"--header", "-H"}
# flags (ours and the servers') whose whole value is a credential
_SECRET_VALUE_FLAGS = {"--api-key", "--admin-api-key", "--hf-token", "-hft", "--ngrok-authtoken", "--token",
                       "--api-key-file"}
# credential-looking words anywhere else (Hugging Face, OpenAI-style, GitHub tokens)
TOKEN_RE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|ghp_[A-Za-z0-9]{20,})\b")
REDACTED = "<redacted>"


def redact_argv(argv: list[str]) -> list[str]:
    """A command line as recorded in provenance (ours, or a launched server's): header
    values, credential flags' values, URLs' passwords and token-like words removed."""
    out: list[str] = []
    hide_next: str | None = None  # "header" or "value"
    for arg in argv:
        if hide_next:
            out.append(_redact_header_arg(arg) if hide_next == "header" else REDACTED)
            hide_next = None
            continue
        if arg.startswith("-H") and len(arg) > 2 and not arg.startswith("-H="):  # -H'Name: value'
            out.append("-H" + _redact_header_arg(arg[2:]))
            continue
        flag, eq, value = arg.partition("=")
        if flag in _HEADER_FLAGS or flag in _SECRET_VALUE_FLAGS:
            if eq:
                out.append(f"{flag}={REDACTED}")
            else:
                out.append(arg)
                hide_next = "header" if flag in _HEADER_FLAGS else "value"
            continue
        out.append(TOKEN_RE.sub(REDACTED, redact_text(arg)))
    return out


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def _redact_header_arg(arg: str) -> str:
    """'Name: value' or 'Name=value' -> 'Name: <redacted>' (the value never survives)."""
    name, sep, _value = arg.partition(":")
    if "=" in name or not sep:
        name, sep, _value = arg.partition("=")
    return f"{name.strip()}: <redacted>" if sep else "<redacted>"



ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Environment names that hold credentials: only ever passed by NAME (docker -e NAME, dstack "- NAME").
_SECRET_NAME = re.compile(
    r"(?:^|_)(?:TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)(?:$|_)", re.I)
_CREDENTIAL_WORD = re.compile(
    r"(?:^|_)(?:SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)(?:$|_)", re.I)
# TOKEN in a name that counts text tokens (MAX_TOTAL_TOKEN, NUM_TOKEN, TOKEN_LIMIT): a setting, not a credential
_TOKEN_COUNT = re.compile(r"(?:^|_)(?:MAX|MIN|TOTAL|NUM|N|INPUT|OUTPUT|PROMPT|PREFILL|BATCH|NEW|CONTEXT|CTX|LEN|"
                          r"LENGTH|LIMIT|COUNT|SIZE|BUDGET|PER|CHUNK)(?:$|_)", re.I)
_PLAIN_SETTING = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|true|false|yes|no|on|off", re.I)


def is_secret_name(name: str) -> bool:
    """True for environment names that carry credentials (HF_TOKEN, OPENAI_API_KEY, ...);
    False for token counts such as MAX_TOTAL_TOKEN or NUM_TOKEN."""
    if _CREDENTIAL_WORD.search(name):
        return True
    return bool(_SECRET_NAME.search(name)) and not _TOKEN_COUNT.search(name)


def is_secret(name: str, value: str | None = None) -> bool:
    """True when ``name=value`` carries a credential.  A name that says TOKEN holding a
    plain number or boolean is a setting (a credential is never ``130000`` or ``true``);
    PASSWORD, SECRET, API_KEY... are credentials whatever their value."""
    if _CREDENTIAL_WORD.search(name):
        return True
    if not is_secret_name(name):
        return False
    return value is None or not _PLAIN_SETTING.fullmatch(value.strip())
