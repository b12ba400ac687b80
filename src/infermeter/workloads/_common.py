"""Helpers shared by the datasets: batched tokenizer calls, seeded generators, chat formatting."""

from __future__ import annotations

import random as _random
import warnings
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from infermeter.core.prompt import Conversation, Prompt
from infermeter.workloads.tokenizer import Tokenizer

T = TypeVar("T")

NO_TEMPLATE_NOTE = ("the tokenizer has no chat template: input_len counts the raw prompt text, "
                    "not the chat-formatted prompt the server builds")


class PromptList(list[Prompt]):
    """The prompts ``make_prompts`` built, with ``notes``: one line each about what to know.

    A trace sets ``offsets`` (each prompt's send time in seconds from the trace's first
    request, at the trace's own pace); a multi-turn workload sets ``conversations`` (one
    per session; the prompts are then each session's first turn).
    """

    notes: list[str]
    offsets: list[float] | None
    conversations: list[Conversation] | None

    def __init__(self, prompts: Sequence[Prompt] = (), notes: Sequence[str] = (), *,
                 offsets: Sequence[float] | None = None,
                 conversations: Sequence[Conversation] | None = None) -> None:
        super().__init__(prompts)
        self.notes = list(notes)
        self.offsets = None if offsets is None else list(offsets)
        self.conversations = None if conversations is None else list(conversations)


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for stream ``key`` of ``seed``.

    Request ``i`` draws from its own stream, so the first ``n`` prompts do not
    depend on how many are asked for.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def encode_batch(tok: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    batch = getattr(tok, "encode_batch", None)
    if callable(batch):
        return batch(list(texts))
    return [tok.encode(t) for t in texts]


def count_batch(tok: Tokenizer, texts: Sequence[str]) -> list[int]:
    batch = getattr(tok, "count_batch", None)
    if callable(batch):
        return batch(list(texts))
    return [len(ids) for ids in encode_batch(tok, texts)]


def decode_batch(tok: Tokenizer, seqs: Sequence[Sequence[int]]) -> list[str]:
    batch = getattr(tok, "decode_batch", None)
    if callable(batch):
        return batch(seqs)
    return [tok.decode(s) for s in seqs]


def special_ids(tok: Tokenizer) -> frozenset[int]:
    get = getattr(tok, "special_ids", None)
    return frozenset(get()) if callable(get) else frozenset()


def user_turn(content: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": content},)


class ChatFormat:
    """The tokenizer's chat template applied to whole conversations (None: no template)."""

    def __init__(self, tok: Tokenizer) -> None:
        self.tok = tok
        self.has_template = tok.chat_prompt(list(user_turn("x"))) is not None

    def render(self, messages: Sequence[dict[str, str]]) -> str | None:
        if not self.has_template:
            return None
        return self.tok.chat_prompt(list(messages))


def chat_counts(tok: Tokenizer, fmt: ChatFormat, conversations: Sequence[Sequence[dict[str, str]]],
                notes: list[str]) -> list[int]:
    """Token counts of the chat-formatted conversations (raw contents when there is no template)."""
    if fmt.has_template:
        texts = [fmt.render(c) or "" for c in conversations]
    else:
        if NO_TEMPLATE_NOTE not in notes:
            notes.append(NO_TEMPLATE_NOTE)
        texts = ["".join(m.get("content", "") for m in c) for c in conversations]
    return count_batch(tok, texts)


def take_cycled(items: list[T], num: int, what: str, notes: list[str]) -> list[T]:
    """The first ``num`` items, cycling through them (with a warning) when there are fewer."""
    if len(items) >= num:
        return items[:num]
    msg = (f"only {len(items)} {what} qualify for {num} prompts: "
           f"cycling through them, so some prompts repeat")
    warnings.warn(msg, stacklevel=3)
    notes.append(msg)
    return [items[i % len(items)] for i in range(num)]


def shuffled(items: list[T], seed: int) -> list[T]:
    out = list(items)
    _random.Random(seed).shuffle(out)
    return out
