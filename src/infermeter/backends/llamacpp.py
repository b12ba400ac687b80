"""llama.cpp (``llama-server``): OpenAI-compatible, honours ``ignore_eos``; the embedded engine.

Flags (``llama-server --help``): ``--model``/``--hf-repo``, ``--alias``, ``--parallel``,
``--ctx-size`` (the total KV cache, split evenly across the parallel slots, so it is
``max_model_len × max_batch``), ``--batch-size``, ``--ubatch-size``, ``--n-gpu-layers``,
``--split-mode``, ``--cont-batching``, ``--cache-prompt`` / ``--no-cache-prompt``,
``--metrics``.  ``/health``, ``/props`` (``build_info``), ``/metrics``.

Images: ``ghcr.io/ggml-org/llama.cpp:server-b9014`` (CPU), ``server-cuda-b9014``,
``server-rocm-b9014`` (llama.cpp's docs/docker.md names the ``server``, ``server-cuda``,
``server-rocm`` images; its CI publishes each build as ``<image>-b<build>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infermeter.backends.base import BackendSpec, Images, Launch, LintRules, MetricMap, counter, flag_value, \
    gauge, program_is
from infermeter.backends.launch import add, not_applicable
from infermeter.backends.settings import ServerSettings, Vendor
from infermeter.errors import UserError

UBATCH = 512
MAX_SLOTS = 256  # llama.cpp's LLAMA_MAX_SEQ: "n_seq_max must be <= 256", the server exits otherwise
MODEL_DIR = "/models"  # where the container finds a local GGUF file


def _derive(values: dict[str, Any]) -> None:
    # llamacpp:prompt_tokens_total excludes prompt tokens reused from the cache
    # (prompt_tokens_cached_total counts those): every prompt token was looked up.
    hits, evaluated = values.get("prefix_hits"), values.get("prompt_tokens")
    if hits is not None and evaluated is not None:
        values["prefix_queries"] = hits + evaluated


METRICS = MetricMap("llamacpp:", (
    gauge("running", "llamacpp:requests_processing"),
    gauge("waiting", "llamacpp:requests_deferred"),
    gauge("kv_usage", "llamacpp:kv_cache_usage_ratio", agg="mean"),  # older builds only
    gauge("kv_tokens", "llamacpp:kv_cache_tokens"),  # older builds only
    counter("prompt_tokens", "llamacpp:prompt_tokens"),
    counter("prefix_hits", "llamacpp:prompt_tokens_cached"),
    counter("generation_tokens", "llamacpp:tokens_predicted"),
    counter("n_decode", "llamacpp:n_decode"),
    counter("prompt_seconds", "llamacpp:prompt_seconds"),
    counter("predict_seconds", "llamacpp:tokens_predicted_seconds"),
    gauge("busy_slots_per_decode", "llamacpp:n_busy_slots_per_decode", agg="mean"),
), notes="the llama.cpp of llama-cpp-python 0.3.36 exports no kv_cache_usage_ratio (older builds did) "
         "and no latency histograms; prompt_tokens excludes cached tokens (prompt_tokens_cached)",
   derive=_derive, detect_order=20)


def served_name(settings: ServerSettings) -> str:
    if settings.served_model_name:
        return settings.served_model_name
    if settings.model.endswith(".gguf"):
        return Path(settings.model).stem
    return settings.model


def render(cmd, s, vendor, container, metrics_port):
    model = s.model
    if model.endswith(".gguf") or Path(model).expanduser().is_file():
        path = Path(model).expanduser()
        if container:
            path = Path(MODEL_DIR) / path.name
            cmd.notes.append(f"mount the folder holding {Path(model).name} at {MODEL_DIR}")
        add(cmd, "model", "--model", str(path))
    else:
        add(cmd, "model", "--hf-repo", model)
    add(cmd, "served_model_name", "--alias", served_name(s))
    add(cmd, "host", "--host", cmd.host)
    add(cmd, "port", "--port", str(s.port))
    if s.max_batch > MAX_SLOTS:
        raise UserError(f"llama.cpp serves at most {MAX_SLOTS} parallel slots, not max_batch {s.max_batch}",
                        f"use max_batch {MAX_SLOTS} or less: requests beyond the slots wait in llama-server's queue")
    total_ctx = s.max_model_len * s.max_batch
    add(cmd, "max_batch", "--parallel", str(s.max_batch), "--cont-batching")
    add(cmd, "max_model_len", "--ctx-size", str(total_ctx))
    cmd.notes.append(f"--ctx-size {total_ctx} is the total KV cache: {s.max_batch} slots × "
                     f"{s.max_model_len} tokens each")
    add(cmd, "max_batched_tokens", "--batch-size", str(s.max_batched_tokens),
        "--ubatch-size", str(min(UBATCH, s.max_batched_tokens)))
    if vendor is Vendor.CPU:
        add(cmd, "gpu_layers", "--n-gpu-layers", "0")
        if s.tensor_parallel != 1:
            raise UserError("llama.cpp on CPU has no tensor parallelism", "use --tensor-parallel 1")
        not_applicable(cmd, "tensor_parallel", "CPU (1)")
        not_applicable(cmd, "memory_fraction", "CPU run; llama.cpp has no memory-fraction setting")
    else:
        add(cmd, "gpu_layers", "--n-gpu-layers", "999")
        if s.tensor_parallel == 1:
            add(cmd, "tensor_parallel", "--split-mode", "none")
        else:
            add(cmd, "tensor_parallel", "--split-mode", "row")
            cmd.notes.append(f"llama.cpp splits rows of each layer across the {s.tensor_parallel} visible "
                             "GPUs (--split-mode row): its closest analogue to tensor parallelism")
        not_applicable(cmd, "memory_fraction",
                       "llama.cpp allocates the weights plus the --ctx-size KV cache, no fraction setting")
    add(cmd, "prefix_caching", LAUNCH.prefix_caching_on if s.prefix_caching else LAUNCH.prefix_caching_off)
    cmd.argv.append("--metrics")
    if s.dtype:
        not_applicable(cmd, "dtype", "the GGUF file fixes the weight types")
    if s.revision:
        not_applicable(cmd, "revision", "llama.cpp loads a file")
    if s.tokenizer:
        not_applicable(cmd, "tokenizer", "the tokenizer is inside the GGUF file")


LAUNCH = Launch(
    program=("llama-server",), default_port=8080, render=render, vendors=(Vendor.CPU, Vendor.NVIDIA, Vendor.AMD),
    prefix_caching_on="--cache-prompt", prefix_caching_off="--no-cache-prompt", info_path="/props",
    metrics_flag="--metrics", container_program=("/app/llama-server",), image_entrypoint=True,
    version_args=("--version",), served_name=served_name, aliases=("llama-server",), model_dir=MODEL_DIR,
    max_batch_cap=MAX_SLOTS)

IMAGES = Images({
    Vendor.CPU: "ghcr.io/ggml-org/llama.cpp:server-b9014",
    Vendor.NVIDIA: "ghcr.io/ggml-org/llama.cpp:server-cuda-b9014",
    Vendor.AMD: "ghcr.io/ggml-org/llama.cpp:server-rocm-b9014",
}, family=r"llama\.cpp|llama-cpp|llamacpp")


def _single_gpu(argv: list[str]) -> tuple[str, str] | None:
    if flag_value(argv, ("--split-mode", "-sm")) == "none":
        return " (--split-mode none)", ", or use --split-mode row/layer"
    return None


def _build_info(info: dict[str, Any]) -> str | None:
    build = info.get("build_info")
    return str(build) if build else None


BACKEND = BackendSpec(
    name="llama.cpp", default_endpoint="/v1/completions", ignore_eos=True, version_path="/props",
    aliases=("llamacpp", "llama-cpp", "llama_cpp"), metrics=METRICS, launch=LAUNCH, images=IMAGES,
    lint=LintRules(starts=program_is("llama-server"), single_gpu=_single_gpu), version_from_info=_build_info)
