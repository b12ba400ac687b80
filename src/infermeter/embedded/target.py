"""The embedded default target: a llama-server built and started by infermeter."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from infermeter.embedded.placement import Placement, choose, pin_current_thread, restore, usable_cpus


class EmbeddedEngine:
    """Builds (once), generates the model (once), starts and stops llama-server."""

    def __init__(self, model: str = "tiny", *, parallel: int = 8, ctx_size: int | None = None,
                 progress: Callable[[str, int | None, int | None], None] | None = None,
                 log: Callable[[str], None] = lambda m: None, log_path: Path | None = None,
                 cpus: str = "auto") -> None:
        self.model_name = model
        self.cpus = cpus  # --engine-cpus: auto, off or a list of cores (embedded/placement.py)
        self.parallel = parallel
        self.ctx_size = ctx_size
        self.progress = progress
        self.log = log
        self.server_log_path = log_path  # None: a temporary file named in the result
        self._server: Any = None
        self._files: Any = None
        self.placement: Placement | None = None
        self._restore: set[int] | None = None

    where = "embedded"

    def __enter__(self) -> "EmbeddedEngine":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.running

    def start(self) -> "EmbeddedEngine":
        """Build (once), generate the model (once) and start llama-server; returns once it answers."""
        if self.running:
            return self
        from infermeter.embedded.build import ensure_llama_server
        from infermeter.embedded.models import ensure_model
        from infermeter.embedded.server import EmbeddedServer

        binary = ensure_llama_server(self.progress)
        self._files = ensure_model(self.model_name, progress=self.progress)
        # A server that takes every core delays the client's timestamps, and the run
        # would rightly be flagged client-bound: on few cores the two get their own
        # (embedded/placement.py), elsewhere the engine leaves one core's worth free.
        self.placement = choose(usable_cpus(), self.cpus)
        self.log(f"starting embedded llama-server with {self._files.model_id} ({self.parallel} slots); "
                 f"{self.placement.why}")
        self._server = EmbeddedServer(binary=binary, model=self._files, parallel=self.parallel,
                                      ctx_size=self.ctx_size, threads=self.placement.threads,
                                      cpus=self.placement.engine_cpus, log_path=self.server_log_path)
        self._server.start()
        self._restore = pin_current_thread(self.placement.client_cpus)  # the client's event loop
        self.log(f"embedded llama-server ready at {self._server.base_url}")
        return self

    def stop(self) -> None:
        restore(self._restore)
        self._restore = None
        if self._server is not None:
            self._server.stop()

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def model_id(self) -> str:
        return self._files.model_id

    @property
    def tokenizer_dir(self) -> Path:
        return self._files.tokenizer_dir

    @property
    def log_path(self) -> Path:
        return self._server.log_path

    def provenance(self) -> dict[str, Any]:
        return {"where": self.where, **self.describe()}

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "llama.cpp llama-server",
            "version": getattr(self._server, "version", None),
            "model": self._files.model_id,
            "gguf": str(self._files.gguf),
            "n_params": getattr(self._files, "n_params", None),
            "parallel": self.parallel,
            "threads": self._server.threads,
            "placement": self.placement.to_dict() if self.placement else None,
            "command": [str(a) for a in self._server.command],
            "log": str(self._server.log_path),
        }
