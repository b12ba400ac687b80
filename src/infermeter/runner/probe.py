"""Preflight: is the target reachable, does it serve the model, what version is it?

Everything knowable before load starts is checked here, so a wrong URL or a
misspelled model fails in a second with a one-line error, not as N failed
requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from infermeter.backends import BackendSpec
from infermeter.errors import TargetError
from infermeter.secrets import redact_url


@dataclass
class TargetInfo:
    base_url: str
    served_models: list[str] = field(default_factory=list)
    max_model_len: int | None = None
    server_version: str | None = None
    server_info: dict[str, Any] | None = None


#: seconds a TLS handshake may take in the preflight before the server is asked in plain HTTP
TLS_HANDSHAKE_S = 3.0


async def check_tls(base_url: str, handshake_s: float = TLS_HANDSHAKE_S) -> None:
    """For an https URL, a TLS handshake that fails, or does not finish in ``handshake_s``,
    is told apart from a slow server: a server that answers plain HTTP on that port is named."""
    parts = urlsplit(base_url)
    if parts.scheme != "https" or not parts.hostname:
        return
    host, port = parts.hostname, parts.port or 443
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl.create_default_context(),
                                    ssl_handshake_timeout=handshake_s), handshake_s + 1.0)
    except (ssl.SSLError, asyncio.TimeoutError, ConnectionAbortedError) as exc:  # aborted: the handshake timed out
        why = (getattr(exc, "reason", None) or str(exc) if isinstance(exc, ssl.SSLError)
               else f"no TLS handshake within {handshake_s:g} s")
        plain = await _answers_plain_http(host, port)
        if plain:
            raise TargetError(f"TLS failed with {redact_url(base_url)} ({why}): the server answers plain HTTP "
                              "on that port", "use http:// instead of https:// in --base-url") from None
        if isinstance(exc, ssl.SSLError):
            raise TargetError(f"TLS failed with {redact_url(base_url)}: {why}",
                              "check the server's TLS set-up and certificate, or use http:// if it serves "
                              "plain HTTP") from None
        return  # a slow handshake, not plain HTTP: the preflight request judges
    except OSError:
        return  # unreachable: the preflight request says so
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _answers_plain_http(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        head = await asyncio.wait_for(reader.read(5), timeout)
        return head == b"HTTP/"
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()


async def probe_target(base_url: str, backend: BackendSpec, protocol: str, model: str | None,
                       headers: dict[str, str], timeout: float = 10.0) -> TargetInfo:
    info = TargetInfo(base_url=base_url)
    await check_tls(base_url)
    to = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout)
    async with aiohttp.ClientSession(timeout=to, headers=headers, trust_env=False) as session:
        models_path = "/info" if protocol == "tgi" else "/v1/models"
        try:
            async with session.get(base_url + models_path) as resp:
                status = resp.status
                body = await resp.json(content_type=None) if status == 200 else None
        except aiohttp.ClientConnectorError as exc:
            reason = str(exc.os_error) if getattr(exc, "os_error", None) else str(exc)
            raise TargetError(f"cannot reach {redact_url(base_url)}: {reason}",
                              "start the server, or fix --base-url / --host / --port") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise TargetError(f"{redact_url(base_url)}{models_path} did not answer properly: "
                              f"{type(exc).__name__} {exc}".strip(),
                              "check that --base-url points at the inference server's root") from None
        if status in (401, 403):
            raise TargetError(f"{redact_url(base_url)} refused the request with HTTP {status}",
                              "set the API key (--api-key-env NAME, default OPENAI_API_KEY)")
        # The server's answer is data: odd types are ignored, never a crash.
        if isinstance(body, dict) and protocol != "tgi":
            entries = body.get("data") if isinstance(body.get("data"), list) else []
            info.served_models = [str(e.get("id")) for e in entries if isinstance(e, dict) and e.get("id")]
            lens = [_positive_int(e.get("max_model_len")) for e in entries if isinstance(e, dict)]
            info.max_model_len = next((n for n in lens if n), None)
        elif isinstance(body, dict):
            info.server_info = body
            if body.get("model_id"):
                info.served_models = [str(body["model_id"])]
            info.max_model_len = (_positive_int(body.get("max_total_tokens"))
                                  or _positive_int(body.get("max_input_tokens")))
            version = body.get("version")
            info.server_version = version if isinstance(version, str) else None
        if model is not None and info.served_models and model not in info.served_models \
                and protocol != "tgi":
            names = ", ".join(info.served_models[:10])
            if len(info.served_models) > 10:
                names += f", ... ({len(info.served_models)} in all)"
            raise TargetError(
                f"model {model!r} is not served at {redact_url(base_url)} (it serves: {names})",
                "pass --model (or --served-model-name) with one of those names")
        if backend.version_path and info.server_version is None:
            try:
                async with session.get(base_url + backend.version_path) as resp:
                    if resp.status == 200:
                        data = await resp.json(content_type=None)
                        info.server_version = _version_of(data)
                        if info.server_info is None and isinstance(data, dict):
                            info.server_info = {k: v for k, v in data.items() if k != "chat_template"}
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                pass
    return info


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return n if n > 0 else None


def _version_of(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    for key in ("version", "build_info", "sglang_version"):
        if isinstance(data.get(key), str):
            return data[key]
    return None
