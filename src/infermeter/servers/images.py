"""Container images: the pinned per-vendor images of each backend (``BackendSpec.images``),
and the checks both the renderers and ``infermeter lint`` apply to any image.

Each backend module lists its images with explicit versioned tags (never ``latest``)
and where each tag was checked; ``image_problem`` rejects unpinned ones.
"""

from __future__ import annotations

import re

from infermeter.backends import all_backends, get_profile
from infermeter.backends.settings import Vendor
from infermeter.errors import UserError

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
    """True for images that carry only NVIDIA's CUDA stack (cannot use an AMD GPU): a generic
    CUDA marker, or a repository a backend lists as CUDA-only (``Images.cuda_only``)."""
    low = image.lower()
    if is_rocm_image(low) or re.search(r"intel|gaudi|neuron|xeon|xpu|cpu|vulkan|musa", low):
        return False
    if re.search(r"cuda|cudnn|cu1\d\d|nvcr\.io", low):
        return True
    return any(re.search(rx, low) for spec in all_backends().values() if spec.images
               for rx in spec.images.cuda_only)


def image_family(image: str) -> list[str]:
    """The backends whose own images ``image``'s repository belongs to (``Images.family``)."""
    repo = split_image(image)[0]
    return [name for name, spec in all_backends().items()
            if spec.images and spec.images.family and re.search(spec.images.family, repo, re.I)]


def default_image(profile: str, vendor: Vendor) -> str:
    images = get_profile(profile).spec.images
    by_vendor = images.by_vendor if images else {}
    if vendor not in by_vendor:
        raise UserError(f"{profile} has no {vendor.value} image",
                        f"use --vendor {' or --vendor '.join(v.value for v in by_vendor)} or pass --image")
    return by_vendor[vendor]
