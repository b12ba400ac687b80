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
    return f"--{dataset}-{field.replace('_', '-')}"


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


WorkloadSpec = Annotated[Union[SonnetSpec, RandomSpec, ShareGPTSpec, JsonlSpec], Field(discriminator="name")]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(WorkloadSpec)


def parse_spec(data: Any) -> SonnetSpec | RandomSpec | ShareGPTSpec | JsonlSpec:
    """Validate a mapping (from YAML, JSON or flags) into a spec; every failure is a ``UserError``."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "workload"
        raise UserError(f"bad workload setting {where}: {err.get('msg', 'invalid')}",
                        "use the dataset names sonnet, random, sharegpt or jsonl and their documented fields") from None
