"""vLLM (``vllm serve``): OpenAI-compatible completions and chat, honours ``ignore_eos``.

Flags from ``vllm serve`` (engine args docs; ``vllm/config/cache.py``):
``--tensor-parallel-size``, ``--max-model-len``, ``--gpu-memory-utilization``,
``--max-num-seqs``, ``--max-num-batched-tokens``, ``--enable-prefix-caching`` /
``--no-enable-prefix-caching`` (argparse BooleanOptionalAction), ``--served-model-name``,
``--dtype``, ``--revision``, ``--tokenizer``.  ``/health``, ``/version``, ``/metrics``.

Images: ``vllm/vllm-openai:v0.11.2`` (CUDA; vLLM's Docker docs show the
``vllm/vllm-openai:vX.Y.Z`` pattern) and AMD's ``rocm/vllm:rocm7.0.0_vllm_0.11.2_20251210``
(the same vLLM release built on ROCm 7.0.0; listed on Docker Hub's rocm/vllm tags).
"""

from __future__ import annotations

from infermeter.backends.base import (BackendSpec, Images, Launch, LintRules, MetricMap, counter, gauge,
                                      histogram, module_is, program_is)
from infermeter.backends.launch import add
from infermeter.backends.settings import Vendor

METRICS = MetricMap("vllm:", (
    gauge("running", "vllm:num_requests_running"),
    gauge("waiting", "vllm:num_requests_waiting"),
    gauge("kv_usage", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", agg="mean"),
    gauge("prefix_hit_rate", "vllm:gpu_prefix_cache_hit_rate", agg="mean"),  # V0 only
    counter("prefix_queries", "vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries"),
    counter("prefix_hits", "vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits"),
    counter("preemptions", "vllm:num_preemptions", "vllm:num_preemptions_total"),
    counter("prompt_tokens", "vllm:prompt_tokens"),
    counter("generation_tokens", "vllm:generation_tokens"),
    counter("requests", "vllm:request_success"),
    histogram("ttft", "vllm:time_to_first_token_seconds"),
    histogram("itl", "vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    histogram("e2e", "vllm:e2e_request_latency_seconds"),
    histogram("queue", "vllm:request_queue_time_seconds"),
), notes="kv_cache_usage_perc is a fraction 0..1 despite its name; V1 renamed gpu_cache_usage_perc, "
         "gpu_prefix_cache_*, and split time_per_output_token_seconds into inter_token_latency_seconds",
   detect_order=0)  # first: a vLLM-compatible server may also export TGI-style gauges


def render(cmd, s, vendor, container, metrics_port):
    add(cmd, "model", s.model)
    add(cmd, "host", "--host", cmd.host)
    add(cmd, "port", "--port", str(s.port))
    add(cmd, "served_model_name", "--served-model-name", s.name)
    add(cmd, "tensor_parallel", "--tensor-parallel-size", str(s.tensor_parallel))
    add(cmd, "max_model_len", "--max-model-len", str(s.max_model_len))
    add(cmd, "memory_fraction", "--gpu-memory-utilization", str(s.memory_fraction))
    add(cmd, "max_batch", "--max-num-seqs", str(s.max_batch))
    add(cmd, "max_batched_tokens", "--max-num-batched-tokens", str(s.max_batched_tokens))
    add(cmd, "prefix_caching", LAUNCH.prefix_caching_on if s.prefix_caching else LAUNCH.prefix_caching_off)
    if s.dtype:
        add(cmd, "dtype", "--dtype", s.dtype)
    if s.revision:
        add(cmd, "revision", "--revision", s.revision)
    if s.tokenizer:
        add(cmd, "tokenizer", "--tokenizer", s.tokenizer)
    cmd.notes.append("/metrics is always served on the API port")


LAUNCH = Launch(
    program=("vllm", "serve"), default_port=8000, render=render, vendors=(Vendor.NVIDIA, Vendor.AMD),
    prefix_caching_on="--enable-prefix-caching", prefix_caching_off="--no-enable-prefix-caching",
    info_path="/version", tp_flags=("--tensor-parallel-size", "-tp"), version_args=("--version",))

IMAGES = Images({
    Vendor.NVIDIA: "vllm/vllm-openai:v0.11.2",
    Vendor.AMD: "rocm/vllm:rocm7.0.0_vllm_0.11.2_20251210",
}, family=r"vllm", cuda_only=(r"vllm/vllm-openai(?!-rocm)",))


def _starts(words: list[str]) -> bool:
    return program_is("vllm", then="serve")(words) or module_is("vllm.entrypoints.openai.api_server")(words)


BACKEND = BackendSpec(
    name="vllm", title="vLLM", default_endpoint="/v1/completions", ignore_eos=True, version_path="/version",
    metrics=METRICS, launch=LAUNCH, images=IMAGES, lint=LintRules(starts=_starts, needs_gpu=True))
