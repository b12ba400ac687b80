"""A rendered server launch, and the helpers a backend's ``render`` uses to build it.

``add(cmd, setting, *args)`` appends flags and records that they carry ``setting``;
``not_applicable(cmd, setting, why)`` records why the backend has no such setting.
Every setting of ``ServerSettings`` ends up in ``LaunchCommand.applied`` one way or
the other, so a result says exactly how each limit reached the server.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from infermeter.backends.settings import Vendor

NA = "not applicable: "


@dataclass
class LaunchCommand:
    """A rendered server launch: argv, environment, and how each setting was applied."""

    profile: str
    vendor: Vendor
    argv: list[str]
    host: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    applied: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)  # shell lines a container runs first
    metrics_port: int | None = None

    @property
    def shell(self) -> str:
        """The command as one shell line (argv only; env is set separately)."""
        return shlex.join(self.argv)

    def script(self) -> list[str]:
        """Shell lines for a container: setup, then ``exec`` of the server."""
        return [*self.setup, "exec " + self.shell] if self.setup else [self.shell]

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "vendor": self.vendor.value, "argv": list(self.argv),
                "host": self.host, "port": self.port, "env": dict(self.env),
                "secrets_by_name": list(self.secrets), "applied": dict(self.applied),
                "notes": list(self.notes), "setup": list(self.setup), "metrics_port": self.metrics_port}


def add(cmd: LaunchCommand, setting: str, *args: str) -> None:
    """Append ``args`` to the command line as the carrier of ``setting``."""
    cmd.argv += list(args)
    previous = cmd.applied.get(setting)
    text = shlex.join(args)
    cmd.applied[setting] = f"{previous} {text}" if previous else text


def not_applicable(cmd: LaunchCommand, setting: str, why: str) -> None:
    """Record that the backend has no flag for ``setting``, and why."""
    cmd.applied[setting] = NA + why
