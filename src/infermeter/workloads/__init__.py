"""Workloads: deterministic prompts with exact token accounting in the target tokenizer.

``make_prompts(spec, tokenizer, num_prompts, seed, chat)`` builds the prompts
for one of the datasets (``sonnet``, ``random``, ``sharegpt``, ``jsonl``,
``shared-prefix``, ``multi-turn``, ``trace``; see
each module's docstring for its semantics and how it relates to
``vllm bench serve``).  The result is a list of :class:`Prompt` (a
:class:`PromptList`, whose ``notes`` hold one-line remarks such as "the
tokenizer has no chat template").  The same arguments always give the same
prompts, and the first n prompts do not depend on ``num_prompts``.

``prompt_builder(...)`` gives the same prompts a chunk at a time:
``builder.at(indices)`` builds any request numbers (``at(range(n))`` is
``make_prompts``), which is how a long run makes its prompts shortly before it
sends them (load/feed.py).  ``sonnet``, ``random`` and ``shared-prefix`` build
each prompt from its own seeded stream; the datasets read from files build
their whole (finite) list once and hand out slices.

``chat=True`` builds for ``/v1/chat/completions``: ``Prompt.messages`` holds
the turns and ``input_len`` counts the chat-formatted prompt.  ``chat=False``
builds ``/v1/completions`` text.  Token counts never include special tokens
a server adds by itself (a BOS in front of a completions prompt).
"""

from __future__ import annotations

from typing import Any

from infermeter.errors import FieldError
from infermeter.workloads import conversations, jsonl, random_tokens, shared_prefix, sharegpt, sonnet, traces
from infermeter.workloads._common import PromptList
from infermeter.core.prompt import Prompt
from infermeter.workloads.specs import (
    JsonlSpec,
    MultiTurnSpec,
    RandomSpec,
    SharedPrefixSpec,
    ShareGPTSpec,
    SonnetSpec,
    TraceSpec,
    WorkloadSpec,
    setting,
    parse_spec,
)
from infermeter.workloads.tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "JsonlSpec",
    "MultiTurnSpec",
    "Prompt",
    "PromptList",
    "RandomSpec",
    "SharedPrefixSpec",
    "ShareGPTSpec",
    "SonnetSpec",
    "TraceSpec",
    "Tokenizer",
    "WorkloadSpec",
    "setting",
    "load_tokenizer",
    "make_prompts",
    "prompt_builder",
    "parse_spec",
]

_BUILDERS: dict[type, Any] = {
    SonnetSpec: sonnet.build,
    RandomSpec: random_tokens.build,
    ShareGPTSpec: sharegpt.build,
    JsonlSpec: jsonl.build,
    SharedPrefixSpec: shared_prefix.build,
    MultiTurnSpec: conversations.build,
    TraceSpec: traces.build,
}


_CHUNKED: dict[type, Any] = {
    SonnetSpec: sonnet.Builder,
    RandomSpec: random_tokens.Builder,
    SharedPrefixSpec: shared_prefix.Builder,
}


class ListBuilder:
    """A workload built whole (files, traces, conversations), handed out by request number."""

    lazy = False

    def __init__(self, prompts: PromptList) -> None:
        self.prompts = prompts
        self.num_prompts = len(prompts)

    @property
    def notes(self) -> list[str]:
        return list(self.prompts.notes)

    def at(self, indices) -> list[Prompt]:
        return [self.prompts[int(i)] for i in indices]


def prompt_builder(spec: Any, tokenizer: Tokenizer, num_prompts: int, seed: int, chat: bool) -> Any:
    """A builder of workload ``spec``'s prompts: ``.at(indices)``, ``.notes``, ``.num_prompts`` and
    ``.lazy`` (True: each prompt is built on its own, so a run can build them as it goes)."""
    spec = _checked(spec, num_prompts, seed)
    chunked = _CHUNKED.get(type(spec))
    if chunked is not None:
        builder = chunked(spec, tokenizer, num_prompts, seed, chat)
        builder.lazy = True
        return builder
    return ListBuilder(make_prompts(spec, tokenizer, num_prompts, seed, chat))


def _checked(spec: Any, num_prompts: int, seed: int) -> Any:
    if isinstance(spec, dict):
        spec = parse_spec(spec)
    if isinstance(num_prompts, bool) or not isinstance(num_prompts, int) or num_prompts < 1:
        raise FieldError("load.num_prompts", num_prompts, "{load.num_prompts} {value} must be a whole number >= 1",
                         "pass {load.num_prompts} 1 or more")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FieldError("load.seed", seed, "{load.seed} {value} must be a whole number >= 0",
                         "pass {load.seed} 0 or another non-negative integer")
    return spec


def make_prompts(spec: Any,
                 tokenizer: Tokenizer, num_prompts: int, seed: int, chat: bool) -> PromptList:
    """Build ``num_prompts`` prompts of workload ``spec`` (a spec model, or a mapping for :func:`parse_spec`)."""
    spec = _checked(spec, num_prompts, seed)
    builder = _BUILDERS.get(type(spec))
    if builder is None:
        raise TypeError(f"not a workload spec: {spec!r}")
    return builder(spec, tokenizer, num_prompts, seed, chat)
