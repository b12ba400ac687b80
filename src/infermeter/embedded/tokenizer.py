"""The tokenizer the generated models share: a byte-level BPE trained here, deterministically.

See ``embedded/models.py`` for how it is made and why its counts match the server's.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


from infermeter.embedded.paths import cache_root, ensure_dir, file_lock, replace_dir
from infermeter.errors import EngineError

Progress = Callable[[str, "int | None", "int | None"], None]


def no_progress(phase: str, done: int | None, total: int | None) -> None:
    """A progress callback that shows nothing."""



TOKENIZER_VERSION = 1
VOCAB_SIZE = 8192
CORPUS_BYTES = 4_000_000
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, "<|system|>", "<|user|>", "<|assistant|>")
# One line, explicit "\n" literals: renders identically in jinja2 (client side, with
# trim_blocks/lstrip_blocks) and in llama.cpp's template engine (server side).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|eos|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_files(limit: int = CORPUS_BYTES) -> list[Path]:
    """The training files: top-level stdlib ``*.py``, sorted, whole files up to ``limit`` bytes."""
    files: list[Path] = []
    total = 0
    for path in sorted(_stdlib_dir().glob("*.py")):
        if total >= limit:
            break
        try:
            size = path.stat().st_size
        except OSError:
            continue
        files.append(path)
        total += size
    return files


def _read_corpus(limit: int) -> tuple[list[str], str]:
    texts: list[str] = []
    digest = hashlib.sha256()
    for path in corpus_files(limit):
        data = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + data + b"\0")
        texts.append(data.decode("utf-8", errors="replace"))
    if sum(len(t) for t in texts) < min(limit, 200_000):
        raise EngineError(
            f"too little Python stdlib source under {str(_stdlib_dir())!r} to train the tokenizer",
            "use a Python installation that ships its standard library as .py files",
        )
    return texts, digest.hexdigest()


def train_tokenizer(out_dir: Path, *, corpus_bytes: int = CORPUS_BYTES,
                    vocab_size: int = VOCAB_SIZE) -> dict[str, Any]:
    """Train the byte-level BPE and save the Hugging Face files into ``out_dir``.

    Returns metadata (corpus hash and files, seconds).  Deterministic: the same corpus
    gives a byte-identical ``tokenizer.json``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts, corpus_sha = _read_corpus(corpus_bytes)
    start = time.perf_counter()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    seconds = time.perf_counter() - start
    ensure_dir(out_dir)
    (out_dir / "tokenizer.json").write_text(tok.to_str(pretty=True), encoding="utf-8")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000,
        "chat_template": CHAT_TEMPLATE,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    special_map = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN,
                   "additional_special_tokens": list(SPECIAL_TOKENS[2:])}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n",
                                                     encoding="utf-8")
    return {
        "corpus_sha256": corpus_sha,
        "corpus_files": [p.name for p in corpus_files(corpus_bytes)],
        "corpus_chars": sum(len(t) for t in texts),
        "train_seconds": round(seconds, 3),
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
    }


def _tokenizer_key(corpus_sha: str) -> str:
    recipe = {
        "version": TOKENIZER_VERSION,
        "vocab_size": VOCAB_SIZE,
        "corpus_bytes": CORPUS_BYTES,
        "special": list(SPECIAL_TOKENS),
        "template": CHAT_TEMPLATE,
        "corpus_sha256": corpus_sha,
    }
    return short_hash(recipe)


def ensure_tokenizer(progress: Progress | None = None) -> tuple[Path, str]:
    """The shared trained tokenizer folder and its key (trained once, then cached)."""
    progress = progress or no_progress
    _texts, corpus_sha = _read_corpus(CORPUS_BYTES)
    key = _tokenizer_key(corpus_sha)
    root = ensure_dir(cache_root() / "tokenizers")
    final = root / f"bpe{VOCAB_SIZE}-{key}"
    if _tokenizer_complete(final):
        return final, key
    with file_lock(root / f".bpe{VOCAB_SIZE}-{key}.lock"):
        if _tokenizer_complete(final):
            return final, key
        progress("tokenizer", None, None)
        tmp = root / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            meta = train_tokenizer(tmp)
            if meta["corpus_sha256"] != corpus_sha:  # the stdlib changed under us
                raise EngineError("the Python stdlib changed while training the tokenizer",
                                  "run the command again")
            meta.update(key=key, tokenizers_version=package_version("tokenizers"))
            (tmp / "tokenizer_meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            replace_dir(tmp, final)
        except OSError as exc:
            raise EngineError(f"cannot write the tokenizer to {str(root)!r}: {exc}",
                              "free disk space or set INFERMETER_CACHE to a writable folder") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final, key


def _tokenizer_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (*TOKENIZER_FILES, "tokenizer_meta.json"))


def short_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"
