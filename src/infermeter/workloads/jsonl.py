"""The ``jsonl`` dataset: your own prompts, one JSON object a line.

Each non-blank line is ``{"prompt": "..."}`` or ``{"messages": [{"role", "content"}, ...]}``,
optionally with ``"output_len"`` (or ``"max_tokens"``, its OpenAI name) as a
positive integer; other keys are ignored.  A line that is not such an object
is a ``UserError`` naming its line number.

* ``output_len`` of the spec, when set, overrides every line's; otherwise a
  line's own, otherwise ``None`` (the server's default).
* Records are shuffled with ``random.Random(seed)`` and the first
  ``num_prompts`` used; fewer records repeat in order (``UserWarning`` and a
  note), like ``sharegpt``.
* ``chat=False``: a prompt line is sent as is (vLLM's ``custom`` dataset
  applies the chat template by default; here, use ``chat=True`` for that); a
  messages line is formatted with the chat template, which it then needs.
  ``chat=True``: a prompt line becomes one user message, a messages line is
  sent as given; ``input_len`` counts the chat-formatted prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

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
from infermeter.workloads.specs import JsonlSpec
from infermeter.workloads.tokenizer import Tokenizer

_FIX = 'write one JSON object a line: {"prompt": "..."} or {"messages": [{"role": "user", "content": "..."}]}'


class Record(NamedTuple):
    line: int
    prompt: str | None
    messages: tuple[dict[str, str], ...] | None
    output_len: int | None


def read_records(path: Path) -> list[Record]:
    if not path.is_file():
        raise FieldError("workload.dataset_path", str(path), "{workload.dataset_path} {value!r}: no such file",
                         "give the path of a JSONL prompt file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {str(path)!r}: {exc.strerror or exc}", "check the file's permissions") from None
    records = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        records.append(_parse_line(path, number, line))
    if not records:
        raise UserError(f"{str(path)!r} has no prompts", _FIX)
    return records


def _parse_line(path: Path, number: int, line: bytes) -> Record:
    where = f"line {number} of {str(path)!r}"
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{where} is not valid JSON: {exc}", _FIX) from None
    if not isinstance(obj, dict):
        raise UserError(f"{where} is not a JSON object", _FIX)
    out = obj.get("output_len", obj.get("max_tokens"))
    if out is not None and (isinstance(out, bool) or not isinstance(out, int) or out < 1):
        raise UserError(f"{where}: output_len {out!r} is not a positive integer", "give a whole number of tokens >= 1")
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    if has_prompt == has_messages:
        raise UserError(f"{where} needs exactly one of \"prompt\" and \"messages\"", _FIX)
    if has_prompt:
        prompt = obj["prompt"]
        if not isinstance(prompt, str) or not prompt:
            raise UserError(f"{where}: \"prompt\" is not a non-empty string", _FIX)
        return Record(number, prompt, None, out)
    messages = obj["messages"]
    ok = isinstance(messages, list) and messages and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages)
    if not ok:
        raise UserError(f"{where}: \"messages\" is not a non-empty list of {{\"role\", \"content\"}} strings", _FIX)
    return Record(number, None, tuple({"role": m["role"], "content": m["content"]} for m in messages), out)


def build(spec: JsonlSpec, tok: Tokenizer, num_prompts: int, seed: int, chat: bool) -> PromptList:
    notes: list[str] = []
    records = take_cycled(shuffled(read_records(Path(spec.path)), seed), num_prompts, "JSONL records", notes)
    fmt = ChatFormat(tok)
    outs = [spec.output_len if spec.output_len is not None else r.output_len for r in records]

    if chat:
        conversations = [r.messages if r.messages is not None else user_turn(r.prompt or "") for r in records]
        counts = chat_counts(tok, fmt, conversations, notes)
        texts = [r.prompt if r.prompt is not None else (fmt.render(r.messages or ()) or r.messages[-1]["content"])
                 for r in records]
        prompts = [Prompt(text=t, input_len=c, output_len=o, messages=m)
                   for t, c, o, m in zip(texts, counts, outs, conversations)]
        return PromptList(prompts, notes)

    texts = []
    for r in records:
        if r.prompt is not None:
            texts.append(r.prompt)
            continue
        rendered = fmt.render(r.messages or ())
        if rendered is None:
            raise UserError(
                f"line {r.line} of {str(spec.path)!r} has \"messages\", but the tokenizer has no chat template "
                "to make a /v1/completions prompt of them",
                "use the chat endpoint, a tokenizer with a chat template, or \"prompt\" lines",
            )
        texts.append(rendered)
    counts = count_batch(tok, texts)
    prompts = [Prompt(text=t, input_len=c, output_len=o) for t, c, o in zip(texts, counts, outs)]
    return PromptList(prompts, notes)
