"""``LocalServer``: start a server under test as a local process, wait until it answers,
capture its log, stop its whole process group.

    with LocalServer("vllm", ServerSettings(model="Qwen/Qwen3-0.6B")) as server:
        execute_run(RunSpec.from_flat(dict(**server.run_fields(), num_prompts=100)))

A sweep starts A, runs its cells, stops A, starts B.  The process runs in its own
process group (``start_new_session``); ``stop()`` sends SIGTERM to the group, waits,
then SIGKILL, so workers the server forked (TP ranks, TGI shards, SGLang schedulers)
go with it.  The same helpers as the embedded engine (``infermeter.embedded.server``) do
the signalling, the loopback HTTP probes and the parent-death signal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from infermeter.errors import UserError, safe_text
from infermeter.process import free_port, http_get, parent_death_signal, stop_group, terminate
from infermeter.backends import Profile, get_profile
from infermeter.backends.launch import LaunchCommand
from infermeter.backends.settings import ServerSettings, Vendor


class ServerLaunchError(UserError):
    """The server under test could not be started (exit code 4, like the embedded engine)."""

    exit_code = 4


def detect_vendor() -> Vendor:
    """NVIDIA when ``nvidia-smi`` lists a GPU, AMD when ``/dev/kfd`` exists, else CPU."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
            if out.returncode == 0 and "GPU" in out.stdout:
                return Vendor.NVIDIA
        except (OSError, subprocess.TimeoutExpired):
            pass
    if os.path.exists("/dev/kfd"):
        return Vendor.AMD
    return Vendor.CPU


class LocalServer:
    """A server under test on this machine; a context manager, or start()/stop()."""

    def __init__(self, profile: Profile | str, settings: ServerSettings, *, vendor: Vendor | str | None = None,
                 host: str = "127.0.0.1", executable: str | Path | None = None,
                 log_path: str | Path | None = None, startup_timeout: float = 900.0,
                 stop_timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.settings = settings
        self.vendor = Vendor(vendor) if vendor is not None else detect_vendor()
        if self.vendor not in self.profile.vendors:
            raise UserError(f"{self.profile.title} cannot run on {self.vendor.value} here",
                            f"run it where a {' or '.join(v.value for v in self.profile.vendors)} device is, "
                            "or pass --vendor")
        self.host = host
        self.executable = str(executable) if executable is not None else None
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_env = dict(env or {})
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self.command: LaunchCommand | None = None
        self.started_at: float | None = None
        self.ready_after_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None
        self._info: dict[str, Any] | None = None
        self._version: str | None = None

    # -- properties ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.settings.port}"

    @property
    def model_name(self) -> str:
        return self.profile.served_name(self.settings)

    @property
    def metrics_url(self) -> str | None:
        return self.base_url + self.profile.metrics_path if self.profile.metrics_path else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def run_fields(self) -> dict[str, Any]:
        """RunSpec fields that point a run at this server with the requests it accepts."""
        fields = self.profile.request_fields()
        fields.update(base_url=self.base_url, model=self.model_name)
        if self.settings.tokenizer:
            fields["tokenizer"] = self.settings.tokenizer
        return fields

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> "LocalServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "LocalServer":
        with self._lock:
            if self.running:
                return self
            _check_port_free(self.host, self.settings.port)
            metrics_port = free_port(self.host) if self.profile.separate_metrics_port else None
            self.command = self.profile.command(self.settings, self.vendor, host=self.host,
                                                executable=self._resolve_executable(), metrics_port=metrics_port)
            if self.log_path is None:
                fd, name = tempfile.mkstemp(prefix=f"infermeter-{self.profile.name}-", suffix=".log")
                os.close(fd)
                self.log_path = Path(name)
            try:
                self._launch()
                self._wait_ready()
            except BaseException:
                self._stop_locked()
                raise
            return self

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM the server's process group, wait, then SIGKILL.  Idempotent."""
        with self._lock:
            self._stop_locked(self.stop_timeout if timeout is None else timeout)

    def poll(self) -> int | None:
        """The server's exit status if it has exited, else None (also before it was started)."""
        return self._proc.poll() if self._proc is not None else None

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the server exits (or ``timeout``); its exit status or None."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    # -- what it answers ----------------------------------------------------------------

    def info(self) -> dict[str, Any] | None:
        """The server's version/info endpoint as JSON (None when it has none)."""
        if self._info is not None or not self.profile.info_path:
            return self._info
        status, body = http_get(self.base_url + self.profile.info_path, timeout=10.0)
        if status == 200:
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if isinstance(data, dict):
                self._info = data
        return self._info

    def version(self) -> str:
        """The server's own version: from its info endpoint, else ``<program> --version``."""
        if self._version is None:
            from infermeter.servers.provenance import version_from_info

            self._version = version_from_info(self.profile.name, self.info()) or self.program_version() or "unknown"
        return self._version

    def provenance(self) -> dict[str, Any]:
        from infermeter.servers.provenance import provenance

        return provenance(self)

    # -- internals ----------------------------------------------------------------------

    def _resolve_executable(self) -> str | None:
        if self.executable is not None:
            return self.executable
        program = self.profile.program[0]
        if shutil.which(program) is None:
            if self.profile.name == "llama.cpp":  # the embedded engine's build of llama-server
                from infermeter.embedded.build import ensure_llama_server

                self.executable = str(ensure_llama_server())
                return self.executable
            raise ServerLaunchError(f"{program!r} is not on PATH: {self.profile.title} is not installed here",
                                    "install it, pass --executable PATH, or use --print docker / --print dstack")
        return None

    def program_version(self) -> str | None:
        if not self.profile.version_args or self.command is None:
            return None
        argv = [self.command.argv[0], *self.profile.version_args]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                                 stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return None
        text = (out.stdout or "") + "\n" + (out.stderr or "")
        for line in text.splitlines():
            line = line.strip()
            if re.search(r"\d+\.\d+|version|build", line, re.I) and len(line) < 200:
                return safe_text(line, 120)
        return None

    def _launch(self) -> None:
        assert self.command is not None and self.log_path is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._log.write(f"$ {self.command.shell}\n".encode())
        self._log.flush()
        env = dict(os.environ)
        env.update(self.command.env)
        env.update(self.extra_env)
        self.started_at = time.time()
        try:
            self._proc = subprocess.Popen(
                self.command.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, preexec_fn=parent_death_signal())
        except OSError as exc:
            raise ServerLaunchError(f"cannot start {self.command.argv[0]}: {exc.strerror or exc}",
                                    "check the executable (--executable) and that it is installed") from None
        self._finalizer = weakref.finalize(self, terminate, self._proc)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        t0 = time.monotonic()
        deadline = t0 + self.startup_timeout
        pending = list(self.profile.ready_paths)
        while pending:
            rc = self._proc.poll()
            if rc is not None:
                raise ServerLaunchError(
                    f"{self.profile.title} exited with status {rc} while starting: {log_tail(self.log_path)} "
                    f"(log: {self.log_path})",
                    "fix the cause named in the log (flags, model, memory) and retry")
            status, body = http_get(self.base_url + pending[0], timeout=5.0)
            if status == 200 and self._answers(pending[0], body):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise ServerLaunchError(
                    f"{self.profile.title} did not answer {pending[0]} within {self.startup_timeout:.0f} s: "
                    f"{log_tail(self.log_path)} (log: {self.log_path})",
                    "raise --startup-timeout (large models load slowly) or fix the cause in the log")
            time.sleep(0.25)
        self.ready_after_s = time.monotonic() - t0

    def _answers(self, path: str, body: bytes) -> bool:
        if path != "/v1/models":
            return True
        try:
            data = json.loads(body)
        except ValueError:
            return False
        return isinstance(data, dict) and isinstance(data.get("data"), list)

    def _stop_locked(self, timeout: float = 30.0) -> None:
        proc = self._proc
        if proc is not None:
            stop_group(proc, timeout)  # and children left in its group
            self._proc = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log is not None:
            self._log.close()
            self._log = None


def embedded_model(settings: ServerSettings) -> ServerSettings:
    """llama.cpp ``model: tiny`` (``1b``, ``gemma3-270m``): the embedded engine's generated GGUF, served
    under its model id, with its tokenizer; any other model (a path, a repository) is left as given."""
    from infermeter.embedded.models import MODELS, ensure_model

    if settings.model not in MODELS or Path(settings.model).exists():
        return settings
    files = ensure_model(settings.model)
    return settings.model_copy(update={
        "model": str(files.gguf), "served_model_name": settings.served_model_name or files.model_id,
        "tokenizer": settings.tokenizer or (str(files.tokenizer_dir) if files.tokenizer_dir else None)})


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # as servers bind: SO_REUSEADDR ignores TIME_WAIT leftovers of a server just stopped,
        # but still fails while anything listens there
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise ServerLaunchError(f"port {port} on {host} is already in use",
                                    "stop what listens there or pick another --port") from None


_INTERESTING = re.compile(r"error|exception|failed|cannot|can't|couldn't|invalid|unknown|unrecognized|not found|"
                          r"no such|out of memory|oom|refused|denied|traceback", re.I)


def log_tail(path: Path | str | None, lines: int = 3) -> str:
    """The last log lines that say what went wrong, as one line."""
    if path is None:
        return "no log"
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return "no log"
    rows = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if ln.strip()]
    rows = [ln for ln in rows if not ln.startswith("$ ")] or rows
    if not rows:
        return "empty log"
    flagged = [ln for ln in rows[-40:] if _INTERESTING.search(ln)]
    chosen = flagged[-lines:] if flagged else rows[-lines:]
    return safe_text(" | ".join(chosen), 400)
