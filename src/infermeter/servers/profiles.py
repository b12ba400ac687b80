"""Launch profiles: how each server is started, and what it answers where.

One profile per backend.  ``Profile.command(settings, vendor)`` renders the exact
argv (plus environment) that starts the server with ``ServerSettings``; every memory
and batching setting is passed explicitly, and ``LaunchCommand.applied`` records, per
setting, the flags that carried it or why the backend has no such setting.

Flag names were checked against each project's own documentation/source:

* vLLM (``vllm serve``, engine args docs; ``vllm/config/cache.py``):
  ``--tensor-parallel-size``, ``--max-model-len``, ``--gpu-memory-utilization``,
  ``--max-num-seqs``, ``--max-num-batched-tokens``, ``--enable-prefix-caching`` /
  ``--no-enable-prefix-caching`` (argparse BooleanOptionalAction), ``--served-model-name``,
  ``--dtype``, ``--revision``, ``--tokenizer``.  ``/health``, ``/version``, ``/metrics``.
* TGI (``docs/source/reference/launcher.md``, ``launcher/src/main.rs`` v3.3):
  ``--model-id``, ``--num-shard``, ``--max-input-tokens`` (< ``--max-total-tokens``),
  ``--max-total-tokens``, ``--max-batch-prefill-tokens``, ``--cuda-memory-fraction``,
  ``--max-concurrent-requests``, ``--hostname``, ``--port``, ``--prometheus-port``,
  ``--dtype`` (float16|bfloat16), ``--revision``; prefix caching is the environment
  variable ``PREFIX_CACHING`` (read by the launcher and the Python shards).
  ``--max-batch-size`` is ignored when chunked prefill is on (the default), so the
  concurrent-sequence limit is ``--max-concurrent-requests``: TGI answers requests over
  it with HTTP 429 instead of queueing them.  ``/health``, ``/info``, ``/metrics``.
* SGLang (``docs/advanced_features/server_arguments.md``): ``--model-path``,
  ``--tp-size``, ``--context-length``, ``--mem-fraction-static``, ``--max-running-requests``,
  ``--chunked-prefill-size``, ``--disable-radix-cache``, ``--enable-metrics``,
  ``--enable-cache-report``, ``--served-model-name``, ``--dtype``, ``--revision``,
  ``--tokenizer-path``.  ``/health``, ``/get_server_info`` (``version``), ``/metrics``.
* llama.cpp (``llama-server --help``): ``--model``/``--hf-repo``, ``--alias``,
  ``--parallel``, ``--ctx-size`` (the total KV cache, split evenly across the parallel
  slots, so it is ``max_model_len × max_batch``), ``--batch-size``, ``--ubatch-size``,
  ``--n-gpu-layers``, ``--split-mode``, ``--cont-batching``, ``--cache-prompt`` /
  ``--no-cache-prompt``, ``--metrics``.  ``/health``, ``/props``, ``/metrics``.
* transformers serve (``transformers serve --help``, transformers 5.24): positional model
  (``id@revision``), ``--continuous-batching``, ``--cb-max-batch-tokens``,
  ``--cb-max-memory-percent``, ``--dtype``, ``--device``, ``--host``, ``--port``.  It has no
  flag for the context length, the number of concurrent sequences, tensor parallelism or
  prefix caching, and rejects unknown request fields such as ``ignore_eos`` (HTTP 422).
  ``/health``, ``/v1/models``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infermeter.clients.backends import get_backend
from infermeter.errors import UserError
from infermeter.servers.images import IMAGES, TRANSFORMERS_VERSION
from infermeter.servers.settings import ServerSettings, Vendor

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


@dataclass(frozen=True)
class Profile:
    """How one backend is launched and probed."""

    name: str
    title: str
    backend: str  # infermeter.clients.backends name
    program: tuple[str, ...]  # the command that starts it (argv prefix)
    default_port: int  # the port the server uses when none is given
    info_path: str | None  # version/info endpoint
    metrics_path: str | None
    metrics_flag: str | None  # the flag that turns /metrics on (None: always on)
    prefix_caching_on: str
    prefix_caching_off: str
    vendors: tuple[Vendor, ...]
    ready_paths: tuple[str, ...] = ("/health", "/v1/models")
    port_flags: tuple[str, ...] = ("--port",)
    tp_flags: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    container_program: tuple[str, ...] = ()  # the program inside the image (default: ``program``)
    image_entrypoint: bool = False  # the image's ENTRYPOINT starts the server: docker passes only args
    version_args: tuple[str, ...] = ()  # ``<program[0]> <version_args>`` prints the version

    def served_name(self, settings: ServerSettings) -> str:
        """The model name clients send to this server."""
        return settings.name

    # -- what the backend accepts ------------------------------------------------------

    @property
    def ignore_eos(self) -> bool:
        return get_backend(self.backend).ignore_eos

    @property
    def endpoint(self) -> str:
        return get_backend(self.backend).default_endpoint

    @property
    def fixed_length(self) -> str:
        """How a fixed output length is obtained (ignore_eos + max_tokens, or none)."""
        backend = get_backend(self.backend)
        return backend.fixed_length_method("tgi" if self.name == "tgi" else "openai")

    def image(self, vendor: Vendor) -> str | None:
        return IMAGES.get(self.name, {}).get(vendor)

    def request_fields(self) -> dict[str, Any]:
        """RunSpec fields that shape requests for this server."""
        return {"backend": self.backend, "endpoint": self.endpoint, "ignore_eos": self.ignore_eos}

    # -- rendering ----------------------------------------------------------------------

    def command(self, settings: ServerSettings, vendor: Vendor | str = Vendor.NVIDIA, *,
                host: str = "0.0.0.0", executable: str | Path | None = None, container: bool = False,
                metrics_port: int | None = None) -> LaunchCommand:
        """The launch command for ``settings`` on ``vendor``.

        ``executable`` replaces the program's first word (a built ``llama-server``, a venv's
        ``vllm`` or ``python3``); ``container``
        renders for the profile's image (paths inside the container)."""
        vendor = Vendor(vendor)
        if vendor not in self.vendors:
            raise UserError(f"{self.title} has no {vendor.value} launch profile",
                            f"use --vendor {' or --vendor '.join(v.value for v in self.vendors)}")
        if executable is not None:  # replaces the program, keeps its subcommand (vllm serve, -m sglang...)
            program = [str(executable), *self.program[1:]]
        elif container:
            program = list(self.container_program or self.program)
        else:
            program = list(self.program)
        cmd = LaunchCommand(self.name, vendor, program, host, settings.port,
                            env=dict(settings.env), secrets=list(settings.secrets))
        self._render(cmd, settings, vendor, container, metrics_port)
        cmd.argv += list(settings.extra_args)
        if settings.extra_args:
            cmd.applied["extra_args"] = shlex.join(settings.extra_args)
        return cmd

    def _render(self, cmd: LaunchCommand, s: ServerSettings, vendor: Vendor, container: bool,
                metrics_port: int | None) -> None:  # pragma: no cover - each profile overrides
        raise NotImplementedError

    def flag_value(self, argv: list[str], flags: tuple[str, ...]) -> str | None:
        """The value given to the first of ``flags`` in ``argv`` (``--f v`` or ``--f=v``)."""
        for i, arg in enumerate(argv):
            for flag in flags:
                if arg == flag and i + 1 < len(argv):
                    return argv[i + 1]
                if arg.startswith(flag + "="):
                    return arg.split("=", 1)[1]
        return None


def _add(cmd: LaunchCommand, setting: str, *args: str) -> None:
    cmd.argv += list(args)
    previous = cmd.applied.get(setting)
    text = shlex.join(args)
    cmd.applied[setting] = f"{previous} {text}" if previous else text


def _na(cmd: LaunchCommand, setting: str, why: str) -> None:
    cmd.applied[setting] = NA + why


class VllmProfile(Profile):
    def _render(self, cmd, s, vendor, container, metrics_port):
        _add(cmd, "model", s.model)
        _add(cmd, "host", "--host", cmd.host)
        _add(cmd, "port", "--port", str(s.port))
        _add(cmd, "served_model_name", "--served-model-name", s.name)
        _add(cmd, "tensor_parallel", "--tensor-parallel-size", str(s.tensor_parallel))
        _add(cmd, "max_model_len", "--max-model-len", str(s.max_model_len))
        _add(cmd, "memory_fraction", "--gpu-memory-utilization", str(s.memory_fraction))
        _add(cmd, "max_batch", "--max-num-seqs", str(s.max_batch))
        _add(cmd, "max_batched_tokens", "--max-num-batched-tokens", str(s.max_batched_tokens))
        _add(cmd, "prefix_caching", self.prefix_caching_on if s.prefix_caching else self.prefix_caching_off)
        if s.dtype:
            _add(cmd, "dtype", "--dtype", s.dtype)
        if s.revision:
            _add(cmd, "revision", "--revision", s.revision)
        if s.tokenizer:
            _add(cmd, "tokenizer", "--tokenizer", s.tokenizer)
        cmd.notes.append("/metrics is always served on the API port")


class TgiProfile(Profile):
    def _render(self, cmd, s, vendor, container, metrics_port):
        max_input = s.max_model_len - 1
        prefill = max(s.max_batched_tokens, max_input)
        _add(cmd, "model", "--model-id", s.model)
        _add(cmd, "host", "--hostname", cmd.host)
        _add(cmd, "port", "--port", str(s.port))
        cmd.metrics_port = metrics_port if metrics_port is not None else s.port + 1000 if s.port < 64535 else 9000
        cmd.argv += ["--prometheus-port", str(cmd.metrics_port)]
        _add(cmd, "tensor_parallel", "--num-shard", str(s.tensor_parallel))
        _add(cmd, "max_model_len", "--max-total-tokens", str(s.max_model_len), "--max-input-tokens", str(max_input))
        _add(cmd, "memory_fraction", "--cuda-memory-fraction", str(s.memory_fraction))
        _add(cmd, "max_batch", "--max-concurrent-requests", str(s.max_batch))
        _add(cmd, "max_batched_tokens", "--max-batch-prefill-tokens", str(prefill))
        if prefill != s.max_batched_tokens:
            cmd.notes.append(f"--max-batch-prefill-tokens raised to {prefill}: TGI requires it to be "
                             f">= --max-input-tokens ({max_input}) when prefill chunking is off")
        cmd.env["PREFIX_CACHING"] = "1" if s.prefix_caching else "0"
        cmd.applied["prefix_caching"] = f"PREFIX_CACHING={cmd.env['PREFIX_CACHING']} (environment)"
        if s.name != s.model:
            cmd.notes.append("TGI has no served-model-name flag: it answers to the model id")
        cmd.applied["served_model_name"] = NA + "TGI serves the model under its --model-id"
        if s.dtype and s.dtype != "auto":
            if s.dtype not in ("float16", "bfloat16"):
                raise UserError(f"TGI accepts --dtype float16 or bfloat16, not {s.dtype}", "pick one of those")
            _add(cmd, "dtype", "--dtype", s.dtype)
        if s.revision:
            _add(cmd, "revision", "--revision", s.revision)
        if s.tokenizer:
            _na(cmd, "tokenizer", "TGI loads the tokenizer of --model-id")
        cmd.notes.append("TGI rejects requests beyond --max-concurrent-requests with HTTP 429 (no queue): "
                         "keep the load's concurrency at or below max_batch")
        cmd.notes.append(f"/metrics on the API port; also on --prometheus-port {cmd.metrics_port}")


class SglangProfile(Profile):
    def _render(self, cmd, s, vendor, container, metrics_port):
        _add(cmd, "model", "--model-path", s.model)
        _add(cmd, "host", "--host", cmd.host)
        _add(cmd, "port", "--port", str(s.port))
        _add(cmd, "served_model_name", "--served-model-name", s.name)
        _add(cmd, "tensor_parallel", "--tp-size", str(s.tensor_parallel))
        _add(cmd, "max_model_len", "--context-length", str(s.max_model_len))
        _add(cmd, "memory_fraction", "--mem-fraction-static", str(s.memory_fraction))
        _add(cmd, "max_batch", "--max-running-requests", str(s.max_batch))
        _add(cmd, "max_batched_tokens", "--chunked-prefill-size", str(s.max_batched_tokens))
        if s.prefix_caching:
            cmd.applied["prefix_caching"] = "radix cache on (SGLang's default; it has no flag to force it on)"
        else:
            _add(cmd, "prefix_caching", self.prefix_caching_off)
        cmd.argv += ["--enable-metrics", "--enable-cache-report"]
        if s.dtype:
            _add(cmd, "dtype", "--dtype", s.dtype)
        if s.revision:
            _add(cmd, "revision", "--revision", s.revision)
        if s.tokenizer:
            _add(cmd, "tokenizer", "--tokenizer-path", s.tokenizer)


class LlamaCppProfile(Profile):
    UBATCH = 512

    def served_name(self, settings: ServerSettings) -> str:
        if settings.served_model_name:
            return settings.served_model_name
        if settings.model.endswith(".gguf"):
            return Path(settings.model).stem
        return settings.model

    def _render(self, cmd, s, vendor, container, metrics_port):
        model = s.model
        if model.endswith(".gguf") or Path(model).expanduser().is_file():
            path = Path(model).expanduser()
            if container:
                path = Path("/models") / path.name
                cmd.notes.append(f"mount the folder holding {Path(model).name} at /models")
            _add(cmd, "model", "--model", str(path))
        else:
            _add(cmd, "model", "--hf-repo", model)
        _add(cmd, "served_model_name", "--alias", self.served_name(s))
        _add(cmd, "host", "--host", cmd.host)
        _add(cmd, "port", "--port", str(s.port))
        total_ctx = s.max_model_len * s.max_batch
        _add(cmd, "max_batch", "--parallel", str(s.max_batch), "--cont-batching")
        _add(cmd, "max_model_len", "--ctx-size", str(total_ctx))
        cmd.notes.append(f"--ctx-size {total_ctx} is the total KV cache: {s.max_batch} slots × "
                         f"{s.max_model_len} tokens each")
        _add(cmd, "max_batched_tokens", "--batch-size", str(s.max_batched_tokens),
             "--ubatch-size", str(min(self.UBATCH, s.max_batched_tokens)))
        if vendor is Vendor.CPU:
            _add(cmd, "gpu_layers", "--n-gpu-layers", "0")
            if s.tensor_parallel != 1:
                raise UserError("llama.cpp on CPU has no tensor parallelism", "use --tensor-parallel 1")
            _na(cmd, "tensor_parallel", "CPU (1)")
            _na(cmd, "memory_fraction", "CPU run; llama.cpp has no memory-fraction setting")
        else:
            _add(cmd, "gpu_layers", "--n-gpu-layers", "999")
            if s.tensor_parallel == 1:
                _add(cmd, "tensor_parallel", "--split-mode", "none")
            else:
                _add(cmd, "tensor_parallel", "--split-mode", "row")
                cmd.notes.append(f"llama.cpp splits rows of each layer across the {s.tensor_parallel} visible "
                                 "GPUs (--split-mode row): its closest analogue to tensor parallelism")
            _na(cmd, "memory_fraction",
                "llama.cpp allocates the weights plus the --ctx-size KV cache, no fraction setting")
        _add(cmd, "prefix_caching", self.prefix_caching_on if s.prefix_caching else self.prefix_caching_off)
        cmd.argv.append("--metrics")
        if s.dtype:
            _na(cmd, "dtype", "the GGUF file fixes the weight types")
        if s.revision:
            _na(cmd, "revision", "llama.cpp loads a file")
        if s.tokenizer:
            _na(cmd, "tokenizer", "the tokenizer is inside the GGUF file")


class TransformersProfile(Profile):
    def served_name(self, settings: ServerSettings) -> str:
        return settings.model  # it lists (and answers to) the model it was given

    def _render(self, cmd, s, vendor, container, metrics_port):
        if s.tensor_parallel != 1:
            raise UserError("transformers serve runs a model on one device: tensor parallelism is not available",
                            "use --tensor-parallel 1 (or another backend)")
        model = f"{s.model}@{s.revision}" if s.revision and not Path(s.model).exists() else s.model
        _add(cmd, "model", model)
        _add(cmd, "host", "--host", cmd.host)
        _add(cmd, "port", "--port", str(s.port))
        device = "cpu" if vendor is Vendor.CPU else "cuda"
        cmd.argv += ["--device", device]
        _add(cmd, "max_batch", "--continuous-batching")
        cmd.applied["max_batch"] = ("not applicable: transformers serve has no limit on concurrent sequences; "
                                    "--continuous-batching batches whatever is in flight")
        _add(cmd, "max_batched_tokens", "--cb-max-batch-tokens", str(s.max_batched_tokens))
        if vendor is Vendor.CPU:
            _na(cmd, "memory_fraction", "CPU run")
        else:
            _add(cmd, "memory_fraction", "--cb-max-memory-percent", str(s.memory_fraction))
        _na(cmd, "max_model_len", "transformers serve takes the model's own context length")
        _na(cmd, "tensor_parallel", "one device (1)")
        _na(cmd, "prefix_caching", "transformers serve has no prefix-caching setting")
        _na(cmd, "served_model_name", "requests name the model; the preloaded one serves them all")
        if s.dtype:
            _add(cmd, "dtype", "--dtype", s.dtype)
        if s.tokenizer:
            _na(cmd, "tokenizer", "transformers serve loads the model's processor")
        if container:
            cmd.setup.append(f"pip install --no-cache-dir 'transformers[serving]=={TRANSFORMERS_VERSION}'")
        cmd.notes.append("transformers serve rejects unknown request fields such as ignore_eos (HTTP 422): "
                         "requests carry no ignore_eos, so output may stop at EOS")


_GPU = (Vendor.NVIDIA, Vendor.AMD)

PROFILES: dict[str, Profile] = {p.name: p for p in [
    VllmProfile("vllm", "vLLM", "vllm", ("vllm", "serve"), 8000, "/version", "/metrics", None,
                "--enable-prefix-caching", "--no-enable-prefix-caching", _GPU,
                tp_flags=("--tensor-parallel-size", "-tp"), version_args=("--version",)),
    TgiProfile("tgi", "TGI", "tgi", ("text-generation-launcher",), 3000, "/info", "/metrics", None,
               "PREFIX_CACHING=1", "PREFIX_CACHING=0", _GPU,
               port_flags=("--port", "-p"), tp_flags=("--num-shard",), aliases=("hf-tgi", "text-generation-inference"),
               container_program=("/tgi-entrypoint.sh",), image_entrypoint=True, version_args=("--version",)),
    SglangProfile("sglang", "SGLang", "sglang", ("python3", "-m", "sglang.launch_server"), 30000,
                  "/get_server_info", "/metrics", "--enable-metrics", "(default: radix cache on)",
                  "--disable-radix-cache", _GPU,
                  tp_flags=("--tp-size", "--tp", "--tensor-parallel-size")),
    LlamaCppProfile("llama.cpp", "llama.cpp", "llama.cpp", ("llama-server",), 8080, "/props", "/metrics", "--metrics",
                    "--cache-prompt", "--no-cache-prompt", (Vendor.CPU, Vendor.NVIDIA, Vendor.AMD),
                    aliases=("llamacpp", "llama-cpp", "llama-server"),
                    container_program=("/app/llama-server",), image_entrypoint=True, version_args=("--version",)),
    TransformersProfile("transformers", "transformers serve", "transformers", ("transformers", "serve"), 8000, None,
                        None, None, "(none)", "(none)", (Vendor.CPU, Vendor.NVIDIA, Vendor.AMD),
                        aliases=("transformers-serve", "hf"), version_args=("version",)),
]}


def get_profile(name: str) -> Profile:
    key = name.lower()
    for profile in PROFILES.values():
        if key == profile.name or key in profile.aliases:
            return profile
    raise UserError(f"server profile {name!r} is not known", f"use one of: {', '.join(PROFILES)}")
