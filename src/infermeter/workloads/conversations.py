"""The ``multi-turn`` dataset: whole conversations, sent turn by turn with their history.

Two sources, told apart by the file:

* a ShareGPT JSON file (a JSON list of ``{"conversations": [{"from", "value"}, ...]}``):
  a leading ``system`` entry becomes the system prompt; then each human turn (``human``
  or ``user``) directly followed by a reply is one turn, the reply its dataset answer;
  the conversation ends at the first turn without a reply;
* infermeter's JSONL conversation format (a ``.jsonl`` file), one conversation a line::

    {"id": "c1", "system": "You are terse.",
     "turns": [{"user": "Hi", "assistant": "Hello", "output_len": 16}, {"user": "And?"}]}

  ``system``, ``id``, ``assistant`` (the dataset answer) and ``output_len`` (or
  ``max_tokens``) are optional; ``turns`` is a non-empty list.

Conversations are shuffled with ``random.Random(seed)`` and the first ``num_prompts``
become the sessions (session id = position); fewer repeat in order with a note.
``max_turns`` keeps each conversation's first turns.  A turn asks for ``output_len``
tokens when set, else its dataset answer's length, else 128.

``input_len`` of turn t counts the chat-formatted history (system prompt, the earlier
turns with the *dataset's* answers, turn t); a run that carries the server's answers
(the default) recounts each later turn at send time (load/sessions.py).  Multi-turn
needs the chat endpoint; the returned prompts are each session's first turn.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from infermeter.core.prompt import Conversation, Prompt, Turn
from infermeter.errors import FieldError, UserError
from infermeter.workloads._common import ChatFormat, PromptList, chat_counts, count_batch, shuffled, take_cycled
from infermeter.workloads.sharegpt import read_json_file
from infermeter.workloads.specs import MultiTurnSpec
from infermeter.workloads.tokenizer import Tokenizer

DEFAULT_OUTPUT_LEN = 128
_HUMAN = frozenset({"human", "user"})
_FIX = ('write one conversation a line: {"turns": [{"user": "...", "assistant": "..."}, ...]} '
        '(docs/workloads.md), or give a ShareGPT JSON file')

Raw = tuple[str | None, list[tuple[str, str | None, int | None]]]  # (system, [(user, answer, output_len)])


def sharegpt_turns(entry: object) -> Raw | None:
    conv = entry.get("conversations") if isinstance(entry, dict) else None
    if not isinstance(conv, list):
        return None
    system = None
    msgs = [m for m in conv if isinstance(m, dict) and isinstance(m.get("value"), str)]
    if msgs and msgs[0].get("from") == "system":
        system = msgs.pop(0)["value"]
    turns: list[tuple[str, str | None, int | None]] = []
    i = 0
    while i + 1 < len(msgs) and msgs[i].get("from") in _HUMAN and msgs[i + 1].get("from") not in _HUMAN:
        turns.append((msgs[i]["value"], msgs[i + 1]["value"], None))
        i += 2
    return (system, turns) if turns else None


def _jsonl_line(path: Path, number: int, line: bytes) -> Raw:
    where = f"line {number} of {str(path)!r}"
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{where} is not valid JSON: {exc}", _FIX) from None
    turns = obj.get("turns") if isinstance(obj, dict) else None
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{where} has no \"turns\" list", _FIX)
    system = obj.get("system")
    if system is not None and not isinstance(system, str):
        raise UserError(f"{where}: \"system\" is not a string", _FIX)
    out = []
    for k, t in enumerate(turns):
        user = t.get("user") if isinstance(t, dict) else None
        answer = t.get("assistant") if isinstance(t, dict) else None
        n = t.get("output_len", t.get("max_tokens")) if isinstance(t, dict) else None
        if not isinstance(user, str) or not user or (answer is not None and not isinstance(answer, str)):
            raise UserError(f"{where}: turn {k} needs a non-empty \"user\" string (and \"assistant\" as a string)",
                            _FIX)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise UserError(f"{where}: turn {k} output_len {n!r} is not a positive integer",
                            "give a whole number of tokens >= 1")
        out.append((user, answer, n))
    return system, out


def read_conversations(path: Path) -> list[Raw]:
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise FieldError("workload.dataset_path", str(path), "{workload.dataset_path} {value!r}: no such file",
                             "give the path of a conversation file")
        lines = path.read_bytes().split(b"\n")
        convs = [_jsonl_line(path, n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    else:
        data = read_json_file(path, "ShareGPT JSON")
        if not isinstance(data, list):
            raise UserError(f"{str(path)!r} is not a ShareGPT file: the top level is not a JSON list", _FIX)
        convs = [c for c in map(sharegpt_turns, data) if c is not None]
    if not convs:
        raise UserError(f"{str(path)!r} has no conversation with a user turn and a reply", _FIX)
    return convs


def build(spec: MultiTurnSpec, tok: Tokenizer, num_prompts: int, seed: int, chat: bool) -> PromptList:
    if not chat:
        raise FieldError("target.endpoint", None, "{workload.dataset_name} multi-turn sends chat messages with "
                         "their history", "use {target.endpoint} /v1/chat/completions (or {target.backend} openai-chat)")
    notes: list[str] = []
    raw = take_cycled(shuffled(read_conversations(Path(spec.path)), seed), num_prompts, "conversations", notes)
    if spec.max_turns:
        raw = [(system, turns[:spec.max_turns]) for system, turns in raw]
    answers_needed = [a for _, turns in raw for _, a, n in turns if a is not None and n is None]
    answer_lens = iter(count_batch(tok, answers_needed) if spec.output_len is None else [])
    drafts = []
    for sid, (system, turns) in enumerate(raw):
        made = []
        for user, answer, n in turns:
            if spec.output_len is not None:
                out = spec.output_len
            elif n is not None:
                out = n
            else:
                out = max(1, next(answer_lens)) if answer is not None else DEFAULT_OUTPUT_LEN
            made.append(Turn(content=user, output_len=out, answer=answer))
        drafts.append(Conversation(sid, tuple(made), system))
    # Each turn's prompt with the dataset's answers as history, counted in one batch.
    histories = [c.history(t, [x.answer or "" for x in c.turns]) for c in drafts for t in range(len(c.turns))]
    counts = iter(chat_counts(tok, ChatFormat(tok), histories, notes))
    convs = [Conversation(c.session_id, tuple(Turn(t.content, t.output_len, t.answer, next(counts))
                                              for t in c.turns), c.system) for c in drafts]
    firsts = [Prompt(text=c.turns[0].content, input_len=c.turns[0].input_len, output_len=c.turns[0].output_len,
                     messages=c.history(0, [])) for c in convs]
    return PromptList(firsts, notes, conversations=convs)
