"""The ``sonnet`` dataset: vLLM's construction from Shakespeare's sonnets.

Each prompt is ``INSTRUCTION + prefix lines + sampled lines``:

* ``INSTRUCTION`` is vLLM's fixed "Pick as many lines as you can from these
  poem lines:\\n".
* The shared prefix is the poem's first lines, in order, as many as vLLM
  takes: ``max(round((prefix_len - base_offset) / avg_line_len), 0)``, where
  ``avg_line_len`` is the mean token count of a verse line and ``base_offset``
  the token count of the instruction alone, measured with the chat template
  applied.  A prefix longer than the poem cycles through it again (vLLM stops
  at the poem's end).  Every prompt starts with the identical prefix text.
* Then verse lines drawn uniformly WITH replacement, whole lines only.  Each
  line is tokenized once; a prompt takes lines while they fit the token budget
  ``input_len - tokens(template + instruction + prefix)`` and stops at the first
  that does not, so a prompt lands at most one line's tokens under
  ``input_len`` and never over it.  (vLLM draws a fixed
  ``round((input_len - base_offset) / avg_line_len)`` lines and redraws a prompt
  that comes out longer than ``input_len``: the same bound on the top, a looser
  one underneath, and slow for long prompts.)  The whole prompt is tokenized
  once at the end for its real ``input_len``; should joining lines tokenize
  longer than their sum, lines are dropped from the end until it fits.
* What is sent mirrors vLLM: for ``/v1/completions`` (``chat=False``) the text
  is the prompt already formatted with the tokenizer's chat template; for
  ``/v1/chat/completions`` (``chat=True``) the raw prompt is the user message
  and the server applies the template.  Either way ``input_len`` is the token
  count of the formatted prompt, so both endpoints see the same tokens.
  Without a chat template (vLLM refuses that for completions) the raw text is
  sent and counted, and the result carries a note.
* Every verse line ends in a newline (the shipped file's last line has none;
  vLLM then glues it to the next sampled line).
"""

from __future__ import annotations

import functools
from importlib.resources import files
from pathlib import Path

import numpy as np

from infermeter.errors import FieldError, UserError
from infermeter.workloads._common import (
    NO_TEMPLATE_NOTE,
    ChatFormat,
    PromptList,
    count_batch,
    rng_for,
    user_turn,
)
from infermeter.core.prompt import Prompt
from infermeter.workloads.specs import SonnetSpec
from infermeter.workloads.tokenizer import Tokenizer

INSTRUCTION = "Pick as many lines as you can from these poem lines:\n"
MAX_TRIMS = 8


@functools.cache
def sonnet_lines() -> tuple[str, ...]:
    text = files("infermeter.workloads").joinpath("data/sonnet.txt").read_text(encoding="utf-8")
    return tuple(line if line.endswith("\n") else line + "\n" for line in text.splitlines(keepends=True))


def file_lines(path: Path) -> tuple[str, ...]:
    """The non-empty lines of a user's ``--dataset-path`` text file, as vLLM's sonnet dataset reads it."""
    if not path.is_file():
        raise FieldError("workload.dataset_path", str(path), "{workload.dataset_path} {value!r}: no such file",
                         "give the path of a text file of lines")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {str(path)!r}: {exc}", "give a readable UTF-8 text file") from None
    lines = tuple(line if line.endswith("\n") else line + "\n" for line in text.splitlines(keepends=True))
    if not any(line.strip() for line in lines):
        raise UserError(f"{str(path)!r} has no lines of text", "give a text file with one passage a line")
    return lines


class Builder:
    """The sonnet prompts of one spec, seed and endpoint, any request numbers at a time
    (prompt ``i`` depends only on ``(seed, i)``)."""

    def __init__(self, spec: SonnetSpec, tok: Tokenizer, num_prompts: int, seed: int, chat: bool) -> None:
        self.spec, self.tok, self.num_prompts, self.seed, self.chat = spec, tok, num_prompts, seed, chat
        notes: list[str] = []
        lines = file_lines(Path(spec.path)) if spec.path is not None else sonnet_lines()
        counts = np.asarray(count_batch(tok, lines), dtype=np.int64)
        avg = float(counts.mean())
        fmt = ChatFormat(tok)
        if not fmt.has_template:
            notes.append(NO_TEMPLATE_NOTE)
            if not chat:
                notes.append("sonnet sends the raw prompt to /v1/completions: the tokenizer has no chat "
                             "template to format it with (vLLM refuses this case)")
        self.fmt = fmt
        base_offset = len(tok.encode(self.formatted(INSTRUCTION)))
        longest = int(counts.max())
        need = base_offset + longest
        if spec.input_len < need:
            raise UserError(
                f"--sonnet-input-len {spec.input_len} is too small: the instruction takes {base_offset} tokens "
                f"(chat template included) and a poem line up to {longest}",
                f"pass --sonnet-input-len {need} or more",
            )

        num_prefix = max(round((spec.prefix_len - base_offset) / avg), 0)
        head_tokens = 0
        for _ in range(MAX_TRIMS + 1):
            head = INSTRUCTION + "".join(lines[i % len(lines)] for i in range(num_prefix))
            head_tokens = len(tok.encode(self.formatted(head)))
            if head_tokens <= spec.input_len or num_prefix == 0:
                break
            # Rounding put the prefix past input_len: drop enough lines, then measure again.
            excess, drop = head_tokens - spec.input_len, 0
            while excess > 0 and drop < num_prefix:
                drop += 1
                excess -= int(counts[(num_prefix - drop) % len(lines)])
            num_prefix -= drop
        if head_tokens > spec.input_len:  # pragma: no cover - needs a pathological tokenizer
            raise FieldError("workload.sonnet_prefix_len", spec.prefix_len, "{workload.sonnet_prefix_len} {value} "
                             "cannot fit {workload.sonnet_input_len} {input_len}",
                             "lower {workload.sonnet_prefix_len}", input_len=spec.input_len)
        self.notes = notes
        self.lines, self.counts, self.avg, self.head = lines, counts, avg, head
        self.budget = spec.input_len - head_tokens

    def formatted(self, raw: str) -> str:
        return (self.fmt.render(user_turn(raw)) or raw) if self.fmt.has_template else raw

    def at(self, indices) -> list[Prompt]:
        spec, tok, lines, head = self.spec, self.tok, self.lines, self.head
        picks = [_pick_lines(rng_for(self.seed, 1, int(i)), self.counts, self.budget, self.avg) for i in indices]
        raws = [head + "".join(lines[j] for j in p) for p in picks]
        sent = [self.formatted(r) for r in raws]
        lengths = count_batch(tok, sent)
        # Joined lines can tokenize a little longer than the sum of their parts: trim those prompts.
        for _ in range(MAX_TRIMS):
            over = [i for i, n in enumerate(lengths) if n > spec.input_len and picks[i]]
            if not over:
                break
            for i in over:
                picks[i] = picks[i][:-1]
                raws[i] = head + "".join(lines[j] for j in picks[i])
                sent[i] = self.formatted(raws[i])
            for i, n in zip(over, count_batch(tok, [sent[i] for i in over])):
                lengths[i] = n
        if self.chat:
            return [Prompt(text=raw, input_len=n, output_len=spec.output_len, messages=user_turn(raw))
                    for raw, n in zip(raws, lengths)]
        return [Prompt(text=text, input_len=n, output_len=spec.output_len) for text, n in zip(sent, lengths)]


def build(spec: SonnetSpec, tok: Tokenizer, num_prompts: int, seed: int, chat: bool) -> PromptList:
    builder = Builder(spec, tok, num_prompts, seed, chat)
    return PromptList(builder.at(range(num_prompts)), builder.notes)


def _pick_lines(rng: np.random.Generator, counts: np.ndarray, budget: int, avg: float) -> list[int]:
    """Line indices drawn with replacement while they fit ``budget`` tokens (first misfit stops)."""
    chosen: list[np.ndarray] = []
    left = budget
    chunk = int(budget / avg * 1.1) + 8
    while True:
        idx = rng.integers(0, len(counts), size=chunk)
        cum = np.cumsum(counts[idx])
        fit = int(np.searchsorted(cum, left, side="right"))
        chosen.append(idx[:fit])
        if fit < chunk:
            return np.concatenate(chosen).tolist()
        left -= int(cum[-1])
        chunk = int(left / avg * 1.1) + 8
