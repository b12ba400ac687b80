"""RunSpec: everything one run needs, validated before anything starts.

The CLI flags of ``infermeter run`` (vLLM's names, vLLM's meanings) map onto
this model one to one; experiment specs reuse it.
"""

from __future__ import annotations

import math
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infermeter.errors import UserError

MAX_COUNT = 100_000_000  # requests, warm-ups: more is a typo, not a benchmark
MAX_TOKENS = 10_000_000  # prompt/output lengths in tokens
MAX_CONCURRENCY = 1_000_000


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # target
    backend: str = "vllm"
    base_url: str | None = None  # None (and no host/port): the embedded engine
    host: str | None = None
    port: int | None = None
    endpoint: str | None = None  # None: the backend's default
    model: str | None = None  # None: the first model the server lists
    served_model_name: str | None = None
    tokenizer: str | None = None  # None: the model id
    trust_remote_code: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    api_key_env: str | None = "OPENAI_API_KEY"
    api_key_file: str | None = None
    # embedded engine
    engine_model: str = "tiny"
    engine_parallel: int = 8
    engine_ctx_size: int | None = None
    engine_cpus: str = "auto"  # auto | off | a list of cores for the engine (embedded/placement.py)
    # workload
    dataset_name: str = "random"
    dataset_path: str | None = None
    sonnet_input_len: int = 550
    sonnet_output_len: int = 150
    sonnet_prefix_len: int = 200
    random_input_len: int = 1024
    random_output_len: int = 128
    random_range_ratio: float = 0.0
    random_prefix_len: int = 0
    sharegpt_output_len: int | None = None
    # load
    num_prompts: int = 1000
    request_rate: float = math.inf
    burstiness: float = 1.0
    arrival: str | None = None
    max_concurrency: int | None = None
    warmup_requests: int = 0
    seed: int = 0
    # sharding (load/shard.py) and worker processes (runner/workers.py)
    shard: str | None = None  # "i/N": this process runs slice i of N of the schedule
    start_at: float | None = None  # wall-clock epoch at which the measured window starts
    workers: int = 1  # worker processes, each running one shard; results merged
    # request shaping
    ignore_eos: bool = False
    temperature: float | None = 0.0
    top_p: float | None = None
    top_k: int | None = None
    stream: bool = True
    extra_body: dict[str, Any] = Field(default_factory=dict)
    transport: str = "fast"  # fast (asyncio.Protocol) | aiohttp (clients/transports.py)
    request_id_header: str | None = None  # tag each request with its index (selfcheck's join with the truth)
    request_timeout: float | None = 3600.0
    stall_timeout: float | None = 300.0
    # stop policy
    max_errors: int | None = None
    max_error_rate: float | None = None
    client_error_tolerance: float = Field(5.0, gt=0)  # % possible client error of TTFT/ITL past which INVALID
    # telemetry (docs/telemetry.md): GPU sampler and the server's /metrics, off the hot path
    telemetry: bool = True
    telemetry_gpu: str = "auto"
    telemetry_interval: float = Field(1.0, gt=0)
    # cost and energy (docs/cost.md): a stated price, or a dstack run's offer; the GPU count
    gpu_price: float | None = None  # dollars per hour
    gpu_price_per: Literal["gpu", "node"] | None = None  # what gpu_price is the price of
    gpu_count: int | None = None  # GPUs serving the model (else the launch profile, dstack, telemetry)
    launch_gpu_count: int | None = None  # set by a sweep from a launch profile's tensor_parallel
    dstack_run: str | None = None  # [PROJECT/]NAME of the dstack run serving the model: its offer price
    # metrics and output
    percentile_metrics: str = "ttft,tpot,itl,e2el"
    metric_percentiles: str = "50,90,95,99"
    goodput: list[str] = Field(default_factory=list)
    result_dir: str = "results"
    result_filename: str | None = None  # a plain name inside result_dir; None: a generated, unique name
    # an existing result_filename: refuse it, overwrite it (--overwrite), or take the next free name
    if_exists: Literal["refuse", "overwrite", "next"] = "refuse"
    metadata: dict[str, str] = Field(default_factory=dict)
    save_generated_text: bool = False
    progress: bool = True
    # what the per-request records name (a sweep sets both; a run: --label or the backend, and no cell)
    target_name: str | None = None
    cell_id: str | None = None
    # --- vLLM `bench serve` compatibility (cli/options.py; docs/cli.md) -------
    label: str | None = None  # vLLM's --label: the result's "label" key and file-name prefix
    rate_schedule: str = "vllm"  # vllm: rescaled so the last send lands at N/rate; unscaled: plain renewal
    ramp_up_strategy: str | None = None  # linear | exponential (then request_rate stays inf)
    ramp_up_start_rps: float | None = None
    ramp_up_end_rps: float | None = None
    custom_output_len: int = 256  # --dataset-name custom: max_tokens per request, as vLLM asks
    # --- end of the vLLM compatibility block ----------------------------------
    # --- workloads and load shapes of docs/workloads.md -----------------------
    prefix_groups: int = 8  # shared-prefix: --prefix-groups --prefix-len --question-len --prefix-output-len
    prefix_len: int = 512
    question_len: int = 128
    prefix_output_len: int = 128
    multi_turn_output_len: int | None = None  # multi-turn: None = each turn's dataset answer length
    multi_turn_max_turns: int | None = None
    multi_turn_history: Literal["server", "dataset"] = "server"
    multi_turn_think_time: float = 0.0
    trace_format: Literal["auto", "mooncake", "burstgpt", "azure"] = "auto"
    trace_speed: float = 1.0
    trace_block_size: int | None = None
    trace_output_len: int | None = None
    rate_steps: list[float] | None = None  # step load: each rate held step_hold_s seconds
    step_hold_s: float | None = None
    duration: float | None = None  # time-bounded run (seconds); then duration_grace for requests in flight
    duration_grace: float = 30.0
    # --- end of the workloads block ---------------------------------------------

    def load_plan(self):
        """The load plan these fields mean (load/schedule.py)."""
        from infermeter.load.schedule import make_plan

        ramp = (self.ramp_up_strategy, self.ramp_up_start_rps, self.ramp_up_end_rps)
        if self.dataset_name == "trace":  # its own schedule; the count is the trace's (runner/workload_run.py)
            from infermeter.load.schedule import trace_plan

            base = make_plan(self.num_prompts, self.request_rate, self.max_concurrency, self.burstiness,
                             self.arrival, self.warmup_requests, self.rate_schedule,
                             ramp if any(v is not None for v in ramp) else None,
                             steps=tuple(self.rate_steps) if self.rate_steps else None, step_hold_s=self.step_hold_s)
            return trace_plan(base, self.num_prompts, self.trace_speed, self.duration, self.duration_grace)
        return make_plan(self.num_prompts, self.request_rate, self.max_concurrency, self.burstiness, self.arrival,
                         self.warmup_requests, self.rate_schedule, ramp if any(v is not None for v in ramp) else None,
                         steps=tuple(self.rate_steps) if self.rate_steps else None, step_hold_s=self.step_hold_s,
                         duration=self.duration, duration_grace=self.duration_grace, seed=self.seed)

    def uses_embedded_engine(self) -> bool:
        return self.base_url is None and self.host is None and self.port is None

    def server_url(self) -> str:
        """The server's base URL (``--base-url``, else ``--host``/``--port``); not for the embedded engine."""
        return (self.base_url or f"http://{self.host or '127.0.0.1'}:{self.port or 8000}").rstrip("/")

    @model_validator(mode="after")
    def _validate(self) -> "RunSpec":
        self.check()
        return self

    def check(self) -> None:
        """Judge every value that can be judged without a server; a bad one raises a
        ``UserError`` naming its flag (pydantic passes it through unchanged)."""
        from infermeter.backends import get_backend
        from infermeter.metrics.compute import GoodputSLO, parse_metric_names, parse_percentiles
        from infermeter.secrets import check_headers
        from infermeter.storage.names import check_plain_name

        ints = {"num_prompts": MAX_COUNT, "warmup_requests": MAX_COUNT, "max_concurrency": MAX_CONCURRENCY,
                "engine_parallel": 4096, "engine_ctx_size": MAX_TOKENS, "max_errors": MAX_COUNT,
                "sonnet_input_len": MAX_TOKENS, "sonnet_output_len": MAX_TOKENS,
                "sonnet_prefix_len": MAX_TOKENS, "random_input_len": MAX_TOKENS,
                "random_output_len": MAX_TOKENS, "random_prefix_len": MAX_TOKENS,
                "sharegpt_output_len": MAX_TOKENS, "custom_output_len": MAX_TOKENS, "seed": 2**63 - 1, "top_k": 2**31 - 1,
                "prefix_groups": MAX_COUNT, "prefix_len": MAX_TOKENS, "question_len": MAX_TOKENS,
                "prefix_output_len": MAX_TOKENS, "multi_turn_output_len": MAX_TOKENS, "multi_turn_max_turns": MAX_COUNT,
                "trace_block_size": MAX_TOKENS, "trace_output_len": MAX_TOKENS}
        for name, limit in ints.items():
            value = getattr(self, name)
            if value is not None and abs(value) > limit:
                flag = "--" + name.replace("_", "-")
                shown = value if abs(value) < 10**30 else ("-" if value < 0 else "") + "1e30+"
                raise UserError(f"{flag} {shown} is out of range", f"pass a value between 0 and {limit}")
        get_backend(self.backend)
        if self.base_url is not None:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https"):
                raise UserError(f"--base-url {self.base_url!r} has no http:// or https:// scheme",
                                "write it as http://HOST:PORT")
            if not parts.hostname:
                raise UserError(f"--base-url {self.base_url!r} has no host", "write it as http://HOST:PORT")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise UserError(f"--port {self.port} is not a TCP port", "pass a port between 1 and 65535")
        if self.engine_parallel < 1:
            raise UserError(f"--engine-parallel {self.engine_parallel} must be at least 1",
                            "pass --engine-parallel N with N >= 1")
        if self.engine_ctx_size is not None and self.engine_ctx_size < 1:
            raise UserError(f"--engine-ctx-size {self.engine_ctx_size} must be at least 1",
                            "pass a context size in tokens, or leave it out for the model's own")
        self.load_plan()
        if self.seed < 0:
            raise UserError(f"--seed {self.seed} must be a whole number >= 0", "pass --seed 0 or more")
        if self.temperature is not None and not 0 <= self.temperature < math.inf:
            raise UserError(f"--temperature {self.temperature:g} must be 0 or more", "pass e.g. --temperature 0")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UserError(f"--top-p {self.top_p:g} must be in (0, 1]", "pass e.g. --top-p 0.9")
        if self.top_k is not None and self.top_k < -1:
            raise UserError(f"--top-k {self.top_k} must be -1 (off) or more", "pass e.g. --top-k 50")
        for flag, value in (("--request-timeout", self.request_timeout), ("--stall-timeout", self.stall_timeout)):
            if value is not None and not value > 0:
                raise UserError(f"{flag} {value:g} must be positive", "give seconds > 0")
        if self.max_errors is not None and self.max_errors < 0:
            raise UserError(f"--max-errors {self.max_errors} is negative", "give 0 or more")
        if self.max_error_rate is not None and not 0 <= self.max_error_rate <= 1:
            raise UserError(f"--max-error-rate {self.max_error_rate:g} must be between 0 and 1",
                            "give a fraction, e.g. 0.05")
        from infermeter.clients.transports import KINDS

        if self.transport not in KINDS:
            raise UserError(f"--transport {self.transport!r} is not known", f"use one of {', '.join(KINDS)}")
        parse_percentiles(self.metric_percentiles)
        parse_metric_names(self.percentile_metrics)
        if self.goodput:
            GoodputSLO.parse(self.goodput)
        check_headers(self.headers)
        if self.result_filename is not None:
            check_plain_name(self.result_filename)
        self._check_cost()
        self.workload_spec()

    def _check_cost(self) -> None:
        if self.gpu_price is not None:
            if not 0 < self.gpu_price < math.inf:
                raise UserError(f"--gpu-price {self.gpu_price:g} must be a positive number of dollars per hour",
                                "pass e.g. --gpu-price 2.49 --gpu-price-per gpu")
            if self.gpu_price_per is None:
                raise UserError(f"--gpu-price {self.gpu_price:g} does not say what it is the price of",
                                "add --gpu-price-per gpu (per GPU-hour) or --gpu-price-per node (the whole machine)")
            if self.dstack_run:
                raise UserError("--gpu-price and --dstack-run both give the price",
                                "keep one: a stated price, or the dstack run's offer")
        elif self.gpu_price_per is not None:
            raise UserError(f"--gpu-price-per {self.gpu_price_per} without --gpu-price", "add --gpu-price PER_HOUR")
        for flag, value in (("--gpu-count", self.gpu_count), ("launch GPU count", self.launch_gpu_count)):
            if value is not None and not 1 <= value <= 100_000:
                raise UserError(f"{flag} {value} is not a number of GPUs", "pass 1 or more")

    def workload_spec(self):
        """The workload spec named by the run's dataset flags."""
        from infermeter import workloads as w

        name = self.dataset_name
        if name == "sonnet":
            return w.SonnetSpec(input_len=self.sonnet_input_len, output_len=self.sonnet_output_len,
                                prefix_len=self.sonnet_prefix_len, path=self.dataset_path)
        if name == "random":
            return w.RandomSpec(input_len=self.random_input_len, output_len=self.random_output_len,
                                range_ratio=self.random_range_ratio, prefix_len=self.random_prefix_len)
        if name in ("sharegpt", "jsonl", "custom"):
            if not self.dataset_path:
                raise UserError(f"--dataset-name {name} needs --dataset-path", "give the path of the dataset file")
            if name == "sharegpt":
                return w.ShareGPTSpec(path=self.dataset_path, output_len=self.sharegpt_output_len)
            return w.JsonlSpec(path=self.dataset_path,
                               output_len=self.custom_output_len if name == "custom" else self.sharegpt_output_len)
        if name == "shared-prefix":
            return w.SharedPrefixSpec(groups=self.prefix_groups, prefix_len=self.prefix_len,
                                      question_len=self.question_len, output_len=self.prefix_output_len)
        if name in ("multi-turn", "trace") and not self.dataset_path:
            raise UserError(f"--dataset-name {name} needs --dataset-path",
                            "give a conversation file" if name == "multi-turn"
                            else "give a trace file, or infermeter:mooncake-small (docs/workloads.md)")
        if name == "multi-turn":
            return w.MultiTurnSpec(path=self.dataset_path, output_len=self.multi_turn_output_len,
                                   max_turns=self.multi_turn_max_turns, history=self.multi_turn_history,
                                   think_time=self.multi_turn_think_time)
        if name == "trace":
            return w.TraceSpec(path=self.dataset_path, format=self.trace_format, speed=self.trace_speed,
                               block_size=self.trace_block_size, output_len=self.trace_output_len)
        raise UserError(f"--dataset-name {name!r} is not known",
                        "use sonnet, random, sharegpt, jsonl, shared-prefix, multi-turn or trace")


def runspec_from_flags(values: dict[str, Any]) -> RunSpec:
    """A RunSpec from flat field names (what ``infermeter run``'s parser produces)."""
    return RunSpec(**values)
