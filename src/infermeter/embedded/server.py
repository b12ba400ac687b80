"""Run the embedded engine: ``llama-server`` serving a model on loopback.

``EmbeddedServer`` starts the binary from ``ensure_llama_server()`` in its own process
group, waits for ``GET /health`` to answer 200, and stops the whole group on exit
(SIGTERM, then SIGKILL).  Flags always passed: ``--metrics`` (Prometheus ``/metrics``),
``--alias <model_id>`` (the ``model`` name clients send and ``/v1/models`` lists),
``--no-webui``, ``--parallel N`` + ``--cont-batching`` (N continuous-batching slots),
``--ctx-size`` and ``--kv-unified``/``--no-kv-unified`` explicitly (see below), and
``--threads`` when given.  ``cpus`` pins the server (all its threads) to those cores.

Context and slots (llama.cpp of llama-cpp-python 0.3.36): ``--ctx-size`` is the total
KV cache in tokens.  Without a unified KV cache (the default once ``--parallel`` is
given) it is split evenly: each slot gets ``ctx_size / parallel`` (rounded up to a
multiple of 256) and attention per sequence only looks at its own cells.  With
``kv_unified=True`` all slots share one pool and any one of them may use all of it,
but attention then spans the shared pool.  Either way a slot never exceeds the
model's training context.  ``slot_ctx`` reports what each slot got (from ``/props``).

Server behaviour checked against this build (llama.cpp ``0.5.0-dev (build 1, commit
0c1e570)``) with the ``tiny`` model; tests/integration/embedded/test_engine.py keeps each checked:

* ``ignore_eos: true`` + ``max_tokens: N`` gives exactly N completion tokens
  (``usage.completion_tokens == N``, ``finish_reason == "length"``), on
  ``/v1/completions`` and ``/v1/chat/completions``.  Without ``ignore_eos`` a generated
  EOS ends the reply (``finish_reason == "stop"``) and counts as one completion token
  although it adds no text.
* ``min_tokens`` is accepted and silently ignored: with EOS forced by ``logit_bias``,
  ``min_tokens: 20`` still yields 1 completion token.
* a repeated prompt reuses the slot's cached prefix: the response's ``timings.cache_n``
  counts reused prompt tokens and ``timings.prompt_n`` only the evaluated ones (an
  identical prompt still re-evaluates its last token: ``cache_n = n - 1``,
  ``prompt_n = 1``; ``usage.prompt_tokens_details.cached_tokens`` says the same), unless
  the request sends ``cache_prompt: false`` (then ``cache_n == 0``).
  ``usage.prompt_tokens`` always counts the whole prompt.  Slots are picked by prompt
  similarity (``--slot-prompt-similarity``, default 0.1), so repeats land on the slot
  holding their prefix.
* streamed responses with ``stream_options: {"include_usage": true}`` end with a chunk
  whose ``choices`` is ``[]`` and which carries ``usage`` (and llama.cpp's ``timings``),
  then ``data: [DONE]``; the ``finish_reason`` comes in the chunk before it, with an
  empty ``delta``.  Without ``include_usage`` no chunk carries ``usage``.
* ``/tokenize`` with ``{"content": text}`` adds no BOS (the generated models set
  ``add_bos_token = false``) and parses special-token text like ``<|eos|>`` as the
  special token, as the ``tokenizers`` library does: ids equal the client tokenizer's
  ``encode(text)`` (checked on ~5500 texts: 1500 stdlib sources, random Unicode, odd
  whitespace), and ``usage.prompt_tokens`` equals the client count of the prompt (chat:
  of the prompt the chat template renders; ``/apply-template`` shows the same text).
* every response carries ``timings`` (``prompt_ms``, ``predicted_ms``, ...), the
  server-side view of prefill and decode time; ``/metrics`` serves ``llamacpp:*``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infermeter.embedded.build import Progress, build_info, ensure_llama_server, llama_server_version
from infermeter.embedded.models import ModelFiles
from infermeter.errors import EngineError, UserError
from infermeter.process import free_port, http_get, parent_death_signal, stop_group, terminate

DEFAULT_SLOT_CTX = 4096
MAX_DEFAULT_CTX = 65536

# loopback requests must never go through an HTTP proxy from the environment
_HELP_CACHE: dict[str, str] = {}


def default_ctx_size(model: ModelFiles, parallel: int) -> int:
    """Total KV tokens when none are asked for: 4096 per slot (less if the model's
    training context is shorter), at most 65536 in all unless one slot needs more."""
    per_slot = min(model.n_ctx_train or DEFAULT_SLOT_CTX, DEFAULT_SLOT_CTX)
    return max(per_slot, min(per_slot * parallel, MAX_DEFAULT_CTX))


class EmbeddedServer:
    """``llama-server`` serving ``model``; use as a context manager or start()/stop()."""

    def __init__(
        self,
        model: ModelFiles,
        *,
        parallel: int = 1,
        ctx_size: int | None = None,
        threads: int | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        log_path: str | Path | None = None,
        kv_unified: bool = False,
        binary: str | Path | None = None,
        startup_timeout: float = 120.0,
        progress: Progress | None = None,
        cpus: Sequence[int] | None = None,
    ) -> None:
        if parallel < 1:
            raise UserError(f"parallel must be at least 1, got {parallel}", "pass --parallel 1 or more")
        if threads is not None and threads < 1:
            raise UserError(f"threads must be at least 1, got {threads}", "pass --threads 1 or more")
        self.model = model
        self.parallel = parallel
        self.ctx_size = ctx_size if ctx_size is not None else default_ctx_size(model, parallel)
        if self.ctx_size < parallel * 256 and not kv_unified:
            raise UserError(f"ctx_size {self.ctx_size} leaves under 256 tokens for each of {parallel} slots",
                            f"use a ctx_size of at least {parallel * 256}")
        self.threads = threads
        self.cpus = sorted(cpus) if cpus else None  # None: wherever the scheduler puts it
        self.host = host
        self.port = port
        self._fixed_port = port is not None
        self.extra_args = list(extra_args)
        self.kv_unified = kv_unified
        self.startup_timeout = startup_timeout
        self._binary = Path(binary) if binary is not None else None
        self._progress = progress
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self.command: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: Any = None
        self._version: str | None = None
        self._props: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    # -- public properties ------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise EngineError("the embedded server has not been started", "call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def binary(self) -> Path:
        if self._binary is None:
            self._binary = ensure_llama_server(self._progress)
        return self._binary

    @property
    def version(self) -> str:
        """llama-server's own version string (e.g. ``"1 (abc1234)"``)."""
        if self._version is None:
            self._version = llama_server_version(self.binary)
        return self._version

    def provenance(self) -> dict[str, Any]:
        """What ran: binary, its version and build stamp, argv, model file and key."""
        return {
            "engine": "llama.cpp llama-server",
            "binary": str(self.binary),
            "version": self.version,
            "build": build_info(self.binary),
            "command": list(self.command),
            "model": {"name": self.model.name, "model_id": self.model_id, "gguf": str(self.model.gguf),
                      "key": self.model.key, "n_params": self.model.n_params},
            "parallel": self.parallel,
            "ctx_size": self.ctx_size,
            "kv_unified": self.kv_unified,
            "cpus": self.cpus,
        }

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def slot_ctx(self) -> int:
        """The context (tokens) each slot got, as the server reports it."""
        props = self._props if self._props is not None else self.props()
        settings = props.get("default_generation_settings") or {}
        return int(settings.get("n_ctx") or props.get("n_ctx") or 0)

    def props(self) -> dict[str, Any]:
        """``GET /props``: the server's settings (slots, context, chat template, ...)."""
        status, body = http_get(self.base_url + "/props", timeout=10.0)
        if status != 200:
            raise EngineError(f"GET {self.base_url}/props answered HTTP {status}",
                              f"see the server log {self.log_path}")
        try:
            data = json.loads(body)
        except ValueError:
            raise EngineError(f"GET {self.base_url}/props did not return JSON",
                              f"see the server log {self.log_path}") from None
        self._props = data
        return data

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> "EmbeddedServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "EmbeddedServer":
        """Start the server and wait until it is ready; EngineError if it does not get there."""
        with self._lock:
            if self.running:
                return self
            binary = self.binary
            if not self.model.gguf.is_file():
                raise EngineError(f"model file {str(self.model.gguf)!r} does not exist",
                                  "delete the model's cache folder and run again to regenerate it")
            if self.log_path is None:
                fd, name = tempfile.mkstemp(prefix=f"llama-server-{self.model_id}-", suffix=".log")
                os.close(fd)
                self.log_path = Path(name)
            attempts = 1 if self._fixed_port else 3
            for attempt in range(attempts):
                if not self._fixed_port:
                    self.port = free_port(self.host)
                try:
                    self._launch(binary)
                    self._wait_ready()
                    return self
                except _PortTaken:
                    self._stop_locked()
                    if attempt == attempts - 1:
                        raise EngineError(f"port {self.port} on {self.host} is already in use "
                                          f"(log: {self.log_path})",
                                          "pick another port or leave port unset") from None
                except BaseException:
                    self._stop_locked()
                    raise
            return self  # pragma: no cover

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server's whole process group: SIGTERM, then SIGKILL.  Idempotent."""
        with self._lock:
            self._stop_locked(timeout)

    # -- internals ----------------------------------------------------------------------

    def _argv(self, binary: Path) -> list[str]:
        argv = [
            str(binary),
            "--model", str(self.model.gguf),
            "--alias", self.model_id,
            "--host", self.host,
            "--port", str(self.port),
            "--parallel", str(self.parallel),
            "--ctx-size", str(self.ctx_size),
            "--metrics",
        ]
        help_text = _help_text(binary)
        if "--cont-batching" in help_text:
            argv.append("--cont-batching")
        if "--kv-unified" in help_text:
            argv.append("--kv-unified" if self.kv_unified else "--no-kv-unified")
        if "--no-webui" in help_text:
            argv.append("--no-webui")
        if self.threads is not None:
            argv += ["--threads", str(self.threads)]
        return argv + self.extra_args

    def _launch(self, binary: Path) -> None:
        self.command = self._argv(binary)
        assert self.log_path is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = open(self.log_path, "ab")
        self._log_handle.write(f"$ {' '.join(self.command)}\n".encode())
        self._log_handle.flush()
        try:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends all of it
                preexec_fn=_preexec(self.cpus),
            )
        except OSError as exc:
            raise EngineError(f"cannot start {binary}: {exc.strerror or exc}",
                              "check the llama-server binary or unset INFERMETER_LLAMA_SERVER") from None
        self._props = None
        # stop it even if this object is dropped without stop(), or at interpreter exit
        self._finalizer = weakref.finalize(self, terminate, self._proc)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        url = self.base_url + "/health"
        while True:
            rc = self._proc.poll()
            if rc is not None:
                reason = self._log_reason()
                if not self._fixed_port and re.search(r"bind|address already in use", reason, re.I):
                    raise _PortTaken()
                raise EngineError(
                    f"llama-server exited with status {rc} while starting: {reason} (log: {self.log_path})",
                    "fix the cause named in the log (model file, flags, memory) and retry",
                )
            status, _ = http_get(url, timeout=2.0)
            if status == 200:
                return
            if time.monotonic() > deadline:
                reason = self._log_reason()
                raise EngineError(
                    f"llama-server was not ready within {self.startup_timeout:.0f} s: {reason} "
                    f"(log: {self.log_path})",
                    "raise the startup timeout, or use a smaller model or ctx_size",
                )
            time.sleep(0.1)

    def _log_reason(self) -> str:
        """One line summarizing the last ~20 lines of the server log."""
        try:
            assert self.log_path is not None
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
        except (OSError, AssertionError):
            return "no log"
        lines = [ln.strip() for ln in lines if ln.strip()]
        # the first specific complaint, not the generic "exiting due to ..." that follows it
        candidates = [ln for ln in lines
                      if re.search(r"error|failed|couldn't|cannot|invalid|unknown|not found|out of memory", ln, re.I)
                      and not re.search(r"exiting due to|cleaning up", ln, re.I)]
        for line in candidates:
            if re.search(r"error", line, re.I):
                return line[:300]
        if candidates:
            return candidates[0][:300]
        return lines[-1][:300] if lines else "empty log"

    def _stop_locked(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is not None:
            stop_group(proc, timeout)  # and stragglers in its group (none expected: llama-server does not fork)
            self._proc = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


class _PortTaken(Exception):
    pass


def _preexec(cpus: Sequence[int] | None):
    """In the child before exec: die with the parent, and run on ``cpus`` (every thread
    llama-server starts inherits the affinity)."""
    die_with_parent = parent_death_signal()
    if not cpus:
        return die_with_parent
    cores = set(cpus)

    def preexec() -> None:
        if die_with_parent is not None:
            die_with_parent()
        os.sched_setaffinity(0, cores)

    return preexec


def _help_text(binary: Path) -> str:
    key = str(binary)
    if key not in _HELP_CACHE:
        try:
            out = subprocess.run([key, "--help"], capture_output=True, text=True, timeout=60, check=False)
            _HELP_CACHE[key] = (out.stdout or "") + (out.stderr or "")
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EngineError(f"cannot run {key} --help: {exc}",
                              "check the llama-server binary or unset INFERMETER_LLAMA_SERVER") from None
    return _HELP_CACHE[key]
