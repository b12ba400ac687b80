"""The sections of a RunSpec, one model per concern (runner/spec.py puts them together).

Field names are the flat names of ``infermeter run``'s flags (vLLM's names) and of an
experiment cell's settings; ``RunSpec.from_flat`` routes each to its section.  These
models check types only: values are judged once, by ``runner.plan.resolve``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetSection(Section):
    """The server under test and how to reach it."""

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


class EngineSection(Section):
    """The embedded llama-server, used when no URL is given."""

    engine_model: str = "tiny"
    engine_parallel: int = 8
    engine_ctx_size: int | None = None
    engine_cpus: str = "auto"  # auto | off | a list of cores for the engine (embedded/placement.py)


class WorkloadSection(Section):
    """The dataset and every workload's lengths (docs/workloads.md)."""

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
    custom_output_len: int = 256  # --dataset-name custom: max_tokens per request, as vLLM asks
    prefix_groups: int = 8  # shared-prefix
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


class LoadSection(Section):
    """How many requests, when each is sent, and by how many processes (load/, runner/workers.py)."""

    num_prompts: int = 1000
    request_rate: float = math.inf
    burstiness: float = 1.0
    arrival: str | None = None
    max_concurrency: int | None = None
    warmup_requests: int = 0
    seed: int = 0
    rate_schedule: str = "vllm"  # vllm: rescaled so the last send lands at N/rate; unscaled: plain renewal
    ramp_up_strategy: str | None = None  # linear | exponential (then request_rate stays inf)
    ramp_up_start_rps: float | None = None
    ramp_up_end_rps: float | None = None
    rate_steps: list[float] | None = None  # step load: each rate held step_hold_s seconds
    step_hold_s: float | None = None
    duration: float | None = None  # time-bounded run (seconds); then duration_grace for requests in flight
    duration_grace: float = 30.0
    shard: str | None = None  # "i/N": this process runs slice i of N of the schedule
    start_at: float | None = None  # wall-clock epoch at which the measured window starts
    workers: int = 1  # worker processes, each running one shard; results merged


class ClientSection(Section):
    """The client: transport, timeouts, request shaping and when to stop on errors."""

    transport: str = "fast"  # fast (asyncio.Protocol) | aiohttp (clients/transports.py)
    request_id_header: str | None = None  # tag each request with its index (selfcheck's join with the truth)
    request_timeout: float | None = 3600.0
    stall_timeout: float | None = 300.0
    ignore_eos: bool = False
    temperature: float | None = 0.0
    top_p: float | None = None
    top_k: int | None = None
    stream: bool = True
    extra_body: dict[str, Any] = Field(default_factory=dict)
    max_errors: int | None = None
    max_error_rate: float | None = None


class OutputSection(Section):
    """What the result says and where it goes."""

    result_dir: str = "results"
    result_filename: str | None = None  # a plain name inside result_dir; None: a generated, unique name
    # an existing result_filename: refuse it, overwrite it (--overwrite), or take the next free name
    if_exists: Literal["refuse", "overwrite", "next"] = "refuse"
    metadata: dict[str, str] = Field(default_factory=dict)
    label: str | None = None  # vLLM's --label: the result's "label" key and file-name prefix
    progress: bool = True
    progress_interval: float | None = Field(None, gt=0, allow_inf_nan=False)  # seconds between plain progress lines on stderr
    percentile_metrics: str = "ttft,tpot,itl,e2el"
    metric_percentiles: str = "50,90,95,99"
    goodput: list[str] = Field(default_factory=list)
    client_error_tolerance: float = Field(5.0, gt=0)  # % possible client error of TTFT/ITL past which INVALID
    # what the per-request records name (a sweep sets both; a run: --label or the backend, and no cell)
    target_name: str | None = None
    cell_id: str | None = None
    save_generated_text: bool = False


class TelemetrySection(Section):
    """GPU sampler and the server's /metrics, off the hot path (docs/telemetry.md)."""

    telemetry: bool = True
    telemetry_gpu: str = "auto"
    telemetry_interval: float = Field(1.0, gt=0)


class CostSection(Section):
    """Cost and energy (docs/cost.md): a stated price, or a dstack run's offer; the GPU count."""

    gpu_price: float | None = None  # dollars per hour
    gpu_price_per: Literal["gpu", "node"] | None = None  # what gpu_price is the price of
    gpu_count: int | None = None  # GPUs serving the model (else the launch profile, dstack, telemetry)
    launch_gpu_count: int | None = None  # set by a sweep from a launch profile's tensor_parallel
    dstack_run: str | None = None  # [PROJECT/]NAME of the dstack run serving the model: its offer price
