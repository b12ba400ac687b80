"""``ServerSettings``: the settings every server under test is launched with.

One model, one set of numbers; each profile maps them onto its own flags so that
backends are compared under equal settings.  Every memory and batching setting has
an explicit value here (never "the server's default": vLLM's
``gpu_memory_utilization`` default moved from 0.9 to 0.92, and its ``max_num_seqs``
default depends on the GPU), and every rendered command passes it.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infermeter.secrets import ENV_NAME, is_secret

DTYPES = ("auto", "float16", "bfloat16", "float32")


class Vendor(str, Enum):
    """Where the server runs: the image, device flags and GPU resources follow from it."""

    NVIDIA = "nvidia"
    AMD = "amd"
    CPU = "cpu"


class ServerSettings(BaseModel):
    """What to serve and with which limits; profiles turn it into flags."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    """Hugging Face model id or local path (llama.cpp: a ``.gguf`` file)."""
    revision: str | None = None
    """Model revision (branch, tag or commit) where the server takes one."""
    tokenizer: str | None = None
    """Tokenizer id or path, when it differs from the model's."""
    served_model_name: str | None = None
    """The name clients send and ``/v1/models`` lists (default: ``model``)."""
    tensor_parallel: int = Field(default=1, ge=1, le=64)
    """GPUs one model instance is split across (tensor parallelism)."""
    max_model_len: int = Field(default=4096, ge=16, le=10_000_000)
    """Longest sequence (prompt + output tokens) one request may use."""
    memory_fraction: float = Field(default=0.9, gt=0.0, le=1.0)
    """Fraction of each GPU's memory the server may take (weights + KV cache)."""
    max_batch: int = Field(default=128, ge=1, le=100_000)
    """Most sequences decoded concurrently (running batch)."""
    max_batched_tokens: int = Field(default=8192, ge=16, le=10_000_000)
    """Most tokens one scheduler step processes (the prefill chunk budget)."""
    port: int = Field(default=8000, ge=1, le=65535)
    prefix_caching: bool = False
    """Reuse KV cache across requests sharing a prefix (off: every prompt is computed)."""
    dtype: str | None = None
    """Weights/activations dtype (auto, float16, bfloat16, float32); None: the model's own."""
    extra_args: list[str] = Field(default_factory=list)
    """Appended verbatim to the server's command line."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment for the server (non-secret values only)."""
    secrets: list[str] = Field(default_factory=lambda: ["HF_TOKEN"])
    """Env names passed through by NAME only (their values never appear in files)."""

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str | None) -> str | None:
        if v is not None and v not in DTYPES:
            raise ValueError(f"must be one of {', '.join(DTYPES)}")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
            if is_secret(name, value):
                raise ValueError(f"{name!r} looks like a secret: list its NAME in secrets instead of its value")
            if "\n" in value or "\x00" in value:
                raise ValueError(f"the value of {name!r} must be one line")
        return v

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: list[str]) -> list[str]:
        for name in v:
            if not ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
        return list(dict.fromkeys(v))

    @field_validator("extra_args")
    @classmethod
    def _extra(cls, v: list[str]) -> list[str]:
        for arg in v:
            if "\n" in arg or "\x00" in arg:
                raise ValueError("each extra argument must be one line")
        return v

    @model_validator(mode="after")
    def _names(self) -> "ServerSettings":
        overlap = set(self.env) & set(self.secrets)
        if overlap:
            raise ValueError(f"{', '.join(sorted(overlap))} is both in env and in secrets")
        return self

    @property
    def name(self) -> str:
        """The model name clients send."""
        return self.served_model_name or self.model
