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
