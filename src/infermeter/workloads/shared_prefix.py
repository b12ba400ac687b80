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


def build(spec: SharedPrefixSpec, tok: Tokenizer, num_prompts: int, seed: int, chat: bool) -> PromptList:
    notes: list[str] = []
    pool = token_pool(tok)
    P, Q = spec.prefix_len, spec.question_len
    prngs = [rng_for(seed, 0, g) for g in range(spec.groups)]
    pids = [pool[g.integers(0, len(pool), size=P)].tolist() for g in prngs]
    prefixes, plens = exact_texts(tok, pids, [P] * spec.groups, "", prngs, pool)
    off = [g for g, n in enumerate(plens) if n != P]
    if off:
        notes.append(f"{len(off)} of {spec.groups} shared prefixes missed {P} tokens: "
                     "the tokenizer would not settle; input_len still counts each prompt exactly")
    rngs = [rng_for(seed, 1, i) for i in range(num_prompts)]
    bodies = [pool[g.integers(0, len(pool), size=Q)].tolist() for g in rngs]
    wrap, overhead = chat_wrap(tok, pool, notes) if chat else (None, 0)
    texts, lengths = exact_texts(tok, bodies, [P + Q + overhead] * num_prompts, "", rngs, pool, wrap,
                                 prefixes=[prefixes[i % spec.groups] for i in range(num_prompts)])
    missed = sum(1 for n in lengths if n != P + Q + overhead)
    if missed:
        notes.append(f"{missed} of {num_prompts} shared-prefix prompts missed their exact length; "
                     "input_len records their real length")
    return PromptList([Prompt(text=t, input_len=n, output_len=spec.output_len,
                              messages=user_turn(t) if chat else None)
                       for t, n in zip(texts, lengths)], notes)
