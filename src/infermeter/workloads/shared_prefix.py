"""The ``shared-prefix`` dataset: groups of requests behind one shared prefix each.

A prefix cache (vLLM's automatic prefix caching, SGLang's radix cache,
llama.cpp's prompt cache) serves the prefix of the second and later requests
of a group from memory; this workload measures what that saves.

* ``groups`` G prefixes of exactly ``prefix_len`` P random word tokens each
  (prefix g from its own seeded stream ``(seed, 0, g)``), made exact on their
  own; request i belongs to group ``i % G`` (round robin, so groups are equal
  in size and a group's requests are spread over the run).
* Each request adds ``question_len`` Q tokens of its own (stream ``(seed, 1,
  i)``); the text is ``prefix + question`` and exactly P + Q tokens (the
  question is adjusted, never the prefix, so every request of a group starts
  with the identical prefix string).  ``input_len`` is P + Q, plus the chat
  template's tokens with ``chat=True`` (the whole text is one user message).
* ``output_len`` tokens asked for every request.
* Exactness and determinism as the ``random`` dataset (random_tokens.py).
"""

from __future__ import annotations

from infermeter.core.prompt import Prompt
from infermeter.workloads._common import PromptList, rng_for, user_turn
from infermeter.workloads.random_tokens import chat_wrap, exact_texts, token_pool
from infermeter.workloads.specs import SharedPrefixSpec
from infermeter.workloads.tokenizer import Tokenizer


class Builder:
    """The shared-prefix prompts of one spec, seed and endpoint, any request numbers at a time
    (prompt ``i`` depends only on ``(seed, i)`` and its group's prefix)."""

    def __init__(self, spec: SharedPrefixSpec, tok: Tokenizer, num_prompts: int, seed: int, chat: bool) -> None:
        self.spec, self.tok, self.num_prompts, self.seed, self.chat = spec, tok, num_prompts, seed, chat
        self._notes: list[str] = []
        self.pool = pool = token_pool(tok)
        P = spec.prefix_len
        prngs = [rng_for(seed, 0, g) for g in range(spec.groups)]
        pids = [pool[g.integers(0, len(pool), size=P)].tolist() for g in prngs]
        self.prefixes, plens = exact_texts(tok, pids, [P] * spec.groups, "", prngs, pool)
        off = [g for g, n in enumerate(plens) if n != P]
        if off:
            self._notes.append(f"{len(off)} of {spec.groups} shared prefixes missed {P} tokens: "
                               "the tokenizer would not settle; input_len still counts each prompt exactly")
        self.wrap, self.overhead = chat_wrap(tok, pool, self._notes) if chat else (None, 0)
        self.missed = 0

    @property
    def notes(self) -> list[str]:
        notes = list(self._notes)
        if self.missed:
            notes.append(f"{self.missed} of {self.num_prompts} shared-prefix prompts missed their exact length; "
                         "input_len records their real length")
        return notes

    def at(self, indices) -> list[Prompt]:
        spec, pool = self.spec, self.pool
        indices = [int(i) for i in indices]
        target = spec.prefix_len + spec.question_len + self.overhead
        rngs = [rng_for(self.seed, 1, i) for i in indices]
        bodies = [pool[g.integers(0, len(pool), size=spec.question_len)].tolist() for g in rngs]
        texts, lengths = exact_texts(self.tok, bodies, [target] * len(indices), "", rngs, pool, self.wrap,
                                     prefixes=[self.prefixes[i % spec.groups] for i in indices])
        self.missed += sum(1 for n in lengths if n != target)
        return [Prompt(text=t, input_len=n, output_len=spec.output_len,
                       messages=user_turn(t) if self.chat else None)
                for t, n in zip(texts, lengths)]


def build(spec: SharedPrefixSpec, tok: Tokenizer, num_prompts: int, seed: int, chat: bool) -> PromptList:
    builder = Builder(spec, tok, num_prompts, seed, chat)
    prompts = builder.at(range(num_prompts))
    return PromptList(prompts, builder.notes)
