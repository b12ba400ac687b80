"""Backends: what each server accepts, and how to ask it for a fixed output length.

A comparison is only fair when every backend generated the same number of
tokens.  vLLM, SGLang, llama.cpp and TensorRT-LLM's OpenAI server honour
``ignore_eos`` with ``max_tokens``; TGI's APIs and ``transformers serve`` have
no such field (the latter rejects unknown fields with HTTP 422), so their
output may stop early at EOS: the result says so, and the equal-work check
after the run measures what actually came back.
"""

from __future__ import annotations

from dataclasses import dataclass

from infermeter.errors import UserError


@dataclass(frozen=True)
class Backend:
    name: str
    default_endpoint: str
    ignore_eos: bool  # accepts ignore_eos in the request body
    version_path: str | None
    note: str = ""

    def fixed_length_method(self, protocol: str) -> str:
        if protocol == "tgi":
            return "none: TGI has no ignore_eos; generation may stop at EOS before max_new_tokens"
        if self.ignore_eos:
            return "ignore_eos + max_tokens"
        return f"none: {self.name} has no ignore_eos; generation may stop at EOS before max_tokens"


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in [
        Backend("vllm", "/v1/completions", True, "/version"),
        Backend("openai", "/v1/completions", True, "/version", "any OpenAI-compatible server (vLLM semantics)"),
        Backend("openai-chat", "/v1/chat/completions", True, "/version", "any OpenAI-compatible chat server"),
        Backend("sglang", "/v1/completions", True, "/get_server_info"),
        Backend("llama.cpp", "/v1/completions", True, "/props"),
        Backend("tensorrt-llm", "/v1/completions", True, None),
        Backend("lmdeploy", "/v1/completions", True, None),
        Backend("tgi", "/generate_stream", False, "/info"),
        Backend("transformers", "/v1/chat/completions", False, None,
                "transformers serve rejects unknown fields such as ignore_eos (HTTP 422)"),
    ]
}
ALIASES = {"llamacpp": "llama.cpp", "llama-cpp": "llama.cpp", "trt-llm": "tensorrt-llm",
           "hf-tgi": "tgi", "transformers-serve": "transformers"}


def get_backend(name: str) -> Backend:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BACKENDS:
        raise UserError(f"--backend {name!r} is not known", f"use one of: {', '.join(BACKENDS)}")
    return BACKENDS[key]


def protocol_for(endpoint: str) -> str:
    """Which wire protocol an endpoint path speaks."""
    path = endpoint.rstrip("/")
    if path.endswith("/chat/completions"):
        return "openai-chat"
    if path.endswith("/completions"):
        return "openai"
    if path.endswith("/generate_stream") or path.endswith("/generate"):
        return "tgi"
    raise UserError(
        f"--endpoint {endpoint!r} is not an endpoint infermeter speaks",
        "use /v1/completions, /v1/chat/completions or /generate_stream (TGI)",
    )
