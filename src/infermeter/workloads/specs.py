"""The workload specs: one pydantic model per dataset, a union keyed on ``name``.

Defaults are those of ``vllm bench serve`` for the matching flags
(``--sonnet-input-len 550``, ``--sonnet-output-len 150``,
``--sonnet-prefix-len 200``, ``--random-input-len 1024``,
``--random-output-len 128``, ``--random-range-ratio 0.0``,
``--random-prefix-len 0``, ``--sharegpt-output-len`` unset).

Bad values raise :class:`~infermeter.errors.UserError` straight out of the
model's constructor (pydantic lets exceptions that are not ``ValueError``
through unchanged), with the message naming the command-line flag as
:func:`flag` spells it.  Wrong types (a string for a number, an unknown key)
raise pydantic's ``ValidationError``; :func:`parse_spec` turns those into a
``UserError`` as well.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from infermeter.errors import UserError


def length_range(length: int, ratio: float) -> tuple[int, int]:
    """vLLM's ``[floor(n*(1-r)), ceil(n*(1+r))]``, without float noise (``10*(1-0.9)`` is 1, not 0)."""
    return math.floor(length * (1 - ratio) + 1e-9), math.ceil(length * (1 + ratio) - 1e-9)


def flag(dataset: str, field: str) -> str:
    """The command-line flag for ``field`` of dataset ``dataset`` (``--sonnet-input-len``).

    File paths of every dataset share ``--dataset-path``, as in vLLM.
    """
    if field == "path":
        return "--dataset-path"
    own = _OWN_FLAGS.get((dataset, field))
    if own:
        return own
    return f"--{dataset}-{field.replace('_', '-')}"


_OWN_FLAGS = {("shared-prefix", "groups"): "--prefix-groups", ("shared-prefix", "prefix_len"): "--prefix-len",
              ("shared-prefix", "question_len"): "--question-len",
              ("shared-prefix", "output_len"): "--prefix-output-len"}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def _check_positive(self, field: str, minimum: int = 1) -> None:
        value = getattr(self, field)
        if value is not None and value < minimum:
            name = self.name  # type: ignore[attr-defined]
            raise UserError(f"{flag(name, field)} {value} must be at least {minimum}",
                            f"pass {flag(name, field)} {minimum} or more")


class SonnetSpec(_Spec):
    """Lines of Shakespeare's sonnets behind a shared prefix (vLLM's ``sonnet`` dataset)."""

    name: Literal["sonnet"] = "sonnet"
    input_len: int = 550
    output_len: int = 150
    prefix_len: int = 200
    path: Path | None = None  # --dataset-path: a text file of lines; None: the bundled sonnets

    @model_validator(mode="after")
    def _check(self) -> SonnetSpec:
        self._check_positive("input_len")
        self._check_positive("output_len")
        self._check_positive("prefix_len", 0)
        if self.prefix_len > self.input_len:
            raise UserError(
                f"--sonnet-prefix-len {self.prefix_len} is larger than --sonnet-input-len {self.input_len}",
                f"pass --sonnet-prefix-len {self.input_len} or less, or raise --sonnet-input-len",
            )
        return self


class RandomSpec(_Spec):
    """Random tokens, exactly ``input_len`` of them (plus a shared ``prefix_len`` prefix)."""

    name: Literal["random"] = "random"
    input_len: int = 1024
    output_len: int = 128
    range_ratio: float = 0.0
    prefix_len: int = 0

    @model_validator(mode="after")
    def _check(self) -> RandomSpec:
        self._check_positive("input_len", 0)
        self._check_positive("output_len")
        self._check_positive("prefix_len", 0)
        if not (0.0 <= self.range_ratio < 1.0) or math.isnan(self.range_ratio):
            raise UserError(f"--random-range-ratio {self.range_ratio} is outside [0, 1)",
                            "pass a ratio r with 0 <= r < 1 (lengths are drawn from [n*(1-r), n*(1+r)])")
        if self.prefix_len + length_range(self.input_len, self.range_ratio)[0] < 1:
            raise UserError(
                f"--random-input-len {self.input_len} with --random-range-ratio {self.range_ratio} "
                f"and --random-prefix-len {self.prefix_len} can make an empty prompt",
                "raise --random-input-len or --random-prefix-len, or lower --random-range-ratio",
            )
        return self


class ShareGPTSpec(_Spec):
    """First human turn of ShareGPT conversations; the reply's length as ``output_len``."""

    name: Literal["sharegpt"] = "sharegpt"
    path: Path
    output_len: int | None = None

    @model_validator(mode="after")
    def _check(self) -> ShareGPTSpec:
        self._check_positive("output_len")
        return self


class JsonlSpec(_Spec):
    """One JSON object a line: ``{"prompt": ...}`` or ``{"messages": [...]}``."""

    name: Literal["jsonl"] = "jsonl"
    path: Path
    output_len: int | None = None

    @model_validator(mode="after")
    def _check(self) -> JsonlSpec:
        self._check_positive("output_len")
        return self


class SharedPrefixSpec(_Spec):
    """``groups`` groups of requests; each group shares an exact ``prefix_len``-token prefix,
    each request adds its own exact ``question_len`` tokens (workloads/shared_prefix.py)."""

    name: Literal["shared-prefix"] = "shared-prefix"
    groups: int = 8
    prefix_len: int = 512
    question_len: int = 128
    output_len: int = 128

    @model_validator(mode="after")
    def _check(self) -> SharedPrefixSpec:
        self._check_positive("groups")
        self._check_positive("prefix_len")
        self._check_positive("question_len")
        self._check_positive("output_len")
        return self


class MultiTurnSpec(_Spec):
    """Conversations of several turns (ShareGPT JSON or infermeter's JSONL), sent turn by turn
    with the history (workloads/conversations.py)."""

    name: Literal["multi-turn"] = "multi-turn"
    path: Path
    output_len: int | None = None  # None: each turn's dataset answer length (128 without one)
    max_turns: int | None = None  # None: every turn of each conversation
    history: Literal["server", "dataset"] = "server"  # whose answers the later turns carry
    think_time: float = 0.0  # seconds between a turn's end and the next turn's send

    @model_validator(mode="after")
    def _check(self) -> MultiTurnSpec:
        self._check_positive("output_len")
        self._check_positive("max_turns")
        if not 0 <= self.think_time < math.inf:
            raise UserError(f"--multi-turn-think-time {self.think_time:g} must be 0 or more seconds",
                            "pass e.g. --multi-turn-think-time 2")
        return self


TRACE_FORMATS = ("auto", "mooncake", "burstgpt", "azure")


class TraceSpec(_Spec):
    """A timestamped trace (Mooncake JSONL, BurstGPT CSV, Azure LLM inference CSV) replayed on
    its own schedule at ``speed`` times its pace (workloads/traces.py)."""

    name: Literal["trace"] = "trace"
    path: str  # a file, or infermeter:NAME for a bundled trace (mooncake-small, burstgpt-small, azure-small)
    format: Literal["auto", "mooncake", "burstgpt", "azure"] = "auto"
    speed: float = 1.0
    block_size: int | None = None  # Mooncake hash block in tokens; None: 512 (bundled traces: their own)
    output_len: int | None = None  # None: the trace's output lengths

    @model_validator(mode="after")
    def _check(self) -> TraceSpec:
        self._check_positive("block_size")
        self._check_positive("output_len")
        if not 0 < self.speed < math.inf:
            raise UserError(f"--trace-speed {self.speed:g} must be a positive factor",
                            "pass e.g. --trace-speed 1 (2: twice as fast)")
        return self


WorkloadSpec = Annotated[Union[SonnetSpec, RandomSpec, ShareGPTSpec, JsonlSpec, SharedPrefixSpec, MultiTurnSpec,
                               TraceSpec], Field(discriminator="name")]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(WorkloadSpec)


def parse_spec(data: Any) -> Any:
    """Validate a mapping (from YAML, JSON or flags) into a spec; every failure is a ``UserError``."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "workload"
        raise UserError(f"bad workload setting {where}: {err.get('msg', 'invalid')}",
                        "use the dataset names sonnet, random, sharegpt, jsonl, shared-prefix, multi-turn or trace "
                        "and their documented fields (docs/workloads.md)") from None
