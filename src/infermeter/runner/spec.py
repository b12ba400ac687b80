"""RunSpec: everything one run needs, validated before anything starts.

The CLI flags of ``infermeter run`` (vLLM's names, vLLM's meanings) map onto
this model one to one; experiment specs reuse it.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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
    # request shaping
    ignore_eos: bool = False
    temperature: float | None = 0.0
    top_p: float | None = None
    top_k: int | None = None
    stream: bool = True
    extra_body: dict[str, Any] = Field(default_factory=dict)
    request_timeout: float | None = 3600.0
    stall_timeout: float | None = 300.0
    # stop policy
    max_errors: int | None = None
    max_error_rate: float | None = None
    # metrics and output
    percentile_metrics: str = "ttft,tpot,itl,e2el"
    metric_percentiles: str = "50,90,95,99"
    goodput: list[str] = Field(default_factory=list)
    result_dir: str = "results"
    result_filename: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    save_generated_text: bool = False
    progress: bool = True

    def uses_embedded_engine(self) -> bool:
        return self.base_url is None and self.host is None and self.port is None
