"""Configuration of the test server and the fault-spec mini-language.

A fault spec is the string accepted by ``--fault`` and by the
``X-Test-Fault`` request header::

    MODE[; key=value]...

    stall; after=3; seconds=2
    http_500; rate=0.1
    reset; every=5; after=4; rst=1

Keys (all optional, defaults come from :class:`TestServerConfig`):

``after``    tokens sent before the fault fires (reset, stall, bad_json,
             bad_utf8, no_data, oversized, tgi_overloaded, die)
``seconds``  stall length (stall), header delay (slow_headers), delay before
             the error response (http_*), how long the body stays open after
             [DONE] (hold_open), how late the usage chunk is (late_usage)
``size``     bytes of the oversized event (oversized)
``rst``      1: reset with a TCP RST (SO_LINGER 0) instead of a FIN (reset)
``kind``     comment | event | both: what the no_data fault sends
``rate``     apply to this fraction of requests (config rules only)
``every``    apply to every k-th request (config rules only)
"""

from __future__ import annotations

import json
import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Every fault mode the server knows, besides the generic ``http_NNN``.
FAULT_MODES: tuple[str, ...] = (
    "none",
    "http_500",
    "http_400",
    "http_429",
    "reset",
    "stall",
    "slow_headers",
    "bad_json",
    "no_data",
    "no_done",
    "no_usage",
    "hold_open",
    "late_usage",
    "bad_utf8",
    "oversized",
    "tgi_overloaded",
    "die",
)

_HTTP_MODE = re.compile(r"^http_([1-5][0-9][0-9])$")
_INT_KEYS = {"after", "size", "every"}
_FLOAT_KEYS = {"seconds", "rate"}
_KEY_ALIASES = {
    "k": "after",
    "tokens": "after",
    "stall_s": "seconds",
    "delay_s": "seconds",
    "s": "seconds",
    "bytes": "size",
}


def _check_mode(mode: str) -> str:
    mode = mode.strip().lower()
    if mode in FAULT_MODES:
        return mode
    m = _HTTP_MODE.match(mode)
    if m and 400 <= int(m.group(1)) <= 599:
        return mode
    raise ValueError(
        f"unknown fault mode {mode!r}; known: {', '.join(FAULT_MODES)} or http_NNN (400-599)"
    )


class FaultRule(BaseModel):
    """One fault and, for config rules, which requests it applies to.

    Selection: ``every`` (request sequence number divisible by it, 1-based,
    counted over generation requests) wins over ``rate`` (seeded random
    fraction); with neither, the rule applies to every request.  Rules are
    tried in order; the first that matches is used.
    """

    model_config = ConfigDict(extra="forbid")

    mode: str
    after: int | None = Field(default=None, ge=0)
    seconds: float | None = Field(default=None, ge=0)
    size: int | None = Field(default=None, ge=1)
    rst: bool = False
    kind: Literal["comment", "event", "both"] = "both"
    rate: float | None = Field(default=None, ge=0.0, le=1.0)
    every: int | None = Field(default=None, ge=1)

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        return _check_mode(v)

    @classmethod
    def parse(cls, spec: str) -> FaultRule:
        """Parse ``"MODE; key=value; ..."`` (see module docstring)."""
        parts = [p.strip() for p in spec.split(";")]
        if not parts or not parts[0]:
            raise ValueError(f"empty fault spec {spec!r}")
        fields: dict[str, object] = {"mode": parts[0]}
        for part in parts[1:]:
            if not part:
                continue
            if "=" not in part:
                raise ValueError(f"fault parameter {part!r} is not key=value (in {spec!r})")
            key, value = (s.strip() for s in part.split("=", 1))
            key = _KEY_ALIASES.get(key.lower(), key.lower())
            try:
                if key in _INT_KEYS:
                    fields[key] = int(value)
                elif key in _FLOAT_KEYS:
                    fields[key] = float(value)
                elif key == "rst":
                    fields[key] = value.lower() in ("1", "true", "yes", "on")
                elif key == "kind":
                    fields[key] = value.lower()
                else:
                    raise ValueError(f"unknown fault parameter {key!r} (in {spec!r})")
            except ValueError as e:
                if "unknown fault parameter" in str(e):
                    raise
                raise ValueError(f"bad value for fault parameter {key!r}: {value!r}") from e
        return cls.model_validate(fields)


class TestServerConfig(BaseModel):
    """Everything the test server does, in one place.

    Times are in the unit their name says.  See the package docstring for
    the exact behaviour of each field.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    #: also listen on this port with SO_REUSEPORT: several test-server processes
    #: given the same shared_port split its connections (the kernel spreads
    #: them); each still has its own ``port`` for ``/stats``
    shared_port: int | None = Field(default=None, ge=1, le=65535)
    model: str = "test-model"
    #: further names accepted in the request's ``model`` field
    model_aliases: list[str] = Field(default_factory=list)
    max_model_len: int = Field(default=32768, ge=1)

    # timing
    ttft_ms: float = Field(default=50.0, ge=0)
    itl_ms: float = Field(default=5.0, ge=0)
    ttft_per_prompt_token_us: float = Field(default=0.0, ge=0)
    #: uniform jitter, +/- this much, on TTFT and on every inter-token gap
    ttft_jitter_ms: float = Field(default=0.0, ge=0)
    itl_jitter_ms: float = Field(default=0.0, ge=0)
    seed: int = 0

    # output / input lengths
    default_max_tokens: int = Field(default=16, ge=1)
    #: without ``ignore_eos`` (and always on TGI), stop after this many tokens
    eos_after: int | None = Field(default=None, ge=1)
    #: prompt_tokens = round(words * this); words = len(prompt.split())
    prompt_tokens_per_word: float = Field(default=1.0, ge=0)
    #: send the vLLM-style ``delta.role`` chunk before the first chat token
    chat_role_chunk: bool = True

    # saturation model
    max_concurrency: int | None = Field(default=None, ge=1)

    # faults
    faults: list[FaultRule] = Field(default_factory=list)
    #: defaults for config rules that have neither ``rate`` nor ``every``
    fault_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    fault_every: int | None = Field(default=None, ge=1)
    fault_after: int = Field(default=2, ge=0)
    stall_s: float = Field(default=1.0, ge=0)
    delay_s: float = Field(default=1.0, ge=0)
    oversized_bytes: int = Field(default=2 * 1024 * 1024, ge=1)
    allow_die: bool = False
    die_exit_code: int = 70

    # process / server
    cpu: int | None = Field(default=None, ge=0)
    use_uvloop: bool = True
    backlog: int = Field(default=4096, ge=1)
    shutdown_timeout_s: float = Field(default=1.0, ge=0)
    #: per-request records kept for ``GET /stats?requests=1``
    stats_keep_requests: int = Field(default=100_000, ge=0)
    #: generation request bodies (and headers) kept, newest last, for ``GET /stats?bodies=1``
    keep_bodies: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> TestServerConfig:
        if not self.allow_die and any(r.mode == "die" for r in self.faults):
            raise ValueError("fault 'die' needs allow_die=True (--allow-die)")
        return self

    @property
    def served_models(self) -> list[str]:
        return [self.model, *self.model_aliases]

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> TestServerConfig:
        return cls.model_validate(json.loads(text))
