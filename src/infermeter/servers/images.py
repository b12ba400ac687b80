"""Container images, pinned to explicit versioned tags per vendor (never ``latest``).

Tags were checked against each project's own documentation or published tag lists:

* vLLM: ``vllm/vllm-openai:v0.11.2`` (CUDA; vLLM's Docker docs show the
  ``vllm/vllm-openai:vX.Y.Z`` pattern) and AMD's ``rocm/vllm:rocm7.0.0_vllm_0.11.2_20251210``
  (the same vLLM release built on ROCm 7.0.0; listed on Docker Hub's rocm/vllm tags).
* TGI: ``ghcr.io/huggingface/text-generation-inference:3.3.5`` and ``3.3.5-rocm``
  (TGI's installation_nvidia.md / installation_amd.md).
* SGLang: ``lmsysorg/sglang:v0.5.5.post3`` and ``v0.5.5.post3-rocm700-mi30x`` (the ROCm
  7.0 build for MI300-series GPUs; dstack's own SGLang example uses it on MI300X).
* llama.cpp: ``ghcr.io/ggml-org/llama.cpp:server-b9014`` (CPU), ``server-cuda-b9014``,
  ``server-rocm-b9014`` (llama.cpp's docs/docker.md names the ``server``, ``server-cuda``,
  ``server-rocm`` images; its CI publishes each build as ``<image>-b<build>``).
* transformers serve has no official serving image: a pinned PyTorch image plus a pinned
  ``pip install "transformers[serving]==…"`` at start (``pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime``,
  ``rocm/pytorch:rocm6.4.1_ubuntu24.04_py3.12_pytorch_release_2.7.1``).

``image_problem`` is the check both the renderers and ``infermeter lint`` apply.
"""

from __future__ import annotations

import re

from infermeter.servers.settings import Vendor

TRANSFORMERS_VERSION = "5.24.0"

IMAGES: dict[str, dict[Vendor, str]] = {
    "vllm": {
        Vendor.NVIDIA: "vllm/vllm-openai:v0.11.2",
        Vendor.AMD: "rocm/vllm:rocm7.0.0_vllm_0.11.2_20251210",
    },
    "tgi": {
        Vendor.NVIDIA: "ghcr.io/huggingface/text-generation-inference:3.3.5",
        Vendor.AMD: "ghcr.io/huggingface/text-generation-inference:3.3.5-rocm",
    },
    "sglang": {
        Vendor.NVIDIA: "lmsysorg/sglang:v0.5.5.post3",
        Vendor.AMD: "lmsysorg/sglang:v0.5.5.post3-rocm700-mi30x",
    },
    "llama.cpp": {
        Vendor.CPU: "ghcr.io/ggml-org/llama.cpp:server-b9014",
        Vendor.NVIDIA: "ghcr.io/ggml-org/llama.cpp:server-cuda-b9014",
        Vendor.AMD: "ghcr.io/ggml-org/llama.cpp:server-rocm-b9014",
    },
    "transformers": {
        Vendor.NVIDIA: "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime",
        Vendor.AMD: "rocm/pytorch:rocm6.4.1_ubuntu24.04_py3.12_pytorch_release_2.7.1",
    },
}

_FLOATING_TAGS = {"latest", "main", "nightly", "dev", "edge", "stable", "rocm", "cuda", "server", "server-cuda",
                  "server-rocm", "latest-rocm"}


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    ref, _, digest = image.partition("@")
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = ref.rsplit(":", 1)
    else:
        repo, tag = ref, None
    return repo, tag, (digest or None)


def image_problem(image: str) -> str | None:
    """Why ``image`` is not pinned, or None when it is (a versioned tag or a digest)."""
    repo, tag, digest = split_image(image.strip())
    if digest:
        return None
    if tag is None:
        return f"image {image!r} has no tag (Docker pulls ':latest', whatever that is today)"
    if tag.lower() in _FLOATING_TAGS or not re.search(r"\d", tag):
        return f"image {image!r} uses the floating tag {tag!r}: what runs changes without notice"
    return None


def is_rocm_image(image: str) -> bool:
    """True for images built for AMD GPUs (ROCm)."""
    return "rocm" in image.lower()


def is_cuda_only_image(image: str) -> bool:
    """True for images that carry only NVIDIA's CUDA stack (cannot use an AMD GPU)."""
    low = image.lower()
    if is_rocm_image(low) or re.search(r"intel|gaudi|neuron|xeon|xpu|cpu|vulkan|musa", low):
        return False
    return bool(re.search(r"cuda|cudnn|cu1\d\d|nvcr\.io|vllm/vllm-openai(?!-rocm)|text-generation-inference|"
                          r"lmsysorg/sglang|pytorch/pytorch", low))


def default_image(profile: str, vendor: Vendor) -> str:
    from infermeter.errors import UserError

    images = IMAGES.get(profile, {})
    if vendor not in images:
        raise UserError(f"{profile} has no {vendor.value} image",
                        f"use --vendor {' or --vendor '.join(v.value for v in images)} or pass --image")
    return images[vendor]
