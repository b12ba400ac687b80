"""Validation of dstack configurations with dstack's own models (those ``dstack apply`` uses).

The ``dstack`` package is an extra (``pip install 'infermeter[dstack]'``): without it,
``validate_with_dstack`` answers ``available=False`` and callers say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infermeter.errors import safe_text


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
