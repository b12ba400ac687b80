"""The workload specs: one pydantic model per dataset, a union keyed on ``name``.

Defaults are those of ``vllm bench serve`` for the matching flags
(``--sonnet-input-len 550``, ``--sonnet-output-len 150``,
``--sonnet-prefix-len 200``, ``--random-input-len 1024``,
``--random-output-len 128``, ``--random-range-ratio 0.0``,
``--random-prefix-len 0``, ``--sharegpt-output-len`` unset).

Bad values raise :class:`~infermeter.errors.UserError` straight out of the
model's constructor (pydantic lets exceptions that are not ``ValueError``
through unchanged): a ``FieldError`` naming the run setting as :func:`setting`
spells it (``workload.sonnet_input_len``), which the CLI words as its flag.
Wrong types (a string for a number, an unknown key)
raise pydantic's ``ValidationError``; :func:`parse_spec` turns those into a
``UserError`` as well.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from infermeter.errors import FieldError, UserError


def length_range(length: int, ratio: float) -> tuple[int, int]:
    """vLLM's ``[floor(n*(1-r)), ceil(n*(1+r))]``, without float noise (``10*(1-0.9)`` is 1, not 0)."""
    return math.floor(length * (1 - ratio) + 1e-9), math.ceil(length * (1 + ratio) - 1e-9)


def setting(dataset: str, field: str) -> str:
    """The run setting (field path) for ``field`` of dataset ``dataset`` (``workload.sonnet_input_len``).

    File paths of every dataset share ``dataset_path`` (vLLM's ``--dataset-path``).
    """
    if field == "path":
        return "workload.dataset_path"
    own = _OWN_SETTINGS.get((dataset, field))
    return f"workload.{own or dataset.replace('-', '_') + '_' + field}"


def _named(dataset: str, field: str) -> str:
    """A FieldError template's placeholder for the setting."""
    return "{" + setting(dataset, field) + "}"


_OWN_SETTINGS = {("shared-prefix", "groups"): "prefix_groups", ("shared-prefix", "prefix_len"): "prefix_len",
                 ("shared-prefix", "question_len"): "question_len",
                 ("shared-prefix", "output_len"): "prefix_output_len", ("jsonl", "output_len"): "sharegpt_output_len"}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def _check_positive(self, field: str, minimum: int = 1) -> None:
        value = getattr(self, field)
        if value is not None and value < minimum:
            name = self.name  # type: ignore[attr-defined]
            raise FieldError(setting(name, field), value, _named(name, field) + " {value} must be at least {minimum}",
                             "pass " + _named(name, field) + " {minimum} or more", minimum=minimum)


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
            raise FieldError(
                "workload.sonnet_prefix_len", self.prefix_len,
                "{workload.sonnet_prefix_len} {value} is larger than {workload.sonnet_input_len} {input_len}",
                "pass {workload.sonnet_prefix_len} {input_len} or less, or raise {workload.sonnet_input_len}",
                input_len=self.input_len)
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
            raise FieldError("workload.random_range_ratio", self.range_ratio,
                             "{workload.random_range_ratio} {value} is outside [0, 1)",
                             "pass a ratio r with 0 <= r < 1 (lengths are drawn from [n*(1-r), n*(1+r)])")
        if self.prefix_len + length_range(self.input_len, self.range_ratio)[0] < 1:
            raise FieldError(
                "workload.random_input_len", self.input_len,
                "{workload.random_input_len} {value} with {workload.random_range_ratio} {ratio} "
                "and {workload.random_prefix_len} {prefix} can make an empty prompt",
                "raise {workload.random_input_len} or {workload.random_prefix_len}, or lower "
                "{workload.random_range_ratio}", ratio=self.range_ratio, prefix=self.prefix_len)
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
            raise FieldError("workload.multi_turn_think_time", self.think_time,
                             "{workload.multi_turn_think_time} {value:g} must be 0 or more seconds",
                             "pass e.g. {workload.multi_turn_think_time} 2")
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
            raise FieldError("workload.trace_speed", self.speed, "{workload.trace_speed} {value:g} must be a "
                             "positive factor", "pass e.g. {workload.trace_speed} 1 (2: twice as fast)")
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
