"""Provenance of a launched server: exactly what ran, where, and which versions.

``provenance(server)`` returns a JSON-ready dict: backend, the server's own version
(from its info endpoint, read by its backend module's ``version_from_info``: vLLM
``/version``, TGI ``/info``, SGLang ``/get_server_info``, llama.cpp ``/props``; else
``<program> --version``), the full
command and environment, the image (containers), model id and revision, tokenizer,
every setting and the flags that carried it, GPU model/count/driver (``nvidia-smi`` or
``rocm-smi`` when present, else ``"unknown"``), infermeter's version and the host.
Secrets appear by environment variable NAME only; values that look like credentials
(in argv, environment or the server's own info) are replaced by ``<redacted>``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

from infermeter.backends import get_backend
from infermeter.secrets import REDACTED, TOKEN_RE, is_secret, redact_argv

# One redaction for every recorded command line: infermeter.secrets.redact_argv.
redact_command = redact_argv


def redact_info(value: Any, key: str = "") -> Any:
    """A server's info document with credential-named fields and token-like strings redacted."""
    if isinstance(value, dict):
        return {k: (REDACTED if v not in (None, "", False) and is_secret(str(k), v if isinstance(v, str) else None)
                    else redact_info(v, str(k)))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact_info(v, key) for v in value]
    if isinstance(value, str):
        return TOKEN_RE.sub(REDACTED, value)
    return value


def version_from_info(profile: str, info: dict[str, Any] | None) -> str | None:
    """The server version from its info endpoint's JSON (the backend module reads it)."""
    if not info:
        return None
    return get_backend(profile).version_from_info(info)


def gpu_info() -> dict[str, Any]:
    """GPU model, count and driver from nvidia-smi or rocm-smi; "unknown" when neither answers."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30,
                                 check=False)
            rows = [[c.strip() for c in ln.split(",")] for ln in out.stdout.splitlines() if ln.strip()]
            if out.returncode == 0 and rows:
                names = sorted({r[0] for r in rows})
                return {"vendor": "nvidia", "model": ", ".join(names), "count": len(rows),
                        "driver": rows[0][1] if len(rows[0]) > 1 else "unknown",
                        "memory_mib": [int(r[2]) for r in rows if len(r) > 2 and r[2].isdigit()],
                        "source": "nvidia-smi"}
        except (OSError, subprocess.TimeoutExpired):
            pass
    if shutil.which("rocm-smi"):
        try:
            out = subprocess.run(["rocm-smi", "--showproductname", "--showdriverversion", "--json"],
                                 capture_output=True, text=True, timeout=30, check=False)
            data = json.loads(out.stdout) if out.returncode == 0 else {}
            cards = {k: v for k, v in data.items() if k.startswith("card")}
            if cards:
                names = sorted({str(v.get("Card Series") or v.get("Card series") or v.get("Card model") or "unknown")
                                for v in cards.values()})
                driver = (data.get("system") or {}).get("Driver version") or "unknown"
                return {"vendor": "amd", "model": ", ".join(names), "count": len(cards), "driver": driver,
                        "source": "rocm-smi"}
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
    return {"vendor": "unknown", "model": "unknown", "count": "unknown", "driver": "unknown", "source": None}


def host_info() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}


def infermeter_version() -> str:
    from infermeter import __version__

    return str(__version__)


def provenance(server: Any) -> dict[str, Any]:
    """What ran: for a ``LocalServer`` (or anything with the same attributes)."""
    profile = server.profile
    settings = server.settings
    command = server.command
    info = server.info() if server.running else None
    model_revision = settings.revision
    revision_from_info = get_backend(profile.name).revision_from_info
    if info and revision_from_info is not None:  # TGI reports the resolved model commit
        model_revision = revision_from_info(info) or model_revision
    launch: dict[str, Any] = {}
    if command is not None:
        launch = command.to_dict()
        launch["argv"] = redact_command(command.argv)
        launch["env"] = {k: (REDACTED if is_secret(k, v) else v) for k, v in command.env.items()}
    return {
        "backend": profile.name,
        "backend_title": profile.title,
        "server_version": server.version() if server.running else None,
        "program_version": server.program_version() if hasattr(server, "program_version") else None,
        "server_info": redact_info(info) if info else None,
        "where": getattr(server, "where", "local process"),
        "image": getattr(server, "image", None),
        "command": launch.get("argv"),
        "environment": launch.get("env"),
        "secrets_by_name": list(settings.secrets),
        "applied_settings": launch.get("applied"),
        "notes": launch.get("notes"),
        "settings": json.loads(settings.model_dump_json()) | {"env": launch.get("env", settings.env)},
        "model": {"id": settings.model, "revision": model_revision, "served_as": server.model_name},
        "tokenizer": settings.tokenizer or settings.model,
        "endpoints": {"base_url": server.base_url, "ready": list(profile.ready_paths), "info": profile.info_path,
                      "metrics": profile.metrics_path, "metrics_flag": profile.metrics_flag},
        "fixed_output_length": profile.fixed_length,
        "vendor": server.vendor.value,
        "gpu": server.gpu_info() if hasattr(server, "gpu_info") else gpu_info(),
        "infermeter_version": infermeter_version(),
        "host": host_info(),
        "started_at": (datetime.fromtimestamp(server.started_at, timezone.utc).isoformat()
                       if getattr(server, "started_at", None) else None),
        "ready_after_s": getattr(server, "ready_after_s", None),
        "log": str(server.log_path) if getattr(server, "log_path", None) else None,
    }
