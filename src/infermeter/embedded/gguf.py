"""Writing a random-weight llama-architecture GGUF for a ``GeneratedModelSpec``.

Weights are random but deterministic for the spec's seed; ``q4_0`` blocks are written
directly (never quantizing floats).  See ``embedded/models.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infermeter.errors import EngineError

from infermeter.embedded.tokenizer import BOS_TOKEN, CHAT_TEMPLATE, EOS_TOKEN, Progress, no_progress

ARCHITECTURE = "llama"  # general.architecture of every generated model


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

    progress = progress or no_progress
    tokens, types, merges, bos, eos = _load_hf_tokenizer(tokenizer_dir)
    plan = _tensor_plan(spec, len(tokens))
    head_dim = spec.n_embd // spec.n_head

    writer = gguf.GGUFWriter(path, ARCHITECTURE)
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
