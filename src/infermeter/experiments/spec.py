"""The experiment spec: one YAML file that names targets, workloads, a load grid,
repeats, stop rules and common run options.

Every model forbids unknown keys, so a typo is an error, and every error is one
line naming the key path (``targets.vllm.ur``) and, where YAML knows it, the line.
Nothing runs before the whole spec (and every cell's ``RunSpec``) is valid.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
DATASETS = ("random", "sonnet", "sharegpt", "jsonl", "shared-prefix", "multi-turn", "trace")
# Workload fields by the dataset they belong to (RunSpec's names).
DATASET_FIELDS = {
    "sonnet": ("sonnet_input_len", "sonnet_output_len", "sonnet_prefix_len"),
    "random": ("random_input_len", "random_output_len", "random_range_ratio", "random_prefix_len"),
    "sharegpt": ("dataset_path", "sharegpt_output_len"),
    "jsonl": ("dataset_path", "sharegpt_output_len"),
    "shared-prefix": ("prefix_groups", "prefix_len", "question_len", "prefix_output_len"),
    "multi-turn": ("dataset_path", "multi_turn_output_len", "multi_turn_max_turns", "multi_turn_history",
                   "multi_turn_think_time"),
    "trace": ("dataset_path", "trace_format", "trace_speed", "trace_block_size", "trace_output_len"),
}
# Fields any workload may set (docs/workloads.md): a time-bounded run at every load point.
ANY_DATASET_FIELDS = ("duration", "duration_grace")
DEFAULT_PROMPTS_PER_SLOT = 10
MAX_REPEATS = 1000  # runs of one load point, repeats and min_samples together
SPEC_DOC = "see docs/experiments.md"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Throughput(_Strict):
    """Nominal throughput of a target, used only to estimate durations (``--dry-run``, ETA)."""

    input_tok_s: float = Field(gt=0, lt=math.inf)
    output_tok_s: float = Field(gt=0, lt=math.inf)


class EmbeddedConfig(_Strict):
    """infermeter's embedded llama-server: started once per target, stopped after its cells."""

    model: str = "tiny"
    parallel: int = Field(default=8, ge=1, le=4096)
    ctx_size: int | None = Field(default=None, ge=1)


class LaunchConfig(_Strict):
    """A server infermeter starts from a launch profile (docs/servers.md) for this target's cells.

    ``settings`` are the profile-independent ``ServerSettings`` (model, tensor_parallel,
    max_model_len, memory_fraction, max_batch, ...): each profile maps them to its own flags.
    """

    profile: str  # vllm, tgi, sglang, llama.cpp, transformers
    settings: dict[str, Any]
    vendor: str | None = None  # nvidia or amd (default: detected)
    executable: str | None = None  # the program to run instead of the profile's default
    startup_timeout_s: float = Field(default=900.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "LaunchConfig":
        from infermeter.servers import ServerSettings, get_profile

        get_profile(self.profile)  # UserError naming the known profiles
        ServerSettings(**self.settings)  # typos and bad values fail before anything runs
        return self


class TargetSpec(_Strict):
    """A server under test: ``url`` (a running server), ``embedded`` (infermeter's own
    llama-server) or ``launch`` (a vLLM/TGI/SGLang/llama.cpp/transformers server that
    infermeter starts from a launch profile and stops after the target's cells)."""

    url: str | None = None
    embedded: EmbeddedConfig | None = None
    launch: LaunchConfig | None = None
    backend: str | None = None  # None: vllm for url targets, llama.cpp for embedded ones
    endpoint: str | None = None
    model: str | None = None
    served_model_name: str | None = None
    tokenizer: str | None = None
    trust_remote_code: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    api_key_env: str | None = "OPENAI_API_KEY"
    api_key_file: str | None = None
    estimate: Throughput | None = None
    # cost (docs/cost.md): dollars per hour, per GPU or per node (stated), or a dstack run's offer
    gpu_price: float | None = Field(default=None, gt=0, lt=math.inf)
    gpu_price_per: Literal["gpu", "node"] | None = None
    gpu_count: int | None = Field(default=None, ge=1)
    dstack_run: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        from urllib.parse import urlsplit

        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{v!r} is not an http:// or https:// URL with a host — write it as http://HOST:PORT")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> "TargetSpec":
        kinds = [k for k in ("url", "embedded", "launch") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of url, embedded or launch"
                             + (f" (got {', '.join(kinds)})" if kinds else "")
                             + " — e.g. url: http://127.0.0.1:8000, or embedded: {model: tiny}")
        if (self.gpu_price is None) != (self.gpu_price_per is None):
            raise ValueError("gpu_price needs gpu_price_per: gpu or node (and the other way round)"
                             " — e.g. gpu_price: 2.49, gpu_price_per: gpu")
        if self.gpu_price is not None and self.dstack_run:
            raise ValueError("gpu_price and dstack_run both give the price — keep one")
        if self.embedded is not None:
            if self.backend not in (None, "llama.cpp"):
                raise ValueError(f"backend {self.backend!r} does not apply to an embedded target"
                                 " — leave it out (the embedded engine is llama.cpp)")
            for key in ("model", "served_model_name", "tokenizer"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} does not apply to an embedded target"
                                     " — choose the engine's model with embedded.model")
        return self

    @property
    def kind(self) -> str:
        return "url" if self.url is not None else "embedded" if self.embedded is not None else "launch"

    @property
    def backend_name(self) -> str:
        if self.embedded is not None:
            return "llama.cpp"
        if self.launch is not None:
            from infermeter.servers import get_profile

            return self.backend or get_profile(self.launch.profile).backend
        return self.backend or "vllm"


class LoadGrid(_Strict):
    """The load points each workload runs at, in this order: bursts, concurrencies, rates."""

    burst: list[int] = Field(default_factory=list)
    concurrency: list[int] = Field(default_factory=list)
    concurrency_num_prompts: int | None = Field(default=None, ge=1)
    concurrency_prompts_per_slot: int | None = Field(default=None, ge=1)
    rate: list[float] = Field(default_factory=list)
    rate_num_prompts: int | None = Field(default=None, ge=1)
    rate_duration_s: float | None = Field(default=None, gt=0, lt=math.inf)
    rate_max_concurrency: int | None = Field(default=None, ge=1)
    burstiness: float = Field(default=1.0, gt=0)
    arrival: Literal["poisson", "gamma", "constant"] | None = None

    @field_validator("burst", "concurrency")
    @classmethod
    def _positive_ints(cls, values: list[int]) -> list[int]:
        for v in values:
            if v < 1:
                raise ValueError(f"{v} is not a positive whole number — give values of 1 or more")
        if len(set(values)) != len(values):
            raise ValueError(f"{values} repeats a value — list each point once (use repeats: N to repeat)")
        return values

    @field_validator("rate")
    @classmethod
    def _positive_rates(cls, values: list[float]) -> list[float]:
        for v in values:
            if not 0 < v < math.inf:
                raise ValueError(f"{v} is not a positive finite rate — give requests/s > 0 (a burst is 'burst:')")
        if len(set(values)) != len(values):
            raise ValueError(f"{values} repeats a value — list each rate once (use repeats: N to repeat)")
        return values

    @model_validator(mode="after")
    def _rules(self) -> "LoadGrid":
        if not (self.burst or self.concurrency or self.rate):
            raise ValueError("no load points — give at least one of burst: [..], concurrency: [..], rate: [..]")
        if self.concurrency_num_prompts is not None and self.concurrency_prompts_per_slot is not None:
            raise ValueError("give concurrency_num_prompts or concurrency_prompts_per_slot, not both"
                             " — a fixed count per cell, or count = concurrency x per_slot")
        if self.rate and (self.rate_num_prompts is None) == (self.rate_duration_s is None):
            raise ValueError("rate points need exactly one of rate_num_prompts or rate_duration_s"
                             " — e.g. rate_duration_s: 60 sends rate x 60 requests")
        return self

    def concurrency_prompts(self, c: int) -> int:
        if self.concurrency_num_prompts is not None:
            return self.concurrency_num_prompts
        return c * (self.concurrency_prompts_per_slot or DEFAULT_PROMPTS_PER_SLOT)

    def rate_prompts(self, r: float) -> int:
        if self.rate_num_prompts is not None:
            return self.rate_num_prompts
        return max(1, math.ceil(r * float(self.rate_duration_s or 0)))


class WorkloadSpec(_Strict):
    """A dataset and its RunSpec fields (``sonnet_input_len`` ...); optional own load grid."""

    dataset: Literal["random", "sonnet", "sharegpt", "jsonl", "shared-prefix", "multi-turn", "trace"]
    dataset_path: str | None = None
    sonnet_input_len: int | None = None
    sonnet_output_len: int | None = None
    sonnet_prefix_len: int | None = None
    random_input_len: int | None = None
    random_output_len: int | None = None
    random_range_ratio: float | None = None
    random_prefix_len: int | None = None
    sharegpt_output_len: int | None = None
    # docs/workloads.md: shared-prefix, multi-turn, trace; a duration for any workload
    prefix_groups: int | None = None
    prefix_len: int | None = None
    question_len: int | None = None
    prefix_output_len: int | None = None
    multi_turn_output_len: int | None = None
    multi_turn_max_turns: int | None = None
    multi_turn_history: Literal["server", "dataset"] | None = None
    multi_turn_think_time: float | None = None
    trace_format: Literal["auto", "mooncake", "burstgpt", "azure"] | None = None
    trace_speed: float | None = None
    trace_block_size: int | None = None
    trace_output_len: int | None = None
    duration: float | None = None
    duration_grace: float | None = None
    load: LoadGrid | None = None  # replaces the experiment's load grid for this workload

    @model_validator(mode="after")
    def _fields_match_dataset(self) -> "WorkloadSpec":
        own = DATASET_FIELDS[self.dataset] + ANY_DATASET_FIELDS
        for name in self.run_fields():
            if name not in own:
                raise ValueError(f"{name} does not apply to dataset {self.dataset}"
                                 f" — its fields are {', '.join(own)}")
        if self.dataset in ("sharegpt", "jsonl", "multi-turn", "trace") and not self.dataset_path:
            raise ValueError(f"dataset {self.dataset} needs dataset_path — give the dataset file's path")
        return self

    def run_fields(self) -> dict[str, Any]:
        """The RunSpec fields this workload sets (None = RunSpec's default)."""
        skip = {"dataset", "load"}
        return {k: v for k, v in self.__dict__.items() if k not in skip and v is not None}

    def lengths(self) -> tuple[int | None, int | None]:
        """Nominal (input, output) tokens per request; None where the dataset decides."""
        from infermeter.runner.sections import WorkloadSection

        defaults = WorkloadSection.model_fields
        get = lambda k: getattr(self, k) if getattr(self, k) is not None else defaults[k].default  # noqa: E731
        if self.dataset == "sonnet":
            return get("sonnet_input_len"), get("sonnet_output_len")
        if self.dataset == "random":
            return get("random_input_len") + get("random_prefix_len"), get("random_output_len")
        if self.dataset == "shared-prefix":
            return get("prefix_len") + get("question_len"), get("prefix_output_len")
        if self.dataset == "multi-turn":
            return None, self.multi_turn_output_len
        if self.dataset == "trace":
            return None, self.trace_output_len
        return None, self.sharegpt_output_len


class RunOptions(_Strict):
    """RunSpec options shared by every cell."""

    ignore_eos: bool = True  # experiments compare servers: equal work by default
    seed: int = Field(default=0, ge=0)
    warmup_requests: int = Field(default=0, ge=0)
    temperature: float | None = 0.0
    top_p: float | None = None
    top_k: int | None = None
    stream: bool = True
    extra_body: dict[str, Any] = Field(default_factory=dict)
    percentile_metrics: str = "ttft,tpot,itl,e2el"
    metric_percentiles: str = "50,90,95,99"
    goodput: list[str] = Field(default_factory=list)
    save_generated_text: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)


class StopRules(_Strict):
    """When a cell stops early; a stopped cell still counts as finished (its result says why)."""

    max_errors: int | None = Field(default=None, ge=0)
    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    request_timeout: float | None = Field(default=3600.0, gt=0)
    stall_timeout: float | None = Field(default=300.0, gt=0)
    cell_timeout_s: float | None = Field(default=None, gt=0, lt=math.inf)


class ExperimentSpec(_Strict):
    name: str
    description: str = ""
    output_dir: str | None = None  # None: results/<name>, relative to the working directory
    targets: dict[str, TargetSpec]
    workloads: dict[str, WorkloadSpec]
    load: LoadGrid | None = None
    repeats: int = Field(default=1, ge=1, le=1000)
    # A load point whose run has fewer requests than min_samples is repeated, right after its
    # last regular repeat, until its repeats hold min_samples requests (at most MAX_REPEATS runs),
    # while the point's runs so far took less than repeat_budget_s of wall time.
    min_samples: int | None = Field(default=None, ge=1, le=1_000_000)
    repeat_budget_s: float | None = Field(default=None, gt=0, lt=math.inf)
    options: RunOptions = Field(default_factory=RunOptions)
    stop: StopRules = Field(default_factory=StopRules)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a plain name — use letters, digits, '-' and '_' (max 64)")
        return v

    @field_validator("targets", "workloads")
    @classmethod
    def _names(cls, v: dict) -> dict:
        if not v:
            raise ValueError("is empty — give at least one")
        for key in v:
            if not NAME_RE.match(str(key)):
                raise ValueError(f"name {key!r} is not a plain name — use letters, digits, '-' and '_' (max 64)")
        return v

    @model_validator(mode="after")
    def _load_everywhere(self) -> "ExperimentSpec":
        if self.load is None:
            missing = [w for w, ws in self.workloads.items() if ws.load is None]
            if missing:
                raise ValueError(f"no load grid for workload {missing[0]!r} — give a top-level load: "
                                 "(or a load: inside every workload)")
        return self

    @model_validator(mode="after")
    def _budget_needs_samples(self) -> "ExperimentSpec":
        if self.repeat_budget_s is not None and self.min_samples is None:
            raise ValueError("repeat_budget_s without min_samples — give min_samples: N (the requests each load "
                             "point should reach over its repeats), or leave the budget out")
        return self

    def repeats_for(self, num_prompts: int) -> int:
        """Runs of a load point with ``num_prompts`` requests: ``repeats``, or more to reach ``min_samples``."""
        if self.min_samples is None or num_prompts >= self.min_samples:
            return self.repeats
        return max(self.repeats, min(MAX_REPEATS, math.ceil(self.min_samples / max(num_prompts, 1))))

    @property
    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or f"results/{self.name}")

    def grid_for(self, workload: str) -> LoadGrid:
        ws = self.workloads[workload]
        grid = ws.load or self.load
        assert grid is not None
        return grid

    def resolved(self) -> dict[str, Any]:
        """The spec as run (defaults filled in, credentials in headers and URLs redacted), for spec.yaml."""
        from infermeter.secrets import redact_tree

        data = self.model_dump(mode="json")
        data["output_dir"] = str(self.resolved_output_dir)
        for t in data["targets"].values():
            t["headers"] = t.get("headers") or {}
        return redact_tree(data)
