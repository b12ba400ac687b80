"""Hugging Face Text Generation Inference (``text-generation-launcher``).

Requests: its own ``/generate_stream`` API by default (``--endpoint /v1/chat/completions``
for its Messages API).  Neither API has ``ignore_eos``: output may stop at EOS before
``max_new_tokens``, and the equal-work check after a run measures what came back.

Flags (``docs/source/reference/launcher.md``, ``launcher/src/main.rs`` v3.3):
``--model-id``, ``--num-shard``, ``--max-input-tokens`` (< ``--max-total-tokens``),
``--max-total-tokens``, ``--max-batch-prefill-tokens``, ``--cuda-memory-fraction``,
``--max-concurrent-requests``, ``--hostname``, ``--port``, ``--prometheus-port``,
``--dtype`` (float16|bfloat16), ``--revision``; prefix caching is the environment
variable ``PREFIX_CACHING`` (read by the launcher and the Python shards).
``--max-batch-size`` is ignored when chunked prefill is on (the default), so the
concurrent-sequence limit is ``--max-concurrent-requests``: TGI answers requests over
it with HTTP 429 instead of queueing them.  ``/health``, ``/info``, ``/metrics``.

Images: ``ghcr.io/huggingface/text-generation-inference:3.3.5`` and ``3.3.5-rocm``
(TGI's installation_nvidia.md / installation_amd.md).  The image's entrypoint listens on
port 80 unless ``PORT`` is set; the launcher alone defaults to 3000.
"""

from __future__ import annotations

import re

from infermeter.backends.base import BackendSpec, Images, Launch, LintRules, MetricMap, Series, counter, gauge, \
    histogram, program_is
from infermeter.backends.launch import NA, add, not_applicable
from infermeter.backends.settings import Vendor
from infermeter.errors import UserError

METRICS = MetricMap("tgi_", (
    gauge("running", "tgi_batch_current_size"),
    gauge("waiting", "tgi_queue_size"),
    gauge("batch_max_tokens", "tgi_batch_current_max_tokens"),
    counter("requests", "tgi_request_success", "tgi_request_count"),
    Series("generation_tokens", ("tgi_request_generated_tokens",), "histogram_sum"),
    Series("prompt_tokens", ("tgi_request_input_length",), "histogram_sum"),
    histogram("e2e", "tgi_request_duration"),
    histogram("queue", "tgi_request_queue_duration"),
    histogram("itl", "tgi_request_mean_time_per_token_duration"),
), notes="TGI exports no time-to-first-token histogram and no KV-cache usage; token counts are the "
         "sums of its per-request token histograms, counted when a request ends; its itl is the "
         "per-request mean time per token",
   detect_order=90)  # last: other servers (the in-tree test server) may export TGI-style gauges too


def render(cmd, s, vendor, container, metrics_port):
    max_input = s.max_model_len - 1
    prefill = max(s.max_batched_tokens, max_input)
    add(cmd, "model", "--model-id", s.model)
    add(cmd, "host", "--hostname", cmd.host)
    add(cmd, "port", "--port", str(s.port))
    cmd.metrics_port = metrics_port if metrics_port is not None else s.port + 1000 if s.port < 64535 else 9000
    cmd.argv += ["--prometheus-port", str(cmd.metrics_port)]
    add(cmd, "tensor_parallel", "--num-shard", str(s.tensor_parallel))
    add(cmd, "max_model_len", "--max-total-tokens", str(s.max_model_len), "--max-input-tokens", str(max_input))
    add(cmd, "memory_fraction", "--cuda-memory-fraction", str(s.memory_fraction))
    add(cmd, "max_batch", "--max-concurrent-requests", str(s.max_batch))
    add(cmd, "max_batched_tokens", "--max-batch-prefill-tokens", str(prefill))
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
        add(cmd, "dtype", "--dtype", s.dtype)
    if s.revision:
        add(cmd, "revision", "--revision", s.revision)
    if s.tokenizer:
        not_applicable(cmd, "tokenizer", "TGI loads the tokenizer of --model-id")
    cmd.notes.append("TGI rejects requests beyond --max-concurrent-requests with HTTP 429 (no queue): "
                     "keep the load's concurrency at or below max_batch")
    cmd.notes.append(f"/metrics on the API port; also on --prometheus-port {cmd.metrics_port}")


LAUNCH = Launch(
    program=("text-generation-launcher",), default_port=3000, render=render, vendors=(Vendor.NVIDIA, Vendor.AMD),
    prefix_caching_on="PREFIX_CACHING=1", prefix_caching_off="PREFIX_CACHING=0", info_path="/info",
    port_flags=("--port", "-p"), tp_flags=("--num-shard",), container_program=("/tgi-entrypoint.sh",),
    image_entrypoint=True, version_args=("--version",), separate_metrics_port=True,
    max_batch_rejects=True)

IMAGES = Images({
    Vendor.NVIDIA: "ghcr.io/huggingface/text-generation-inference:3.3.5",
    Vendor.AMD: "ghcr.io/huggingface/text-generation-inference:3.3.5-rocm",
}, family=r"text-generation-inference|/tgi", cuda_only=(r"text-generation-inference",))


def _listen_port(env, image: str) -> str:
    """The image's entrypoint listens on $PORT (default 80); the bare launcher on 3000."""
    return env.get("PORT") or ("80" if re.search(IMAGES.family or "", image, re.I) else "3000")


BACKEND = BackendSpec(
    name="tgi", title="TGI", default_endpoint="/generate_stream", ignore_eos=False, version_path="/info",
    aliases=("hf-tgi", "text-generation-inference"), metrics=METRICS, launch=LAUNCH, images=IMAGES,
    lint=LintRules(starts=program_is("text-generation-launcher", "tgi-entrypoint.sh"), needs_gpu=True,
                   shards_all_gpus=True, listen_port=_listen_port),
    revision_from_info=lambda info: info.get("model_sha"))
