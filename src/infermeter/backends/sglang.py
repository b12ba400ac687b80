"""SGLang (``python3 -m sglang.launch_server``): OpenAI-compatible, honours ``ignore_eos``.

Flags (``docs/advanced_features/server_arguments.md``): ``--model-path``, ``--tp-size``,
``--context-length``, ``--mem-fraction-static``, ``--max-running-requests``,
``--chunked-prefill-size``, ``--disable-radix-cache``, ``--enable-metrics``,
``--enable-cache-report``, ``--served-model-name``, ``--dtype``, ``--revision``,
``--tokenizer-path``.  ``/health``, ``/get_server_info`` (``version``), ``/metrics``.

Images: ``lmsysorg/sglang:v0.5.5.post3`` and ``v0.5.5.post3-rocm700-mi30x`` (the ROCm 7.0
build for MI300-series GPUs; dstack's own SGLang example uses it on MI300X).
"""

from __future__ import annotations

from infermeter.backends.base import (BackendSpec, Images, Launch, LintRules, MetricMap, counter, gauge,
                                      histogram, module_is, program_is)
from infermeter.backends.launch import add
from infermeter.backends.settings import Vendor

METRICS = MetricMap("sglang:", (
    gauge("running", "sglang:num_running_reqs"),
    gauge("waiting", "sglang:num_queue_reqs"),
    gauge("kv_usage", "sglang:token_usage", agg="mean"),
    gauge("prefix_hit_rate", "sglang:cache_hit_rate", agg="mean"),
    counter("prompt_tokens", "sglang:prompt_tokens"),
    counter("generation_tokens", "sglang:generation_tokens"),
    counter("requests", "sglang:num_requests"),
    histogram("ttft", "sglang:time_to_first_token_seconds"),
    histogram("itl", "sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    histogram("e2e", "sglang:e2e_request_latency_seconds"),
    histogram("queue", "sglang:queue_time_seconds"),
), notes="token_usage is the KV-pool fraction in use; cache_hit_rate is SGLang's own running rate",
   detect_order=10)


def render(cmd, s, vendor, container, metrics_port):
    add(cmd, "model", "--model-path", s.model)
    add(cmd, "host", "--host", cmd.host)
    add(cmd, "port", "--port", str(s.port))
    add(cmd, "served_model_name", "--served-model-name", s.name)
    add(cmd, "tensor_parallel", "--tp-size", str(s.tensor_parallel))
    add(cmd, "max_model_len", "--context-length", str(s.max_model_len))
    add(cmd, "memory_fraction", "--mem-fraction-static", str(s.memory_fraction))
    add(cmd, "max_batch", "--max-running-requests", str(s.max_batch))
    add(cmd, "max_batched_tokens", "--chunked-prefill-size", str(s.max_batched_tokens))
    if s.prefix_caching:
        cmd.applied["prefix_caching"] = "radix cache on (SGLang's default; it has no flag to force it on)"
    else:
        add(cmd, "prefix_caching", LAUNCH.prefix_caching_off)
    cmd.argv += ["--enable-metrics", "--enable-cache-report"]
    if s.dtype:
        add(cmd, "dtype", "--dtype", s.dtype)
    if s.revision:
        add(cmd, "revision", "--revision", s.revision)
    if s.tokenizer:
        add(cmd, "tokenizer", "--tokenizer-path", s.tokenizer)


LAUNCH = Launch(
    program=("python3", "-m", "sglang.launch_server"), default_port=30000, render=render,
    vendors=(Vendor.NVIDIA, Vendor.AMD), prefix_caching_on="(default: radix cache on)",
    prefix_caching_off="--disable-radix-cache", info_path="/get_server_info", metrics_flag="--enable-metrics",
    tp_flags=("--tp-size", "--tp", "--tensor-parallel-size"))

IMAGES = Images({
    Vendor.NVIDIA: "lmsysorg/sglang:v0.5.5.post3",
    Vendor.AMD: "lmsysorg/sglang:v0.5.5.post3-rocm700-mi30x",
}, family=r"sglang|sgl-", cuda_only=(r"lmsysorg/sglang",))


def _starts(words: list[str]) -> bool:
    return module_is("sglang.launch_server")(words) or program_is("sglang", then="serve")(words)


BACKEND = BackendSpec(
    name="sglang", title="SGLang", default_endpoint="/v1/completions", ignore_eos=True,
    version_path="/get_server_info", metrics=METRICS, launch=LAUNCH, images=IMAGES,
    lint=LintRules(starts=_starts, needs_gpu=True))
