"""The backend contract: everything infermeter knows about one inference server, as data.

A backend module (``backends/vllm.py``, ``backends/tgi.py``, ...) defines ``BACKEND``
(or ``BACKENDS``, a tuple, for a module with more than one), a ``BackendSpec`` built
from the types here:

* request shaping: the default endpoint (and so the wire protocol), whether requests
  may carry ``ignore_eos`` (the equal-work capability: a fixed output length);
* ``MetricMap``: its own ``/metrics`` names mapped to infermeter's common series;
* ``Launch``: how it is started (program, flags, ports, health and info paths), with a
  ``render`` function that turns ``ServerSettings`` into flags;
* ``Images``: pinned container images per vendor, and which images start it;
* ``LintRules``: how ``infermeter lint`` recognises it in a dstack task and checks it;
* version probes: its info/version path and how to read the version from it.

The consumers (clients, telemetry, servers, runner, cli) read these through the
registry in ``infermeter.backends``; none of them keeps a table of its own.
See docs/backends.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from infermeter.backends.launch import LaunchCommand
from infermeter.backends.settings import ServerSettings, Vendor
from infermeter.errors import UserError

# -- /metrics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One common series and the server's names for it, newest first (the first present wins)."""

    key: str
    names: tuple[str, ...]
    kind: str = "gauge"  # gauge | counter | histogram | histogram_sum
    agg: str = "sum"  # over label sets: sum | mean | max


def gauge(key: str, *names: str, agg: str = "sum") -> Series:
    return Series(key, names, "gauge", agg)


def counter(key: str, *names: str) -> Series:
    return Series(key, names, "counter")


def histogram(key: str, *names: str) -> Series:
    return Series(key, names, "histogram")


@dataclass(frozen=True)
class MetricMap:
    """How a server's ``/metrics`` names map onto the common series (telemetry/backends.py)."""

    prefix: str  # how its names start: used to recognise a server's metrics
    series: tuple[Series, ...]
    notes: str = ""
    derive: Callable[[dict[str, Any]], None] | None = None  # fills series computed from others
    detect_order: int = 50  # lower is tried first when a server exports several prefixes
    backend: str = ""  # set from the BackendSpec that holds it

    def wanted(self) -> set[str]:
        out: set[str] = set()
        for s in self.series:
            out.update(s.names)
        return out


# -- launching ---------------------------------------------------------------------------------

Render = Callable[[LaunchCommand, ServerSettings, Vendor, bool, "int | None"], None]


@dataclass(frozen=True)
class Launch:
    """How the server is started and probed.  ``render(cmd, settings, vendor, container,
    metrics_port)`` appends the flags that carry each setting to ``cmd`` (see launch.py's
    ``add``/``not_applicable``) and records how each was applied."""

    program: tuple[str, ...]  # the command that starts it (argv prefix)
    default_port: int  # the port the server uses when none is given
    render: Render
    vendors: tuple[Vendor, ...]
    prefix_caching_on: str
    prefix_caching_off: str
    info_path: str | None = None  # version/info endpoint
    metrics_path: str | None = "/metrics"
    metrics_flag: str | None = None  # the flag that turns /metrics on (None: always on)
    ready_paths: tuple[str, ...] = ("/health", "/v1/models")
    port_flags: tuple[str, ...] = ("--port",)
    tp_flags: tuple[str, ...] = ()
    container_program: tuple[str, ...] = ()  # the program inside the image (default: ``program``)
    image_entrypoint: bool = False  # the image's ENTRYPOINT starts the server: docker passes only args
    version_args: tuple[str, ...] = ()  # ``<program[0]> <version_args>`` prints the version
    separate_metrics_port: bool = False  # also serves /metrics on a port of its own (TGI)
    model_dir: str | None = None  # where a container finds a local model file (mounted there)
    served_name: Callable[[ServerSettings], str] | None = None  # default: settings.name
    aliases: tuple[str, ...] = ()  # extra names for the launch profile only (``llama-server``)
    max_batch_rejects: bool = False  # requests over max_batch get an HTTP error (TGI's 429), not a queue
    has_max_model_len: bool = True  # False: the server takes the model's own context length
    max_batch_cap: int | None = None  # the most max_batch the server accepts (llama.cpp: 256 slots)


# -- container images ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Images:
    """Pinned images (explicit versioned tags, never ``latest``) and how to recognise the server's own."""

    by_vendor: Mapping[Vendor, str]
    family: str | None = None  # regular expression on an image repository: images that start this server
    cuda_only: tuple[str, ...] = ()  # regular expressions of repositories built only for NVIDIA's CUDA
    notes: str = ""


# -- lint ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LintRules:
    """What ``infermeter lint`` checks for this server in a dstack task or service.

    ``starts(words)``: do these shell words (program first) start this server?
    ``single_gpu(argv)``: for a server without tensor parallelism, ``(why, alternative)``
    when this command line uses one GPU (None: it may use several).
    ``listen_port(env, image)``: the port it listens on when no port flag is given
    (default: the launch profile's ``default_port``)."""

    starts: Callable[[list[str]], bool]
    needs_gpu: bool = False  # declares no GPU resources: an error
    single_gpu: Callable[[list[str]], tuple[str, str] | None] | None = None
    shards_all_gpus: bool = False  # without a tensor-parallel flag it uses every visible GPU
    listen_port: Callable[[Mapping[str, str | None], str], int | str | None] | None = None


def flag_value(argv: list[str], flags: tuple[str, ...]) -> str | None:
    """The value given to the first of ``flags`` in ``argv`` (``--f v`` or ``--f=v``)."""
    for i, arg in enumerate(argv):
        for flag in flags:
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def program_is(*names: str, then: str | None = None) -> Callable[[list[str]], bool]:
    """A ``starts`` rule: the first word's basename is one of ``names`` (and the second is ``then``)."""

    def starts(words: list[str]) -> bool:
        if not words or words[0].rsplit("/", 1)[-1] not in names:
            return False
        return then is None or (len(words) > 1 and words[1] == then)

    return starts


def module_is(module: str) -> Callable[[list[str]], bool]:
    """A ``starts`` rule: ``MODULE`` among the first four words (``python3 -m MODULE``)."""

    def starts(words: list[str]) -> bool:
        return module in " ".join(words[:4])

    return starts


# -- the backend -------------------------------------------------------------------------------------


def version_field(info: dict[str, Any]) -> str | None:
    """The server version from its info JSON's ``version`` field (vLLM, SGLang, TGI)."""
    version = info.get("version")
    return str(version) if version else None


@dataclass(frozen=True)
class BackendSpec:
    """Everything about one inference server.  Only ``name``, ``default_endpoint`` and
    ``ignore_eos`` are required: a server infermeter only sends load to needs no more."""

    name: str
    default_endpoint: str  # the request path when --endpoint is not given
    ignore_eos: bool  # accepts ignore_eos in the request body (a fixed output length)
    title: str = ""  # how people write it (default: name)
    aliases: tuple[str, ...] = ()  # other names accepted by --backend, --profile and the telemetry
    version_path: str | None = None  # answered with its version, probed before a run
    note: str = ""
    metrics: MetricMap | None = None
    launch: Launch | None = None
    images: Images | None = None
    lint: LintRules | None = None
    version_from_info: Callable[[dict[str, Any]], str | None] = version_field
    revision_from_info: Callable[[dict[str, Any]], str | None] | None = None  # the model commit it loaded

    def __post_init__(self) -> None:
        if not self.title:
            object.__setattr__(self, "title", self.name)
        if self.metrics is not None and self.metrics.backend != self.name:
            object.__setattr__(self, "metrics", replace(self.metrics, backend=self.name))
        protocol_for(self.default_endpoint)  # an endpoint infermeter speaks

    @property
    def protocol(self) -> str:
        """The wire protocol of the default endpoint (openai, openai-chat or tgi)."""
        return protocol_for(self.default_endpoint)

    def fixed_length_method(self, protocol: str | None = None) -> str:
        """How a fixed output length is obtained over ``protocol`` (default: its own)."""
        if (protocol or self.protocol) == "tgi":
            return "none: TGI has no ignore_eos; generation may stop at EOS before max_new_tokens"
        if self.ignore_eos:
            return "ignore_eos + max_tokens"
        return f"none: {self.name} has no ignore_eos; generation may stop at EOS before max_tokens"

    def image(self, vendor: Vendor) -> str | None:
        return self.images.by_vendor.get(vendor) if self.images else None


def protocol_for(endpoint: str) -> str:
    """Which wire protocol an endpoint path speaks."""
    path = endpoint.rstrip("/")
    if path.endswith("/chat/completions"):
        return "openai-chat"
    if path.endswith("/completions"):
        return "openai"
    if path.endswith("/generate_stream") or path.endswith("/generate"):
        return "tgi"
    raise UserError(
        f"--endpoint {endpoint!r} is not an endpoint infermeter speaks",
        "use /v1/completions, /v1/chat/completions or /generate_stream (TGI)",
    )
