"""The ``random`` dataset: random tokens, exactly as many as asked, in the target tokenizer.

Semantics (those of ``vllm bench serve --dataset-name random``, where noted improved):

* Each request draws its input length uniformly from the integers
  ``[floor(input_len*(1-r)), ceil(input_len*(1+r))]`` and its output length from
  ``[max(1, floor(output_len*(1-r))), max(1, ceil(output_len*(1+r)))]``,
  ``r = range_ratio`` in ``[0, 1)`` (bounds computed without float noise:
  ``10*(1-0.9)`` gives 1, where vLLM gets 0).
* Request ``i`` draws from its own stream of ``numpy`` ``PCG64`` seeded by
  ``(seed, i)``, so the first n prompts are the same whatever ``num_prompts``.
* ``prefix_len`` random tokens, the same for every request, come first and are
  counted ON TOP of the drawn length: a prompt has ``prefix_len + drawn``
  tokens, as in vLLM (``--random-prefix-len``).
* Token ids are drawn uniformly from the tokenizer's "word" tokens: not
  special or added, a space plus letters, and decode-then-encode to
  themselves alone (see :func:`token_pool`), so the text is word salad that
  re-encodes to the same ids; a tokenizer with too few such tokens falls back
  to all ids that round-trip alone.  vLLM walks the whole vocabulary
  sequentially from a random offset instead, and its text re-encodes to other
  ids and another count.
* Improvement over vLLM: the text is decoded, re-encoded and adjusted (the
  re-encoded ids are cut, or random ids appended, then decoded again) until the
  text re-encodes to exactly the target count.  vLLM stops after 10 tries and
  logs the total mismatch; here every prompt normally lands exactly, and one
  that does not after ``MAX_TRIES`` keeps its nearest attempt, with its real
  count in ``input_len`` and a note saying how many missed.
* The shared prefix is itself made exact on its own first; each request's
  text is ``prefix_text + body_text`` and only the body is adjusted, so every
  prompt starts with the identical prefix string.
* Counts are without special tokens: a server that prepends BOS to
  ``/v1/completions`` prompts sees one more (vLLM subtracts the tokenizer's
  special-token count from the drawn length instead).
* ``chat=True``: the text is the user message and ``input_len`` counts the
  chat-formatted prompt: exactly the drawn length plus the template's
  overhead (measured once, as formatted minus raw tokens of a probe text).
  The loop then makes the formatted prompt exact, which keeps it to one
  tokenizer pass; the content is exact too whenever the template adds a fixed
  number of tokens, as templates do.  (vLLM's ``prompt_len`` there counts the
  content only.)  Without a chat template the raw text is counted, with a
  note.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from infermeter.errors import UserError
from infermeter.workloads._common import (
    NO_TEMPLATE_NOTE,
    ChatFormat,
    PromptList,
    count_batch,
    decode_batch,
    encode_batch,
    rng_for,
    special_ids,
    user_turn,
)
from infermeter.core.prompt import Prompt
from infermeter.workloads.specs import RandomSpec, length_range
from infermeter.workloads.tokenizer import Tokenizer

MAX_TRIES = 16
MIN_WORDS = 256

_POOL_CACHE: dict[int, tuple[Any, np.ndarray]] = {}


def token_pool(tok: Tokenizer) -> np.ndarray:
    """The ids random text is drawn from (cached per tokenizer).

    First choice: "word" tokens, a space and letters (`` the``, ``▁cat``) that
    decode-then-encode to themselves.  Every tokenizer in use splits text at
    spaces before merging, so a sequence of them re-encodes to itself and a
    prompt is exact on the first try.  Where there are fewer than
    ``MIN_WORDS`` of those: every non-special id that round-trips alone, and
    the adjusting loop does the rest.
    """
    key = id(tok)
    hit = _POOL_CACHE.get(key)
    if hit is not None and hit[0]() is tok:
        return hit[1]
    banned = special_ids(tok)
    ids = [i for i in range(int(tok.vocab_size)) if i not in banned]
    if not ids:
        raise UserError(f"tokenizer {tok.name!r} has no ordinary tokens", "use the model's real tokenizer")
    singles = decode_batch(tok, [[i] for i in ids])
    encoded = encode_batch(tok, singles)
    clean = [i for i, text, enc in zip(ids, singles, encoded) if text and len(enc) == 1 and enc[0] == i]
    # How a token reads after another: decode [i, i] and drop the first copy.  This shows
    # the leading space a SentencePiece decoder strips from a text's first token.
    single_of = dict(zip(ids, singles))
    doubles = decode_batch(tok, [[i, i] for i in clean])
    words = []
    for i, double in zip(clean, doubles):
        inner = double[len(single_of[i]):]
        if len(inner) > 1 and inner[0] == " " and inner[1:].isalpha():
            words.append(i)
    chosen = words if len(words) >= MIN_WORDS else (clean if len(clean) >= 32 else ids)
    pool = np.asarray(chosen, dtype=np.int64)
    try:
        _POOL_CACHE[key] = (weakref.ref(tok), pool)
    except TypeError:  # not weak-referenceable: no cache
        pass
    return pool


def exact_texts(tok: Tokenizer, bodies: list[list[int]], targets: list[int], prefix_text: str,
                rngs: list[np.random.Generator], pool: np.ndarray,
                wrap: Callable[[str], str] | None = None,
                prefixes: list[str] | None = None) -> tuple[list[str], list[int]]:
    """For each body, a text ``prefix_text + body_text`` that encodes to ``targets[i]`` tokens.

    With ``wrap``, ``wrap(text)`` is what must encode to the target (the chat
    template around the text); one tokenizer pass a round either way.  ``prefixes``
    gives each body its own prefix text instead of ``prefix_text``.  Returns
    the texts (unwrapped) and the real token counts (equal to the targets unless
    ``MAX_TRIES`` rounds could not get there; then the nearest attempt).
    """
    m = len(bodies)
    best_text: list[str] = [""] * m
    best_len: list[int] = [0] * m
    best_err: list[float] = [math.inf] * m
    pending = list(range(m))
    for _ in range(MAX_TRIES):
        if not pending:
            break
        body_texts = decode_batch(tok, [bodies[i] for i in pending])
        if prefixes is not None:
            full = [prefixes[i] + t for i, t in zip(pending, body_texts)]
        else:
            full = [prefix_text + t for t in body_texts] if prefix_text else body_texts
        lengths = count_batch(tok, [wrap(t) for t in full] if wrap else full)
        missed = []
        for k, i in enumerate(pending):
            err = abs(targets[i] - lengths[k])
            if err < best_err[i]:
                best_err[i], best_text[i], best_len[i] = err, full[k], lengths[k]
            if err:
                missed.append(k)
        if not missed:
            break
        # Adjust the canonical ids of each missed body (what its text really encodes to):
        # cut the surplus off the end, or append random ids for the shortfall.
        canon = encode_batch(tok, [body_texts[k] for k in missed])
        next_pending = []
        for k, ids in zip(missed, canon):
            i = pending[k]
            delta = targets[i] - lengths[k]
            if delta < 0:
                ids = list(ids[:max(0, len(ids) + delta)])
            else:
                ids = list(ids) + pool[rngs[i].integers(0, len(pool), size=delta)].tolist()
            bodies[i] = ids
            next_pending.append(i)
        pending = next_pending
    return best_text, best_len


class Builder:
    """The ``random`` prompts of one spec, seed and endpoint, any request numbers at a time.

    Prompt ``i`` depends only on ``(seed, i)``: ``at([5, 6])`` equals the
    same two of ``at(range(10))`` (what the load feed's chunks rely on).
    """

    def __init__(self, spec: RandomSpec, tok: Tokenizer, num_prompts: int, seed: int, chat: bool) -> None:
        self.spec, self.tok, self.num_prompts, self.seed, self.chat = spec, tok, num_prompts, seed, chat
        self._notes: list[str] = []
        self.pool = pool = token_pool(tok)
        r = spec.range_ratio
        self.in_range = length_range(spec.input_len, r)
        lo, hi = length_range(spec.output_len, r)
        self.out_range = (max(1, lo), max(1, hi))
        self.prefix_text = ""
        if spec.prefix_len:
            prng = rng_for(seed, 0)
            pids = pool[prng.integers(0, len(pool), size=spec.prefix_len)].tolist()
            (self.prefix_text,), (plen,) = exact_texts(tok, [pids], [spec.prefix_len], "", [prng], pool)
            if plen != spec.prefix_len:
                self._notes.append(f"the shared random prefix has {plen} tokens, not {spec.prefix_len}: "
                                   "the tokenizer would not settle; prompt lengths still count it")
        self.wrap, self.overhead = chat_wrap(tok, pool, self._notes) if chat else (None, 0)
        self.missed = 0  # prompts built so far that missed their exact length
        self.missed_by = 0

    @property
    def notes(self) -> list[str]:
        notes = list(self._notes)
        if self.missed:
            notes.append(f"{self.missed} of {self.num_prompts} random prompts missed their exact length "
                         f"(by at most {self.missed_by} tokens); input_len records their real length")
        return notes

    def at(self, indices) -> list[Prompt]:
        spec, pool = self.spec, self.pool
        (in_lo, in_hi), (out_lo, out_hi) = self.in_range, self.out_range
        rngs = [rng_for(self.seed, 1, int(i)) for i in indices]
        in_lens, out_lens, bodies = [], [], []
        for g in rngs:
            n_in = int(g.integers(in_lo, in_hi + 1))
            out_lens.append(int(g.integers(out_lo, out_hi + 1)))
            in_lens.append(n_in)
            bodies.append(pool[g.integers(0, len(pool), size=n_in)].tolist())
        targets = [spec.prefix_len + n + self.overhead for n in in_lens]
        texts, lengths = exact_texts(self.tok, bodies, targets, self.prefix_text, rngs, pool, self.wrap)
        for n, t in zip(lengths, targets):
            if n != t:
                self.missed += 1
                self.missed_by = max(self.missed_by, abs(n - t))
        if self.chat:
            return [Prompt(text=t, input_len=n, output_len=o, messages=user_turn(t))
                    for t, n, o in zip(texts, lengths, out_lens)]
        return [Prompt(text=t, input_len=n, output_len=o) for t, n, o in zip(texts, lengths, out_lens)]


def build(spec: RandomSpec, tok: Tokenizer, num_prompts: int, seed: int, chat: bool) -> PromptList:
    builder = Builder(spec, tok, num_prompts, seed, chat)
    prompts = builder.at(range(num_prompts))
    return PromptList(prompts, builder.notes)


def chat_wrap(tok: Tokenizer, pool: np.ndarray, notes: list[str]) -> tuple[Callable[[str], str] | None, int]:
    """(wrap, overhead) for chat prompts: the template around one user message and the tokens it
    adds (measured once on a probe text); (None, 0) with a note where there is no template."""
    fmt = ChatFormat(tok)
    if not fmt.has_template:
        notes.append(NO_TEMPLATE_NOTE)
        return None, 0
    wrap = UserTurn(fmt)
    probe = decode_batch(tok, [pool[:8].tolist()])[0]
    return wrap, len(tok.encode(wrap(probe))) - len(tok.encode(probe))


class UserTurn:
    """``text`` as one user message in the chat template (a class, so that a builder pickles)."""

    def __init__(self, fmt: ChatFormat) -> None:
        self.fmt = fmt

    def __call__(self, text: str) -> str:
        return self.fmt.render(user_turn(text)) or text
