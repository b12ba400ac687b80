"""Validation of dstack configurations with dstack's own models (those ``dstack apply`` uses).

The ``dstack`` package is an extra (``pip install 'infermeter[dstack]'``): without it,
``validate_with_dstack`` answers ``available=False`` and callers say so.  ``gpu_request``
reads the GPUs a configuration asks for (name, count, vendor) without dstack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from infermeter.errors import safe_text

AMD_GPUS = re.compile(r"^(mi\d{2,3}[a-z]*|radeon.*|rx\d+.*|w\d{4}.*|v\d{3}.*|instinct.*)$", re.I)
NVIDIA_GPUS = re.compile(r"^(h\d{2,3}.*|a\d{1,3}.*|l\d{1,2}.*|b\d{2,3}.*|gb\d{2,3}.*|gh\d{3}.*|v100.*|t4|p100|"
                         r"rtx.*|k80|p4|p40|a10g|l40s?)$", re.I)


@dataclass
class DstackCheck:
    available: bool
    version: str | None
    errors: list[tuple[tuple[Any, ...], str]] = field(default_factory=list)  # (location, message)


def dstack_version() -> str | None:
    try:
        from dstack.version import __version__ as version  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(version)


def validate_with_dstack(conf: dict[str, Any]) -> DstackCheck:
    """Validate ``conf`` with dstack's configuration models (those ``dstack apply`` uses).

    ``available`` is False when the ``dstack`` package is not installed."""
    try:
        from pydantic import ValidationError

        from dstack._internal.core.models import configurations as models  # type: ignore[import-not-found]
    except ImportError:
        return DstackCheck(False, None)
    check = DstackCheck(True, dstack_version())
    kind = conf.get("type") if isinstance(conf, dict) else None
    classes = {"task": models.TaskConfiguration, "service": models.ServiceConfiguration,
               "dev-environment": models.DevEnvironmentConfiguration}
    try:
        if kind in classes:
            classes[kind].model_validate(conf)
        else:
            models.parse_apply_configuration(conf)
    except ValidationError as exc:
        for err in exc.errors():
            check.errors.append((tuple(err.get("loc", ())), str(err.get("msg", "invalid"))))
    except Exception as exc:  # dstack's ConfigurationError and friends
        cause = exc.__cause__ if isinstance(exc.__cause__, ValidationError) else None
        if cause is not None:
            for err in cause.errors():
                check.errors.append((tuple(err.get("loc", ())), str(err.get("msg", "invalid"))))
        else:
            check.errors.append(((), safe_text(exc, 300)))
    return check


def gpu_request(data: dict[str, Any]) -> tuple[str | None, int | None, str | None, bool]:
    """(gpu name, minimum count, vendor, declared) from a configuration's ``resources.gpu``."""
    resources = data.get("resources")
    if not isinstance(resources, dict) or "gpu" not in resources:
        return None, None, None, False
    gpu = resources["gpu"]
    name = count = vendor = None
    if isinstance(gpu, dict):
        name = gpu.get("name")
        if isinstance(name, list):
            name = name[0] if name else None
        count = _count(gpu.get("count"))
        vendor = gpu.get("vendor")
    elif isinstance(gpu, int):
        count = gpu
    elif isinstance(gpu, str):
        for part in gpu.split(":"):
            part = part.strip()
            if not part:
                continue
            if re.fullmatch(r"\d+(\.\.\d*)?|\.\.\d+", part):
                count = _count(part)
            elif re.search(r"\d+\s*[GM]B", part, re.I):
                continue
            elif part.lower() in ("nvidia", "amd", "tpu", "intel"):
                vendor = part.lower()
            else:
                name = part.split(",")[0]
        if count is None and name is not None:
            count = 1
    if vendor is None and name:
        vendor = "amd" if AMD_GPUS.match(str(name)) else "nvidia" if NVIDIA_GPUS.match(str(name)) else None
    return (str(name) if name else None), count, (str(vendor).lower() if vendor else None), True


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return _count(value.get("min"))
    text = str(value)
    lo = text.split("..")[0]
    return int(lo) if lo.isdigit() else None
