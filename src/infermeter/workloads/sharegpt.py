"""The ``sharegpt`` dataset: real first turns of ShareGPT conversations.

The file is a JSON list of ``{"id", "conversations": [{"from", "value"}, ...]}``.

* Each conversation gives its first human turn (``from`` ``human`` or
  ``user``) that is directly followed by a reply (any other ``from`` but
  ``system``): the human text is the prompt, the reply's token count the
  ``output_len`` unless ``output_len`` is set.  (vLLM takes turns 0 and 1
  whoever spoke them.)  Conversations without such a pair are skipped.
* The pairs are shuffled with ``random.Random(seed)`` and walked in that
  order, keeping those that pass vLLM's filters (``is_valid_sequence``):
  prompt >= 4 tokens, reply >= 4 tokens (not checked when ``output_len`` is
  set), prompt <= 1024 tokens and prompt + output <= 2048 tokens.  Lengths for
  the filters are raw prompt tokens without special tokens (vLLM's count
  includes a BOS where the tokenizer adds one).  Prompts are tokenized lazily,
  in batches, so a big file costs only what is needed.
* The first ``num_prompts`` are used; the first n prompts never depend on how
  many are asked for.  If fewer qualify, they repeat in the same order (a
  ``UserWarning`` and a note say so; vLLM oversamples at random); none at all
  is a ``UserError``.
* ``chat=False`` sends the raw prompt to ``/v1/completions`` (as vLLM);
  ``chat=True`` sends it as the user message and ``input_len`` counts the
  chat-formatted prompt.
"""

from __future__ import annotations

import math
from pathlib import Path

import orjson

from infermeter.errors import FieldError, UserError
from infermeter.workloads._common import (
    ChatFormat,
    PromptList,
    chat_counts,
    count_batch,
    shuffled,
    take_cycled,
    user_turn,
)
from infermeter.core.prompt import Prompt
from infermeter.workloads.specs import ShareGPTSpec
from infermeter.workloads.tokenizer import Tokenizer

MIN_LEN = 4
MAX_PROMPT_LEN = 1024
MAX_TOTAL_LEN = 2048

_HUMAN = frozenset({"human", "user"})


def read_json_file(path: Path, what: str) -> object:
    if not path.is_file():
        raise FieldError("workload.dataset_path", str(path), "{workload.dataset_path} {value!r}: no such file",
                         "give the path of a {what} file", what=what)
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{str(path)!r} is not valid JSON: {exc}", f"give the path of a {what} file") from None
    except OSError as exc:
        raise UserError(f"cannot read {str(path)!r}: {exc.strerror or exc}", "check the file's permissions") from None


def first_exchange(conversation: object) -> tuple[str, str] | None:
    """The first human turn with the reply right after it, or None."""
    if not isinstance(conversation, list):
        return None
    for turn, reply in zip(conversation, conversation[1:]):
        if not (isinstance(turn, dict) and isinstance(reply, dict)):
            continue
        if turn.get("from") in _HUMAN and reply.get("from") not in _HUMAN and reply.get("from") != "system":
            prompt, answer = turn.get("value"), reply.get("value")
            if isinstance(prompt, str) and isinstance(answer, str):
                return prompt, answer
            return None
    return None


def build(spec: ShareGPTSpec, tok: Tokenizer, num_prompts: int, seed: int, chat: bool) -> PromptList:
    notes: list[str] = []
    data = read_json_file(Path(spec.path), "ShareGPT JSON")
    if not isinstance(data, list):
        raise UserError(f"{str(spec.path)!r} is not a ShareGPT file: the top level is not a JSON list",
                        'give a list of {"id", "conversations": [{"from", "value"}, ...]}')
    pairs = []
    for entry in data:
        pair = first_exchange(entry.get("conversations")) if isinstance(entry, dict) else None
        if pair is not None:
            pairs.append(pair)
    if not pairs:
        raise UserError(f"{str(spec.path)!r} has no conversation with a human turn and a reply",
                        'give a ShareGPT file: [{"conversations": [{"from": "human", ...}, {"from": "gpt", ...}]}]')
    pairs = shuffled(pairs, seed)

    chosen: list[tuple[str, int, int]] = []  # (prompt, prompt tokens, output_len)
    pos, rate = 0, 1.0
    while len(chosen) < num_prompts and pos < len(pairs):
        # Tokenize about as many as the pass rate so far says are still needed.
        want = math.ceil((num_prompts - len(chosen)) / max(rate, 0.05) * 1.1) + 16
        batch = pairs[pos:pos + want]
        pos += len(batch)
        prompt_lens = count_batch(tok, [p for p, _ in batch])
        if spec.output_len is None:
            output_lens = count_batch(tok, [a for _, a in batch])
        else:
            output_lens = [spec.output_len] * len(batch)
        for (prompt, _), n_in, n_out in zip(batch, prompt_lens, output_lens):
            if len(chosen) >= num_prompts:
                break
            if valid_sequence(n_in, n_out, check_output=spec.output_len is None):
                chosen.append((prompt, n_in, n_out))
        rate = len(chosen) / pos
    if not chosen:
        raise UserError(
            f"no conversation in {str(spec.path)!r} passes the length filters "
            f"(prompt {MIN_LEN}..{MAX_PROMPT_LEN} tokens, reply >= {MIN_LEN}, both <= {MAX_TOTAL_LEN})",
            "use a bigger ShareGPT file, or --sharegpt-output-len to skip the reply-length check",
        )
    chosen = take_cycled(chosen, num_prompts, "ShareGPT conversations", notes)

    if chat:
        conversations = [user_turn(p) for p, _, _ in chosen]
        counts = chat_counts(tok, ChatFormat(tok), conversations, notes)
        prompts = [Prompt(text=p, input_len=c, output_len=o, messages=m)
                   for (p, _, o), c, m in zip(chosen, counts, conversations)]
    else:
        prompts = [Prompt(text=p, input_len=n, output_len=o) for p, n, o in chosen]
    return PromptList(prompts, notes)


def valid_sequence(prompt_len: int, output_len: int, *, check_output: bool = True) -> bool:
    """vLLM's ShareGPT filter."""
    if prompt_len < MIN_LEN or (check_output and output_len < MIN_LEN):
        return False
    return prompt_len <= MAX_PROMPT_LEN and prompt_len + output_len <= MAX_TOTAL_LEN
