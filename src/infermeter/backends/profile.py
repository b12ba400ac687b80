"""``Profile``: a backend's launch data (``BackendSpec.launch``) with the rendering around it.

``Profile.command(settings, vendor)`` renders the exact argv (plus environment) that
starts the server with ``ServerSettings``; every memory and batching setting is passed
explicitly, and ``LaunchCommand.applied`` records, per setting, the flags that carried
it or why the backend has no such setting.  The servers layer (local processes, docker,
dstack, lint) works with profiles; ``infermeter.backends.get_profile`` finds one.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from infermeter.backends.base import BackendSpec, Launch, flag_value
from infermeter.backends.launch import LaunchCommand
from infermeter.backends.settings import ServerSettings, Vendor
from infermeter.errors import UserError


class Profile:
    """How one backend is launched and probed.  The launch fields (``program``,
    ``default_port``, ``info_path``, ``tp_flags``, ...) read through to ``spec.launch``."""

    def __init__(self, spec: BackendSpec) -> None:
        if spec.launch is None:
            raise ValueError(f"backend {spec.name} has no launch profile")
        self.spec = spec
        self.launch: Launch = spec.launch

    def __getattr__(self, attr: str) -> Any:  # the launch data: program, default_port, ...
        if attr in ("spec", "launch"):
            raise AttributeError(attr)
        return getattr(self.launch, attr)

    def __repr__(self) -> str:
        return f"Profile({self.name!r})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def backend(self) -> str:
        """The backend name requests are shaped for (the same as the profile's)."""
        return self.spec.name

    @property
    def aliases(self) -> tuple[str, ...]:
        return self.spec.aliases + self.launch.aliases

    def served_name(self, settings: ServerSettings) -> str:
        """The model name clients send to this server."""
        if self.launch.served_name is not None:
            return self.launch.served_name(settings)
        return settings.name

    # -- what the backend accepts ------------------------------------------------------

    @property
    def ignore_eos(self) -> bool:
        return self.spec.ignore_eos

    @property
    def endpoint(self) -> str:
        return self.spec.default_endpoint

    @property
    def fixed_length(self) -> str:
        """How a fixed output length is obtained (ignore_eos + max_tokens, or none)."""
        return self.spec.fixed_length_method()

    def image(self, vendor: Vendor) -> str | None:
        return self.spec.image(vendor)

    def request_fields(self) -> dict[str, Any]:
        """RunSpec fields that shape requests for this server."""
        return {"backend": self.backend, "endpoint": self.endpoint, "ignore_eos": self.ignore_eos}

    # -- rendering ----------------------------------------------------------------------

    def command(self, settings: ServerSettings, vendor: Vendor | str = Vendor.NVIDIA, *,
                host: str = "0.0.0.0", executable: str | Path | None = None, container: bool = False,
                metrics_port: int | None = None) -> LaunchCommand:
        """The launch command for ``settings`` on ``vendor``.

        ``executable`` replaces the program's first word (a built ``llama-server``, a venv's
        ``vllm`` or ``python3``); ``container`` renders for the profile's image (paths
        inside the container)."""
        vendor = Vendor(vendor)
        if vendor not in self.launch.vendors:
            raise UserError(f"{self.title} has no {vendor.value} launch profile",
                            f"use --vendor {' or --vendor '.join(v.value for v in self.launch.vendors)}")
        if executable is not None:  # replaces the program, keeps its subcommand (vllm serve, -m sglang...)
            program = [str(executable), *self.launch.program[1:]]
        elif container:
            program = list(self.launch.container_program or self.launch.program)
        else:
            program = list(self.launch.program)
        cmd = LaunchCommand(self.name, vendor, program, host, settings.port,
                            env=dict(settings.env), secrets=list(settings.secrets))
        self.launch.render(cmd, settings, vendor, container, metrics_port)
        cmd.argv += list(settings.extra_args)
        if settings.extra_args:
            cmd.applied["extra_args"] = shlex.join(settings.extra_args)
        return cmd

    flag_value = staticmethod(flag_value)
