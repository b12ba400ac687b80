"""What a workload hands the load generator: prompts with known token counts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Prompt:
    """One request's content.

    ``text`` is the prompt for ``/v1/completions``; ``messages`` the chat turns
    for ``/v1/chat/completions`` (when ``None``, the chat client sends ``text``
    as one user message).  ``input_len`` counts the tokens the server sees, in
    the target tokenizer, for the endpoint the prompts were built for.
    ``output_len`` is the number of tokens asked for (``None``: the server's
    default).
    """

    text: str
    input_len: int
    output_len: int | None
    messages: tuple[dict[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    """One user turn of a multi-turn conversation.

    ``answer`` is the dataset's reply to it (sent as the history when the run
    uses the dataset's answers, and the fallback when it has none of its own);
    ``input_len`` counts the chat-formatted prompt of this turn with the
    dataset's answers as history (the run recounts it with the server's).
    """

    content: str
    output_len: int | None
    answer: str | None = None
    input_len: int = 0


@dataclass(frozen=True, slots=True)
class Conversation:
    """A session: its turns are sent in order, each after the previous one completed."""

    session_id: int
    turns: tuple[Turn, ...]
    system: str | None = None

    def history(self, upto: int, answers: list[str]) -> tuple[dict[str, str], ...]:
        """The chat messages of turn ``upto``: the system prompt, every earlier turn with its
        answer (``answers[i]`` for turn i), then turn ``upto``'s user message."""
        msgs: list[dict[str, str]] = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        for i in range(upto):
            msgs.append({"role": "user", "content": self.turns[i].content})
            msgs.append({"role": "assistant", "content": answers[i]})
        msgs.append({"role": "user", "content": self.turns[upto].content})
        return tuple(msgs)
