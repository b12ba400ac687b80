"""Tokenizers for the target model: count and build prompts in the server's tokens.

A local folder (or file) holding a Hugging Face ``tokenizer.json`` loads through
the ``tokenizers`` library directly: fast, and no ``transformers`` needed.  Any
other name (a hub id, a folder with only slow-tokenizer files) goes through
``transformers.AutoTokenizer``, its real loading path, when the ``hf`` extra is
installed.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from infermeter.errors import UserError


class Tokenizer(Protocol):
    name: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""

    def decode(self, ids: Sequence[int]) -> str: ...

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str | None:
        """The prompt text the chat template makes of ``messages`` (None: no template)."""


@dataclass
class FastTokenizer:
    """A ``tokenizers.Tokenizer`` plus the chat template from ``tokenizer_config.json``."""

    name: str
    _tok: Any
    chat_template: str | None = None
    special: dict[str, str] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._encode_many(texts)]

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        """Token counts of ``texts`` (as ``encode_batch``, without building the id lists)."""
        return [len(e) for e in self._encode_many(texts)]

    def _encode_many(self, texts: Sequence[str]) -> list[Any]:
        # encode_batch_fast skips the character offsets: same ids, about half the time.
        batch = getattr(self._tok, "encode_batch_fast", None) or self._tok.encode_batch
        return batch(list(texts), add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def decode_batch(self, seqs: Sequence[Sequence[int]]) -> list[str]:
        return list(self._tok.decode_batch([list(s) for s in seqs], skip_special_tokens=True))

    def special_ids(self) -> frozenset[int]:
        """Ids of the added tokens (special or not): never part of random text."""
        return frozenset(int(i) for i in self._tok.get_added_tokens_decoder())

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str | None:
        if not self.chat_template:
            return None
        import jinja2

        try:
            template = _compile_template(self.chat_template)
            return template.render(messages=list(messages), add_generation_prompt=True, **self.special)
        except jinja2.TemplateError as exc:
            raise UserError(f"the chat template of tokenizer {self.name!r} failed: {exc}",
                            "use --endpoint /v1/completions or a tokenizer with a working template") from exc


def _raise_template_error(message: str) -> None:
    raise ValueError(message)


@functools.lru_cache(maxsize=16)
def _compile_template(source: str) -> Any:
    """Compile a chat template once: compiling costs milliseconds, rendering microseconds."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_template_error
    return env.from_string(source)


@dataclass
class HFTokenizer:
    """Any tokenizer ``transformers.AutoTokenizer`` loads."""

    name: str
    _tok: Any

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.encode_batch(texts)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def decode_batch(self, seqs: Sequence[Sequence[int]]) -> list[str]:
        return list(self._tok.batch_decode([list(s) for s in seqs], skip_special_tokens=True))

    def special_ids(self) -> frozenset[int]:
        """Ids of the special and added tokens: never part of random text."""
        ids = set(getattr(self._tok, "all_special_ids", ()) or ())
        added = getattr(self._tok, "get_added_vocab", None)
        if callable(added):
            ids.update(added().values())
        return frozenset(int(i) for i in ids)

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> str | None:
        if not getattr(self._tok, "chat_template", None):
            return None
        return self._tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)


def load_tokenizer(spec: str | Path, *, trust_remote_code: bool = False) -> Tokenizer:
    """Load the tokenizer named by ``spec`` (a folder, a tokenizer.json file, or a hub id)."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".json":
        return _load_fast(path, path.parent)
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return _load_fast(path / "tokenizer.json", path)
    try:
        from transformers import AutoTokenizer  # type: ignore[import-not-found]
    except ImportError:
        if path.exists():
            raise UserError(
                f"no tokenizer.json in {str(spec)!r}",
                "point --tokenizer at a folder with a Hugging Face tokenizer.json, "
                "or pip install 'infermeter[hf]' for other tokenizer formats",
            ) from None
        raise UserError(
            f"tokenizer {str(spec)!r} is not a local folder or file",
            "give a folder with tokenizer.json, or pip install 'infermeter[hf]' to load hub ids",
        ) from None
    try:
        tok = AutoTokenizer.from_pretrained(str(spec), trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises many types (OSError, ValueError, HF errors)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"could not load tokenizer {str(spec)!r}: {first}",
            "check the --tokenizer path or id (hub ids need network access or a local cache)",
        ) from None
    return HFTokenizer(name=str(spec), _tok=tok)


def _load_fast(file: Path, folder: Path) -> FastTokenizer:
    from tokenizers import Tokenizer as _Tok

    try:
        tok = _Tok.from_file(str(file))
    except Exception as exc:
        raise UserError(f"{str(file)!r} is not a valid tokenizer.json: {exc}",
                        "point --tokenizer at a Hugging Face tokenizer folder") from None
    template: str | None = None
    special: dict[str, str] = {}
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        raw = data.get("chat_template")
        if isinstance(raw, list):  # named templates: take "default"
            raw = next((t.get("template") for t in raw if t.get("name") == "default"), None)
        template = raw if isinstance(raw, str) else None
        for key in ("bos_token", "eos_token"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                special[key] = value
    jinja_file = folder / "chat_template.jinja"
    if template is None and jinja_file.is_file():
        template = jinja_file.read_text(encoding="utf-8")
    return FastTokenizer(name=str(folder), _tok=tok, chat_template=template, special=special)
