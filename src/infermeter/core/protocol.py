"""The wire-protocol contract: how a prompt becomes a request body, and a response a record."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from infermeter.core.exchange import RawExchange
from infermeter.core.prompt import Prompt
from infermeter.core.records import RequestRecord


@dataclass(frozen=True)
class RequestOptions:
    model: str
    stream: bool = True
    ignore_eos: bool = False  # ask for exactly output_len tokens (when the backend honours it)
    temperature: float | None = 0.0
    top_p: float | None = None
    top_k: int | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)


class Protocol(ABC):
    """A wire protocol: request bodies out, records in.

    ``build_body`` runs before the load starts (bodies are pre-serialised);
    ``interpret`` runs after a response is complete, off the hot path, and fills
    the record's tokens, times and error from what the transport saw.
    """

    name: str
    stream_path: str

    @abstractmethod
    def build_body(self, prompt: Prompt, opts: RequestOptions) -> bytes: ...

    @abstractmethod
    def interpret(self, raw: RawExchange, rec: RequestRecord, opts: RequestOptions) -> None: ...
