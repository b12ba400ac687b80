"""TensorRT-LLM's OpenAI-compatible server (``trtllm-serve``): honours ``ignore_eos`` with ``max_tokens``.

infermeter sends load to it at a URL; it has no launch profile, metric map or image here.
"""

from __future__ import annotations

from infermeter.backends.base import BackendSpec

BACKEND = BackendSpec(name="tensorrt-llm", title="TensorRT-LLM", default_endpoint="/v1/completions",
                      ignore_eos=True, aliases=("trt-llm",))
